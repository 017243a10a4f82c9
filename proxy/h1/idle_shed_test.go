package h1

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestIdleShedsBufferWithoutFD: a connection without an fd (TLS, a
// wrapper hiding SyscallConn) gives its read buffer back once idle for
// parkAfter (TestIdleReleasesBuffer sees it kept before that), and after that still serves a
// request arriving in pieces, a pipelined pair and a head larger than the
// pooled buffer; its idle timeout still counts from its last response.
func TestIdleShedsBufferWithoutFD(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cert := ts.TLS.Certificates
	ts.Close()
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"no fd", false}, {"tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, http.HandlerFunc(echoHandler))
			const idle = 3*parkAfter + 500*time.Millisecond
			s := &Server{Router: &recRouter{addr: be.addr()}, Limits: Limits{IdleTimeout: idle}}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var l net.Listener = hideFD{ln}
			if tc.tls {
				l = tls.NewListener(ln, &tls.Config{Certificates: cert})
			}
			go s.Serve(l)
			t.Cleanup(func() { s.Shutdown(context.Background()) })
			c := dial(t, ln.Addr().String())
			if tc.tls {
				tc := tls.Client(c.c, &tls.Config{InsecureSkipVerify: true})
				c.c = tc
				c.br.Reset(tc)
			}
			get := func(path string) {
				t.Helper()
				c.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n")
				if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != path {
					t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
				}
			}
			// holds reports whether the only connection holds a read buffer.
			holds := func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				for c := range s.conns {
					return c.inBlk != nil || c.in.buf != nil
				}
				t.Fatal("no connection")
				return false
			}
			shed := func(what string) {
				t.Helper()
				deadline := time.Now().Add(parkAfter + 5*time.Second)
				for holds() {
					if time.Now().After(deadline) {
						t.Fatalf("%s: still holds its buffer after %v idle", what, parkAfter+5*time.Second)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}

			get("/first")
			shed("after a request")
			for _, p := range []string{"G", "ET /pie", "ces HTTP/1.1\r\nHo", "st: a\r\n", "\r\n"} {
				c.send(p)
				time.Sleep(10 * time.Millisecond)
			}
			if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != "/pieces" {
				t.Fatalf("pieces: %d %s", resp.StatusCode, body)
			}
			shed("after a request in pieces")
			c.send("GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n")
			for _, p := range []string{"/p1", "/p2"} {
				if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != p {
					t.Fatalf("pipelined %s: %d %s", p, resp.StatusCode, body)
				}
			}
			shed("after a pipelined pair")
			long := strings.Repeat("v", bufSize+100)
			c.send("GET /long HTTP/1.1\r\nHost: a\r\nX-Long: " + long + "\r\n\r\n")
			if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).Header.Get("X-Long") != long {
				t.Fatalf("long head: %d, %d bytes", resp.StatusCode, len(body))
			}
			get("/last")
			sent := time.Now()
			c.c.SetDeadline(time.Time{})
			closedAtIdleTimeout(t, c, sent, idle)
		})
	}
}
