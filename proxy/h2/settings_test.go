package h2

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestSettingsAckBeforeData: a SETTINGS_INITIAL_WINDOW_SIZE that opens
// window for a writer already waiting is acknowledged on the wire before
// the DATA it allows (a peer may wait for the ACK, then for the DATA, as
// h2spec 6.9.2/1 does). The writer wakes on the new window, so without
// wmu held through the ACK it could write first; a hundred rounds
// make that race show.
func TestSettingsAckBeforeData(t *testing.T) {
	lim := (&Limits{}).withDefaults()
	for round := range 100 {
		var wire bytes.Buffer
		c := newConn(closableConn{}, &lim, true)
		c.fr = http2.NewFramer(&wire, nil)
		c.peerInitWin = 0
		st := c.newStream(1)
		c.streams[1] = st
		wrote := make(chan error, 1)
		go func() { wrote <- c.writeData(st, []byte("answer"), true) }()
		time.Sleep(100 * time.Microsecond) // let it wait in reserve (or not: either order must hold)
		var b bytes.Buffer
		http2.NewFramer(&b, nil).WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		f, err := http2.NewFramer(nil, &b).ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.onSettings(f.(*http2.SettingsFrame)); err != nil {
			t.Fatal(err)
		}
		// One byte of window: the writer sends one DATA frame of 1 byte,
		// then waits for more; reading the wire under wmu is safe.
		deadline := time.Now().Add(10 * time.Second)
		var frames []http2.Frame
		for {
			c.wmu.Lock()
			raw := append([]byte(nil), wire.Bytes()...)
			c.wmu.Unlock()
			frames = frames[:0]
			fr := http2.NewFramer(nil, bytes.NewReader(raw))
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					break
				}
				frames = append(frames, f)
			}
			if len(frames) >= 2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if len(frames) != 2 {
			t.Fatalf("round %d: %d frames on the wire, want SETTINGS ACK then DATA", round, len(frames))
		}
		if sf, ok := frames[0].(*http2.SettingsFrame); !ok || !sf.IsAck() {
			t.Fatalf("round %d: first frame %v, want the SETTINGS ACK", round, frames[0].Header())
		}
		if df, ok := frames[1].(*http2.DataFrame); !ok || len(df.Data()) != 1 {
			t.Fatalf("round %d: second frame %v, want DATA of 1 byte", round, frames[1].Header())
		}
		c.close(errors.New("test done"))
		<-wrote
	}
}

type closableConn struct{ nopConn }

func (closableConn) Close() error { return nil }
