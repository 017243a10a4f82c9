package h2

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/proxy/h1"
)

// upgradeBackend is an HTTP/1.1 app that takes "Upgrade: websocket" on
// /ws (101), then echoes raw bytes until EOF and closes; other paths are
// answered 404. It reports each upgrade request's head on heads.
func upgradeBackend(t *testing.T, heads chan<- *http.Request) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				heads <- req
				if req.URL.Path != "/ws" {
					io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\nX-App: yes\r\n\r\n")
				io.Copy(c, br) // echo until the caller's half-close
			}()
		}
	}()
	return ln.Addr().String()
}

// rawH2 is an h2c connection on a bare framer.
type rawH2 struct {
	t  *testing.T
	fr *http2.Framer
	hb bytes.Buffer
	he *hpack.Encoder
}

func dialRawH2(t *testing.T, addr string) *rawH2 {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	h := &rawH2{t: t, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.he = hpack.NewEncoder(&h.hb)
	h.fr.WriteSettings()
	return h
}

func (h *rawH2) headers(id uint32, end bool, fields ...string) {
	h.hb.Reset()
	for i := 0; i < len(fields); i += 2 {
		h.he.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hb.Bytes(), EndHeaders: true, EndStream: end})
}

// until reads frames until one on id satisfies done.
func (h *rawH2) until(id uint32, done func(http2.Frame) bool) {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("reading: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			h.fr.WriteSettingsAck()
		}
		if f.Header().StreamID == id && done(f) {
			return
		}
	}
}

// TestExtendedConnectToHTTP1: an extended CONNECT reaches an HTTP/1.1 app
// as a GET with Upgrade and a Sec-WebSocket-Key; the app's 101 is the
// caller's 200 (no Sec-WebSocket-Accept), bytes go both ways and each
// end of stream is a half-close; an app that does not switch is
// relayed as it answered; an extended CONNECT without :path is refused.
func TestExtendedConnectToHTTP1(t *testing.T) {
	heads := make(chan *http.Request, 4)
	cl := h1.NewClient(h1.Limits{}, nil)
	t.Cleanup(cl.Close)
	s := &Server{Router: &h1Router{testRouter: testRouter{addr: upgradeBackend(t, heads)}, cl: cl}}
	h := dialRawH2(t, listen(t, s))

	connect := func(id uint32, path string) {
		h.headers(id, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", path,
			":authority", "svc", "sec-websocket-version", "13")
	}
	connect(1, "/ws")
	var status string
	var fields []hpack.HeaderField
	h.until(1, func(f http2.Frame) bool {
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			status, fields = mh.PseudoValue("status"), mh.RegularFields()
			return true
		}
		return false
	})
	req := <-heads
	if status != "200" || get(fields, "x-app") != "yes" || get(fields, "sec-websocket-accept") != "" {
		t.Fatalf("answer %s %v, want 200 with x-app and no sec-websocket-accept", status, fields)
	}
	if req.Method != "GET" || req.Header.Get("Upgrade") != "websocket" || req.Header.Get("Connection") != "Upgrade" ||
		len(req.Header.Get("Sec-WebSocket-Key")) != 24 || req.Header.Get("Sec-WebSocket-Version") != "13" || req.Host != "svc" {
		t.Fatalf("the app got %s %s Host %q %v", req.Method, req.URL, req.Host, req.Header)
	}
	h.fr.WriteData(1, false, []byte("ping"))
	h.fr.WriteData(1, true, []byte("pong")) // END_STREAM: the app reads EOF
	var got bytes.Buffer
	h.until(1, func(f http2.Frame) bool {
		if df, ok := f.(*http2.DataFrame); ok {
			got.Write(df.Data())
			return df.StreamEnded()
		}
		if _, ok := f.(*http2.RSTStreamFrame); ok {
			t.Fatalf("stream reset after %q", got.String())
		}
		return false
	})
	if got.String() != "pingpong" {
		t.Fatalf("echo %q, want pingpong then END_STREAM", got.String())
	}

	connect(3, "/other")
	h.until(3, func(f http2.Frame) bool {
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			status = mh.PseudoValue("status")
			return true
		}
		return false
	})
	<-heads
	if status != "404" {
		t.Errorf("an app that does not switch: %s, want its 404", status)
	}

	h.headers(5, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":authority", "svc")
	var code http2.ErrCode
	h.until(5, func(f http2.Frame) bool {
		if rf, ok := f.(*http2.RSTStreamFrame); ok {
			code = rf.ErrCode
			return true
		}
		return false
	})
	if code != http2.ErrCodeProtocol {
		t.Errorf("extended CONNECT without :path: reset %v, want PROTOCOL_ERROR", code)
	}
}
