package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTimeouts(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()},
		Limits: Limits{IdleTimeout: 100 * time.Millisecond, ReadHeaderTimeout: 150 * time.Millisecond}})
	tests := []struct {
		name  string
		first string // a complete request, or ""
		then  string // sent after it, then nothing
	}{
		{"idle after a request", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", ""},
		{"idle new connection", "", ""},
		{"head trickles", "", "GET / HTTP/1.1\r\nHost: a\r\n"},
		{"next head trickles", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET / HT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			if tt.first != "" {
				c.send(tt.first)
				c.read("GET")
			}
			start := time.Now()
			c.send(tt.then)
			if !c.closed() {
				t.Fatal("not closed")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("closed after %v", d)
			}
		})
	}
	// Within the idle timeout the connection is kept.
	c := dial(t, addr)
	for i := 0; i < 3; i++ {
		c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		c.read("GET")
		time.Sleep(30 * time.Millisecond)
	}
}

func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "done")
	}))
	s := &Server{Router: &recRouter{addr: be.addr()}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()

	idle := dial(t, addr)
	idle.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	idle.read("GET")
	busy := dial(t, addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	if !idle.closed() {
		t.Fatal("idle connection not closed by Shutdown")
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	resp, body := busy.read("GET")
	if resp.StatusCode != 200 || body != "done" || !resp.Close {
		t.Fatalf("in-flight request: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	s := &Server{Router: &recRouter{addr: be.addr()}}
	addr := newEngine(t, s)
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if !c.closed() {
		t.Fatal("connection survived the Shutdown deadline")
	}
}

func TestDraining(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	s := &Server{Router: &recRouter{addr: be.addr()}}
	addr := newEngine(t, s)
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := c.read("GET"); resp.Close {
		t.Fatal("closing before draining")
	}
	s.SetDraining(true)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := c.read("GET"); !resp.Close {
		t.Fatal("no Connection: close while draining")
	}
	if !c.closed() {
		t.Fatal("not closed")
	}
}

// TestFallback hands HTTP/2 prior-knowledge connections and Upgrade
// requests to a real http.Server on a HandoffListener and checks that it
// sees the bytes the engine had read.
func TestFallback(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl := NewHandoffListener(ln.Addr())
	fb := &http.Server{Protocols: new(http.Protocols), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			fmt.Fprintf(w, "fallback %s %s", r.Proto, r.URL.Path)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		io.Copy(conn, brw) // echo, starting with bytes the client sent early
	})}
	fb.Protocols.SetHTTP1(true)
	fb.Protocols.SetUnencryptedHTTP2(true)
	fbDone := make(chan struct{})
	go func() {
		defer close(fbDone)
		fb.Serve(hl)
	}()
	defer func() {
		fb.Close()
		<-fbDone
	}()
	var handedOff atomic.Int64
	s := &Server{Router: &recRouter{addr: be.addr()}, Fallback: func(c net.Conn) {
		handedOff.Add(1)
		if err := hl.Handoff(c); err != nil {
			c.Close()
		}
	}}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	addr := ln.Addr().String()

	t.Run("h2c prior knowledge", func(t *testing.T) {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		for i := 0; i < 2; i++ {
			resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/h2")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 || string(b) != "fallback HTTP/2.0 /h2" {
				t.Fatalf("%s %q", resp.Proto, b)
			}
		}
	})
	t.Run("upgrade after a forwarded request", func(t *testing.T) {
		c := dial(t, addr)
		c.send("GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := c.read("GET"); decodeEcho(t, body).URI != "/first" {
			t.Fatal(body)
		}
		// The Upgrade request and the first bytes of the new protocol
		// arrive together; the fallback must get all of them.
		c.send("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly bytes|")
		if h := c.head(); !strings.HasPrefix(h, "HTTP/1.1 101 ") {
			t.Fatalf("head %q", h)
		}
		c.send("later bytes")
		got := make([]byte, len("early bytes|later bytes"))
		if _, err := io.ReadFull(c.br, got); err != nil || string(got) != "early bytes|later bytes" {
			t.Fatalf("echo %q %v", got, err)
		}
	})
	t.Run("CONNECT", func(t *testing.T) {
		c := dial(t, addr)
		c.send("CONNECT weft-tcp.orders:1 HTTP/1.1\r\nHost: orders\r\n\r\n")
		resp, _ := c.read("CONNECT")
		// net/http's server answers CONNECT to a plain handler like any
		// request; what matters is that it got there.
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	if n := handedOff.Load(); n < 3 {
		t.Fatalf("handed off %d connections", n)
	}
}

func TestUpstreamPool(t *testing.T) {
	t.Run("closed by the upstream while idle", func(t *testing.T) {
		// An upstream that closes its connections after each response
		// without saying so: the engine must notice before reusing one,
		// for a POST too (which it would not replay).
		up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
			head, _ := readRequestHead(br)
			if cl := between(head, "Content-Length: ", "\r\n"); cl != "" {
				io.CopyN(io.Discard, br, int64(len(cl)))
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		})
		r := &recRouter{addr: up}
		addr := newEngine(t, &Server{Router: r})
		c := dial(t, addr)
		for i := 0; i < 4; i++ {
			c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
			if resp, body := c.read("POST"); resp.StatusCode != 200 {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
			time.Sleep(20 * time.Millisecond) // let the FIN arrive
		}
		if n := accepted.Load(); n != 4 {
			t.Fatalf("upstream accepted %d connections, want 4", n)
		}
	})
	t.Run("retry of an idempotent request on a dead reused connection", func(t *testing.T) {
		var served atomic.Int64
		up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
			for {
				if _, err := readRequestHead(br); err != nil {
					return
				}
				if served.Add(1) == 2 {
					return // the second request on the first connection: closed unanswered
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		})
		r := &recRouter{addr: up}
		addr := newEngine(t, &Server{Router: r})
		c := dial(t, addr)
		for i := 0; i < 2; i++ {
			c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, body := c.read("GET"); resp.StatusCode != 200 {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
		}
		if res := r.result(t, 2); res.Attempts != 2 || res.Err != nil {
			t.Fatalf("result %+v", res)
		}
		if n := accepted.Load(); n != 2 {
			t.Fatalf("accepted %d", n)
		}
	})
	t.Run("GETs on connections closed while idle, unchecked", func(t *testing.T) {
		// A replayable request skips the liveness read: a dead pooled
		// connection is found by the request, which goes again on a
		// checked one. Three connections die at once (a restarted app):
		// the next GET costs one extra try, not three, and every GET
		// succeeds.
		release := make(chan struct{})
		up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
			if _, err := readRequestHead(br); err != nil {
				return
			}
			<-release
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		})
		r := &recRouter{addr: up}
		addr := newEngine(t, &Server{Router: r})
		var cs []*client
		for i := 0; i < 3; i++ {
			c := dial(t, addr)
			c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			cs = append(cs, c)
		}
		waitFor(t, func() bool { return accepted.Load() == 3 }, "three upstream connections")
		close(release)
		for i, c := range cs {
			if resp, body := c.read("GET"); resp.StatusCode != 200 {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
		}
		time.Sleep(20 * time.Millisecond) // let the FINs arrive
		for i := 0; i < 3; i++ {
			cs[0].send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, body := cs[0].read("GET"); resp.StatusCode != 200 {
				t.Fatalf("GET %d after the close: %d %s", i, resp.StatusCode, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if res := r.result(t, 4); res.Attempts != 2 || res.Err != nil {
			t.Fatalf("first GET after the close: %+v, want 2 attempts", res)
		}
		if n := accepted.Load(); n != 6 {
			t.Fatalf("upstream accepted %d connections, want 6", n)
		}
	})
	t.Run("idle expiry and CloseIdleUpstreams", func(t *testing.T) {
		be := newBackend(t, http.HandlerFunc(echoHandler))
		s := &Server{Router: &recRouter{addr: be.addr()}, Limits: Limits{UpstreamIdle: 50 * time.Millisecond}}
		addr := newEngine(t, s)
		c := dial(t, addr)
		c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		c.read("GET")
		waitFor(t, func() bool { return len(*s.ups.m.Load()) == 0 }, "the pool to forget the idle address")
		c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		c.read("GET")
		s.CloseIdleUpstreams()
		c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		c.read("GET")
		if n := be.accepted.Load(); n != 3 {
			t.Fatalf("backend accepted %d connections, want 3", n)
		}
	})
	t.Run("MaxIdlePerUpstream", func(t *testing.T) {
		be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(20 * time.Millisecond)
		}))
		s := &Server{Router: &recRouter{addr: be.addr()}, Limits: Limits{MaxIdlePerUpstream: 2}}
		addr := newEngine(t, s)
		var cs []*client
		for i := 0; i < 5; i++ {
			c := dial(t, addr)
			c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			cs = append(cs, c)
		}
		for _, c := range cs {
			c.read("GET")
		}
		hp := (*s.ups.m.Load())[be.addr()]
		hp.mu.Lock()
		n := len(hp.idle)
		hp.mu.Unlock()
		if n != 2 {
			t.Fatalf("%d idle, want 2", n)
		}
	})
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHeaderTimeout(t *testing.T) {
	up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		readRequestHead(br)
		io.Copy(io.Discard, br) // never answers
	})
	r := &recRouter{addr: up, route: func(req *Request, d *Decision) { d.HeaderTimeout = 50 * time.Millisecond }}
	addr := newEngine(t, &Server{Router: r})
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, _ := c.read("GET")
	if resp.StatusCode != 504 || resp.Header.Get("X-Weft-Error") != "upstream_timeout" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	if res := r.result(t, 1); !errors.Is(res.Err, ErrUpstreamTimeout) || res.Attempts != 1 {
		t.Fatalf("result %+v", res)
	}
}

func TestDownstreamGoesAway(t *testing.T) {
	gotBody := make(chan error, 1)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		gotBody <- err
	}))
	r := &recRouter{addr: be.addr()}
	addr := newEngine(t, &Server{Router: r})
	c := dial(t, addr)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\npartial")
	time.Sleep(20 * time.Millisecond)
	c.c.Close()
	if err := <-gotBody; err == nil {
		t.Fatal("upstream saw a complete body")
	}
	if res := r.result(t, 1); !errors.Is(res.Err, ErrDownstream) {
		t.Fatalf("result %+v", res)
	}
}

// TestZeroAllocs: in steady state an exchange allocates nothing (the
// backend and client here allocate nothing either, so this counts the
// engine alone).
func TestZeroAllocs(t *testing.T) {
	be := newRawBackend(t, 1024)
	s := &Server{Router: &fixedRouter{addr: be.addr(), set: []Field{{Name: []byte("X-Weft-Source"), Value: []byte("test")}}}}
	rc := newRawClient(t, newEngine(t, s), benchRequest)
	for i := 0; i < 100; i++ {
		rc.roundTrip()
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if st, err := rc.roundTrip(); st != 200 || err != nil {
			t.Fatal(st, err)
		}
	})
	if allocs > 0 {
		t.Fatalf("%v allocations per request", allocs)
	}
}
