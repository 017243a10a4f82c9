package h1

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
)

// handoffRouter hands off requests for Host "self".
type handoffRouter struct{ recRouter }

func (r *handoffRouter) HandOff(req *Request) bool { return string(req.Host) == "self" }

// TestHandoffer: a Router with HandOff gets requests it names served by the
// Fallback, body included, after earlier requests on the connection were
// forwarded; the rest of the connection is the Fallback's.
func TestHandoffer(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl := NewHandoffListener(ln.Addr())
	fb := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64)
		n, _ := r.Body.Read(buf)
		fmt.Fprintf(w, "fallback %s %s %q", r.Host, r.URL.Path, buf[:n])
	})}
	fbDone := make(chan struct{})
	go func() { defer close(fbDone); fb.Serve(hl) }()
	defer func() { fb.Close(); <-fbDone }()
	s := &Server{Router: &handoffRouter{recRouter{addr: be.addr()}}, Fallback: func(c net.Conn) {
		if err := hl.Handoff(c); err != nil {
			c.Close()
		}
	}}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())

	c := dial(t, ln.Addr().String())
	c.send("GET /first HTTP/1.1\r\nHost: other\r\n\r\n")
	if _, body := c.read("GET"); decodeEcho(t, body).URI != "/first" {
		t.Fatalf("forwarded request: %s", body)
	}
	c.send("POST /v1/publish/t HTTP/1.1\r\nHost: self\r\nContent-Length: 5\r\n\r\nhello")
	if _, body := c.read("POST"); body != `fallback self /v1/publish/t "hello"` {
		t.Fatalf("handed-off request: %s", body)
	}
	c.send("GET /after HTTP/1.1\r\nHost: other\r\n\r\n")
	if _, body := c.read("GET"); body != `fallback other /after ""` {
		t.Fatalf("the connection's next request: %s", body)
	}
}
