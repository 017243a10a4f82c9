package h1

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hideFD wraps accepted connections so they do not offer SyscallConn, as a
// TLS connection does not: the engine then keeps the buffer while idle.
type hideFD struct{ net.Listener }

func (l hideFD) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}

// waitIdle waits until the engine's only connection waits for a request
// and reports whether it holds a read buffer meanwhile.
func waitIdle(t *testing.T, s *Server) (holdsBuffer bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for c := range s.conns {
			// The buffer is dropped before the state says idle, and not
			// touched again until bytes arrive: reading it here is not a race.
			if c.state.Load() == stateIdle {
				holds := c.inBlk != nil || c.in.buf != nil
				s.mu.Unlock()
				return holds
			}
		}
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the connection never went idle")
	return false
}

// TestIdleReleasesBuffer: a kept-alive connection waiting for its next
// request holds no read buffer (when it has an fd), and after each such
// wait it still serves a pipelined pair with a large body, a request that
// arrives in pieces, and a head larger than the pooled buffer.
func TestIdleReleasesBuffer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hideFD  bool
		release bool
	}{
		{"tcp", false, rawIdle},
		{"no fd", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, http.HandlerFunc(echoHandler))
			s := &Server{Router: &recRouter{addr: be.addr()}}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var l net.Listener = ln
			if tc.hideFD {
				l = hideFD{ln}
			}
			go s.Serve(l)
			t.Cleanup(func() { s.Shutdown(context.Background()) })
			c := dial(t, ln.Addr().String())

			check := func(what string) {
				t.Helper()
				if holds := waitIdle(t, s); holds == tc.release {
					t.Fatalf("%s: idle connection holds a read buffer: %v, want %v", what, holds, !tc.release)
				}
			}
			check("before the first request")

			c.send("GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != "/first" {
				t.Fatalf("first: %d %s", resp.StatusCode, body)
			}
			check("after a request")

			// A body four times the pooled buffer, and a second request
			// pipelined behind it in the same write.
			big := strings.Repeat("0123456789abcdef", 4*bufSize/16)
			c.send("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big +
				"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, body := c.read("POST"); resp.StatusCode != 200 || decodeEcho(t, body).Body != big {
				t.Fatalf("big: %d, body of %d bytes", resp.StatusCode, len(decodeEcho(t, body).Body))
			}
			if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != "/after" {
				t.Fatalf("pipelined: %d %s", resp.StatusCode, body)
			}
			check("after a pipelined pair")

			// In pieces, the first a single byte.
			for _, p := range []string{"G", "ET /pie", "ces HTTP/1.1\r\nHo", "st: a\r\nX-A: 1\r", "\n\r\n"} {
				c.send(p)
				time.Sleep(10 * time.Millisecond)
			}
			resp, body := c.read("GET")
			if e := decodeEcho(t, body); resp.StatusCode != 200 || e.URI != "/pieces" || e.Header.Get("X-A") != "1" {
				t.Fatalf("pieces: %d %s", resp.StatusCode, body)
			}
			check("after a request in pieces")

			// A head over the pooled buffer's size: the buffer grows.
			long := strings.Repeat("v", bufSize+100)
			c.send("GET /long HTTP/1.1\r\nHost: a\r\nX-Long: " + long + "\r\n\r\n")
			resp, body = c.read("GET")
			if e := decodeEcho(t, body); resp.StatusCode != 200 || e.Header.Get("X-Long") != long {
				t.Fatalf("long head: %d, %d bytes", resp.StatusCode, len(body))
			}
			check("after a grown head")

			c.send("GET /last HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != "/last" {
				t.Fatalf("last: %d %s", resp.StatusCode, body)
			}
		})
	}
}
