package h2

import (
	"bytes"
	"errors"
	"net"
	"reflect"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// metaHeaders decodes fields as the read loop would: encoded, framed as
// one HEADERS frame, read back by a Framer with ReadMetaHeaders.
func metaHeaders(t testing.TB, end bool, fields ...hpack.HeaderField) (*http2.MetaHeadersFrame, error) {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		enc.WriteField(f)
	}
	return readHeaders(block.Bytes(), end)
}

func readHeaders(block []byte, end bool) (*http2.MetaHeadersFrame, error) {
	var wire bytes.Buffer
	http2.NewFramer(&wire, nil).WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true, EndStream: end})
	c := newConn(nopConn{}, &Limits{MaxHeaderListSize: 16 << 10}, true)
	c.fr = http2.NewFramer(nil, &wire)
	c.fr.MaxHeaderListSize = 16 << 10
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.ReadMetaHeaders.SetMaxStringLength(16 << 10)
	f, err := c.fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	mh, ok := f.(*http2.MetaHeadersFrame)
	if !ok {
		return nil, errors.New("not a header frame")
	}
	return mh, nil
}

type nopConn struct{ net.Conn }

func (nopConn) Write(p []byte) (int, error) { return len(p), nil }

// TestRequestOf: RFC 9113 §8.3's request rules, as h2spec checks them.
func TestRequestOf(t *testing.T) {
	base := []hpack.HeaderField{hf(":method", "POST"), hf(":scheme", "http"), hf(":authority", "orders"), hf(":path", "/a?b")}
	with := func(extra ...hpack.HeaderField) []hpack.HeaderField {
		return append(append([]hpack.HeaderField(nil), base...), extra...)
	}
	tests := []struct {
		name   string
		fields []hpack.HeaderField
		end    bool
		ok     bool
		cl     int64
	}{
		{"minimal", base, false, true, -1},
		{"content-length", with(hf("content-length", "12")), false, true, 12},
		{"te: trailers", with(hf("te", "trailers")), false, true, -1},
		{"te: gzip", with(hf("te", "gzip")), false, false, 0},
		{"connection", with(hf("connection", "keep-alive")), false, false, 0},
		{"transfer-encoding", with(hf("transfer-encoding", "chunked")), false, false, 0},
		{"upgrade", with(hf("upgrade", "websocket")), false, false, 0},
		{"bad content-length", with(hf("content-length", "x")), false, false, 0},
		{"two content-lengths", with(hf("content-length", "1"), hf("content-length", "2")), false, false, 0},
		{"content-length with END_STREAM", with(hf("content-length", "3")), true, false, 0},
		{"no :path", base[:3], false, false, 0},
		{"no :method", base[1:], false, false, 0},
		{"CONNECT", []hpack.HeaderField{hf(":method", "CONNECT"), hf(":authority", "a:1")}, false, true, -1},
		{"CONNECT with :path", []hpack.HeaderField{hf(":method", "CONNECT"), hf(":authority", "a:1"), hf(":path", "/")}, false, false, 0},
		{":status in a request", with(hf(":status", "200")), false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mh, err := metaHeaders(t, tt.end, tt.fields...)
			var r *Request
			if err == nil {
				r, err = requestOf(mh)
			}
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok %v", err, tt.ok)
			}
			if tt.ok && r.ContentLength != tt.cl {
				t.Fatalf("content-length %d, want %d", r.ContentLength, tt.cl)
			}
		})
	}
}

// TestFieldConversion: what goes upstream and back to the caller.
func TestFieldConversion(t *testing.T) {
	req := &Request{Method: "POST", Authority: "orders", Path: "/x", Fields: []hpack.HeaderField{
		hf("content-type", "application/grpc"), hf("host", "orders"), hf("x-weft-source", "spoofed"), hf("x-drop", "1"), hf("te", "trailers")}}
	tests := []struct {
		name string
		d    Decision
		want []hpack.HeaderField
	}{
		{"as is", Decision{}, []hpack.HeaderField{hf(":method", "POST"), hf(":scheme", "http"), hf(":authority", "orders"), hf(":path", "/x"),
			hf("content-type", "application/grpc"), hf("x-weft-source", "spoofed"), hf("x-drop", "1"), hf("te", "trailers")}},
		{"set replaces, del drops, names lower-cased", Decision{Set: []hpack.HeaderField{hf("X-Weft-Source", "client")}, Del: []string{"X-Drop"}},
			[]hpack.HeaderField{hf(":method", "POST"), hf(":scheme", "http"), hf(":authority", "orders"), hf(":path", "/x"),
				hf("content-type", "application/grpc"), hf("te", "trailers"), hf("x-weft-source", "client")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := requestFields(req, &tt.d); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
	mh, err := metaHeaders(t, true, hf(":status", "200"), hf("grpc-status", "0"), hf("x-weft-grpc-status", "0"), hf("x-weft-load", "old"))
	if err != nil {
		t.Fatal(err)
	}
	d := &Decision{RespDel: []string{"X-Weft-Grpc-Status"}, RespSet: []hpack.HeaderField{hf("x-weft-load", "new")}}
	want := []hpack.HeaderField{hf(":status", "200"), hf("grpc-status", "0"), hf("x-weft-load", "new")}
	if got := responseFields(mh, d); !reflect.DeepEqual(got, want) {
		t.Fatalf("response: got %v, want %v", got, want)
	}
}

// TestFlowAccounting: receive windows are charged per DATA frame,
// overruns are FLOW_CONTROL_ERROR, and credit goes back in batches of
// half a window as the reader consumes.
func TestFlowAccounting(t *testing.T) {
	lim := (&Limits{StreamWindow: 1000, ConnWindow: 4000}).withDefaults()
	var wire bytes.Buffer
	c := newConn(nopConn{}, &lim, true)
	c.fr = http2.NewFramer(&wire, nil)
	c.recvWin = lim.ConnWindow
	st := c.newStream(1)
	data := func(n int) *http2.DataFrame {
		var b bytes.Buffer
		http2.NewFramer(&b, nil).WriteData(1, false, make([]byte, n))
		f, err := http2.NewFramer(nil, &b).ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		return f.(*http2.DataFrame)
	}
	steps := []struct {
		name            string
		recv, consume   int
		err             bool
		streamWin, conn int32
		updates         int // WINDOW_UPDATE frames written so far
	}{
		{"receive 400", 400, 0, false, 600, 3600, 0},
		{"consume 400: below half the stream window", 0, 400, false, 600, 3600, 0},
		{"consume 100 more: the stream's half is owed", 0, 100, false, 1100, 3600, 1},
		{"receive 1100: the window", 1100, 0, false, 0, 2500, 1},
		{"consume 1100: the stream's half again, the connection's not yet", 0, 1100, false, 1100, 2500, 2},
		{"receive 1000, consume it: the connection's half is owed", 1000, 1000, false, 1100, 4100, 4},
		{"receive past the stream window", 1101, 0, true, 1100, 4100, 4},
	}
	for _, s := range steps {
		if s.recv > 0 {
			err := c.onData(st, data(s.recv))
			if (err != nil) != s.err {
				t.Fatalf("%s: err %v", s.name, err)
			}
			var ce http2.ConnectionError
			if err != nil && (!errors.As(err, &ce) || http2.ErrCode(ce) != http2.ErrCodeFlowControl) {
				t.Fatalf("%s: err %v, want FLOW_CONTROL_ERROR", s.name, err)
			}
		}
		c.consumed(st, s.consume)
		if st.recvWin != s.streamWin || c.recvWin != s.conn {
			t.Fatalf("%s: windows stream %d conn %d, want %d %d", s.name, st.recvWin, c.recvWin, s.streamWin, s.conn)
		}
		if n := bytes.Count(wire.Bytes(), []byte{0, 0, 4, byte(http2.FrameWindowUpdate)}); n != s.updates {
			t.Fatalf("%s: %d WINDOW_UPDATE frames, want %d", s.name, n, s.updates)
		}
	}
	// Send side: a WINDOW_UPDATE past 2^31-1 is an error of its scope.
	c.streams[1] = st
	if err := c.onWindowUpdate(&http2.WindowUpdateFrame{FrameHeader: http2.FrameHeader{StreamID: 1}, Increment: 1<<31 - 1}); err == nil {
		t.Fatal("stream window overflow accepted")
	}
	if err := c.onWindowUpdate(&http2.WindowUpdateFrame{Increment: 1<<31 - 1}); err == nil {
		t.Fatal("connection window overflow accepted")
	}
}
