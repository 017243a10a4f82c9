package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// parkedCount is how many connections s has parked without a goroutine.
func parkedCount(s *Server) int {
	s.park.mu.Lock()
	defer s.park.mu.Unlock()
	return s.park.n
}

// waitLong polls cond for up to 10 s (lifecycle_test.go's waitFor gives
// 3 s, short for a wait that includes parkAfter on a loaded machine).
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tracked(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// TestParkEpoll: an idle connection parks without a goroutine and is
// served again, over several cycles; bytes that arrive while it is being
// parked are served; a peer that closes while parked, or half-closes after
// a last request, is freed; the idle timeout and Shutdown close parked
// connections.
func TestParkEpoll(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	const idle = 2*parkAfter + 1500*time.Millisecond
	s := &Server{Router: &recRouter{addr: be.addr()}, Limits: Limits{IdleTimeout: idle}}
	addr := newEngine(t, s)
	get := func(c *client, path string) {
		t.Helper()
		c.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != path {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}

	t.Run("cycles", func(t *testing.T) {
		c := dial(t, addr)
		for i, p := range []string{"/1", "/2", "/3", "/4"} {
			c.c.SetDeadline(time.Now().Add(20 * time.Second))
			get(c, p)
			waitLong(t, "parked after "+p, func() bool { return parkedCount(s) == 1 })
			if i == 3 {
				break
			}
		}
		// Pipelined: two requests in one write wake it once.
		c.send("GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n")
		for _, p := range []string{"/p1", "/p2"} {
			if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != p {
				t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
			}
		}
		waitLong(t, "parked after the pipelined pair", func() bool { return parkedCount(s) == 1 })
		c.c.Close()
		waitLong(t, "freed after the peer closed", func() bool { return parkedCount(s) == 0 && tracked(s) == 0 })
	})

	t.Run("bytes while arming", func(t *testing.T) {
		c := dial(t, addr)
		get(c, "/first")
		armed := make(chan struct{})
		hook := func(*conn) {
			parkArmHook.Store(nil) // the engine's only connection; runs once
			c.send("GET /armed HTTP/1.1\r\nHost: a\r\n\r\n")
			time.Sleep(50 * time.Millisecond) // in the socket before the arm
			close(armed)
		}
		parkArmHook.Store(&hook)
		t.Cleanup(func() { parkArmHook.Store(nil) })
		<-armed
		if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != "/armed" {
			t.Fatalf("/armed: %d %s", resp.StatusCode, body)
		}
		c.c.Close()
		waitLong(t, "freed", func() bool { return tracked(s) == 0 })
	})

	t.Run("half close with a request", func(t *testing.T) {
		c := dial(t, addr)
		get(c, "/first")
		waitLong(t, "parked", func() bool { return parkedCount(s) == 1 })
		c.send("GET /last HTTP/1.1\r\nHost: a\r\n\r\n")
		c.c.(*net.TCPConn).CloseWrite()
		if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != "/last" {
			t.Fatalf("/last: %d %s", resp.StatusCode, body)
		}
		if !c.closed() {
			t.Fatal("still open after the half-closed peer's last answer")
		}
		waitLong(t, "freed", func() bool { return parkedCount(s) == 0 && tracked(s) == 0 })
	})

	t.Run("idle timeout", func(t *testing.T) {
		c := dial(t, addr)
		c.c.SetDeadline(time.Now().Add(idle + 15*time.Second))
		get(c, "/first")
		sent := time.Now()
		waitLong(t, "parked", func() bool { return parkedCount(s) == 1 })
		closedAtIdleTimeout(t, c, sent, idle)
		waitLong(t, "freed", func() bool { return parkedCount(s) == 0 && tracked(s) == 0 })
	})

	t.Run("shutdown", func(t *testing.T) {
		var cs []*client
		for range 3 {
			c := dial(t, addr)
			get(c, "/first")
			cs = append(cs, c)
		}
		waitLong(t, "parked", func() bool { return parkedCount(s) == 3 })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		for i, c := range cs {
			if !c.closed() {
				t.Fatalf("parked connection %d still open after Shutdown", i)
			}
		}
		if n := parkedCount(s); n != 0 || tracked(s) != 0 {
			t.Fatalf("after Shutdown: %d parked, %d tracked", n, tracked(s))
		}
		select {
		case <-s.park.done:
		default:
			t.Fatal("the watcher is still running after Shutdown")
		}
	})
}

// TestParkTLSNotParked: a TLS connection is never parked (tls.Conn may hold
// bytes the fd no longer shows) and is served after idle waits longer than
// parkAfter, keeping its goroutine.
func TestParkTLSNotParked(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	certSrv := httptest.NewUnstartedServer(nil)
	certSrv.StartTLS()
	cert := certSrv.TLS.Certificates
	certSrv.Close()
	s := &Server{Router: &recRouter{addr: be.addr()}, Limits: Limits{IdleTimeout: 30 * time.Second}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(tls.NewListener(ln, &tls.Config{Certificates: cert}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	tc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &client{t: t, c: tc, br: bufio.NewReader(tc)}
	for _, p := range []string{"/1", "/2", "/3"} {
		c.send("GET " + p + " HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != p {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
		}
		time.Sleep(parkAfter + 300*time.Millisecond)
		if n := parkedCount(s); n != 0 {
			t.Fatalf("after %s: %d TLS connections parked", p, n)
		}
	}
}

// TestParkMany: many connections whose requests come around parkAfter
// apart, so parks, wake-ups and requests race; every answer is right and
// nothing is left parked or tracked once they close.
func TestParkMany(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	s := &Server{Router: &recRouter{addr: be.addr()}, Limits: Limits{IdleTimeout: 30 * time.Second}}
	addr := newEngine(t, s)
	const conns, rounds = 50, 4
	errc := make(chan error, conns)
	for i := range conns {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			br := bufio.NewReader(c)
			for r := range rounds {
				path := "/" + strconv.Itoa(i) + "/" + strconv.Itoa(r)
				if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
					errc <- err
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errc <- fmt.Errorf("%s: %w", path, err)
					return
				}
				var e echo
				err = json.NewDecoder(resp.Body).Decode(&e)
				resp.Body.Close()
				if err != nil || e.URI != path {
					errc <- fmt.Errorf("%s: answered %q, %v", path, e.URI, err)
					return
				}
				// Around parkAfter: some park just before the next request.
				time.Sleep(parkAfter - 50*time.Millisecond + time.Duration(i%5)*25*time.Millisecond)
			}
			errc <- nil
		}()
	}
	for range conns {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	waitLong(t, "all freed", func() bool { return parkedCount(s) == 0 && tracked(s) == 0 })
}
