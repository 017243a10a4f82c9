package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2ws is a WebSocket over HTTP/2 (RFC 8441) client on a raw framer: one
// extended CONNECT stream (id 1) on an h2c connection.
type h2ws struct {
	t        *testing.T
	c        net.Conn
	fr       *http2.Framer
	enabled  bool // the server advertised SETTINGS_ENABLE_CONNECT_PROTOCOL
	status   string
	in       bytes.Buffer // DATA received on the stream
	ended    bool         // END_STREAM received
	resetErr error
}

func dialH2WS(t *testing.T, addr, authority, path string) *h2ws {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	w := &h2ws{t: t, c: c, fr: http2.NewFramer(c, c)}
	w.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	io.WriteString(c, http2.ClientPreface)
	w.fr.WriteSettings()
	// The server's SETTINGS come first: the client may use the protocol
	// only once it has seen them.
	for !w.enabled {
		f, err := w.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		w.fr.WriteSettingsAck()
		v, ok := sf.Value(http2.SettingEnableConnectProtocol)
		if !ok || v != 1 {
			t.Fatalf("the server's SETTINGS have no ENABLE_CONNECT_PROTOCOL=1 (RFC 8441)")
		}
		w.enabled = true
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "http"}, {":path", path},
		{":authority", authority}, {"sec-websocket-version", "13"}, {"origin", "http://" + authority + "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	for w.status == "" {
		w.read()
	}
	return w
}

// read handles one frame from the server.
func (w *h2ws) read() {
	w.t.Helper()
	f, err := w.fr.ReadFrame()
	if err != nil {
		w.t.Fatalf("reading: %v (status %q, %d bytes in)", err, w.status, w.in.Len())
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			w.fr.WriteSettingsAck()
		}
	case *http2.MetaHeadersFrame:
		if f.StreamID == 1 && w.status == "" {
			w.status = f.PseudoValue("status")
		}
		w.ended = w.ended || f.StreamEnded()
	case *http2.DataFrame:
		if f.StreamID != 1 {
			return
		}
		w.in.Write(f.Data())
		if n := uint32(len(f.Data())); n > 0 { // credit it back at once
			w.fr.WriteWindowUpdate(0, n)
			w.fr.WriteWindowUpdate(1, n)
		}
		w.ended = w.ended || f.StreamEnded()
	case *http2.RSTStreamFrame:
		if f.StreamID == 1 {
			w.resetErr = fmt.Errorf("stream reset: %v", f.ErrCode)
			w.ended = true
		}
	case *http2.GoAwayFrame:
		w.resetErr = fmt.Errorf("GOAWAY %v", f.ErrCode)
		w.ended = true
	}
}

// send sends one masked client WebSocket frame (opcode 1 text, 2 binary).
func (w *h2ws) send(op byte, payload []byte) {
	w.t.Helper()
	frame := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n < 1<<16:
		frame = append(frame, 0x80|126, byte(n>>8), byte(n))
	default:
		frame = append(frame, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	for len(frame) > 0 { // within the server's windows (256 KiB stream, 1 MiB connection)
		k := min(len(frame), 16<<10)
		if err := w.fr.WriteData(1, false, frame[:k]); err != nil {
			w.t.Fatal(err)
		}
		frame = frame[k:]
	}
}

// receive reads one unmasked server frame.
func (w *h2ws) receive() (op byte, payload []byte) {
	w.t.Helper()
	for {
		b := w.in.Bytes()
		if len(b) >= 2 {
			n, hdr := int(b[1]&0x7f), 2
			switch n {
			case 126:
				if len(b) >= 4 {
					n, hdr = int(b[2])<<8|int(b[3]), 4
				} else {
					n = -1
				}
			case 127:
				if len(b) >= 10 {
					n, hdr = int(b[6])<<24|int(b[7])<<16|int(b[8])<<8|int(b[9]), 10
				} else {
					n = -1
				}
			}
			if n >= 0 && len(b) >= hdr+n {
				op, payload = b[0]&0x0f, bytes.Clone(b[hdr:hdr+n])
				w.in.Next(hdr + n)
				return op, payload
			}
		}
		if w.ended {
			w.t.Fatalf("the stream ended (%v) within a frame: %d bytes buffered", w.resetErr, w.in.Len())
		}
		w.read()
	}
}

// TestWebSocketOverH2: a WebSocket over HTTP/2 (RFC 8441 extended CONNECT)
// from an h2c caller goes through the client sidecar and the server
// sidecar on the native h2 engine (h2 over mTLS between them, as an
// extended CONNECT again) and reaches the HTTP/1.1 app as an ordinary
// Upgrade: websocket request; messages are echoed both ways, one larger
// than the flow-control windows; the caller's end of stream ends the
// app's side (a half-close) and the app's close ends the stream.
func TestWebSocketOverH2(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	webPort := freePort(t)
	StartApp(t, "web-ws2", webPort)
	web := StartSidecar(t, cp, SidecarOpts{Service: "web", AppPort: webPort})
	web.WaitRegistered(cp, eventually)
	client := StartClient(t, cp, nil)

	w := dialH2WS(t, client.OutboundAddr(), "web", "/ws")
	if w.status != "200" {
		t.Fatalf("extended CONNECT answered %q, want 200", w.status)
	}
	for i := range 3 {
		msg := fmt.Sprintf("hello %d", i)
		w.send(1, []byte(msg))
		if op, got := w.receive(); op != 1 || string(got) != msg {
			t.Fatalf("echo %d: opcode %d %q, want text %q", i, op, got, msg)
		}
	}
	big := randBytes(t, 200<<10) // more than the caller's 64 KiB window
	w.send(2, big)
	if op, got := w.receive(); op != 2 || !bytes.Equal(got, big) {
		t.Fatalf("binary echo: opcode %d, %d bytes (equal %v)", op, len(got), bytes.Equal(got, big))
	}
	// End of stream: the app reads EOF, ends its echo and closes; the
	// stream ends cleanly back to the caller.
	w.fr.WriteData(1, true, nil)
	for !w.ended {
		w.read()
	}
	if w.resetErr != nil {
		t.Fatalf("after the caller's end of stream: %v, want END_STREAM", w.resetErr)
	}
	if n := metricSum(t, web, "weft_requests_total", `reporter="server"`, `destination_service="web"`); n < 1 {
		t.Errorf("server sidecar counted no request for the WebSocket (%v)", n)
	}
}
