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

// TestIdleParkedConnection: a connection idle longer than parkAfter moves
// to a fresh goroutine and serves its next requests there; its idle
// timeout still counts from the end of the last response, and Shutdown
// still closes it.
func TestIdleParkedConnection(t *testing.T) {
	if !rawIdle {
		t.Skip("connections are not parked on this platform")
	}
	be := newBackend(t, http.HandlerFunc(echoHandler))
	const idle = 2*parkAfter + 500*time.Millisecond
	s := &Server{Router: &recRouter{addr: be.addr()}, Limits: Limits{IdleTimeout: idle}}
	addr := newEngine(t, s)
	c := dial(t, addr)
	get := func(path string) {
		t.Helper()
		c.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != path {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	get("/one")
	deadline := time.Now().Add(10 * time.Second)
	for s.parks.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection was never parked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	get("/two")
	get("/three")
	sent := time.Now()
	// Parked again after /three, then closed at the idle timeout, not
	// parkAfter later than that nor earlier.
	closedAtIdleTimeout(t, c, sent, idle)
	if s.parks.Load() < 2 {
		t.Fatalf("parked %d times, want 2", s.parks.Load())
	}

	// Shutdown closes a parked connection.
	c2 := dial(t, addr)
	c, c2 = c2, c
	get("/four")
	for s.parks.Load() < 3 {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("the second connection was never parked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if !c.closed() {
		t.Fatal("the parked connection is still open after Shutdown")
	}
}

// closedAtIdleTimeout waits for the engine to close c, idle since sent,
// and fails if that came before the idle timeout.
func closedAtIdleTimeout(t *testing.T, c *client, sent time.Time, idle time.Duration) {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(idle + 10*time.Second))
	var one [1]byte
	if n, err := c.c.Read(one[:]); n != 0 || err == nil {
		t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
	}
	if waited := time.Since(sent); waited < idle-100*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout %v", waited, idle)
	}
}
