package h1

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A request that finds no idle upstream connection is served by the first
// one given back, not held until its own (slow) dial completes; the dial,
// when it completes, pools its connection for the next one.
func TestWaitingRequestTakesReturnedConnection(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(100 * time.Millisecond)
		}
		w.Write([]byte("ok"))
	}))
	var dials atomic.Int64
	s := &Server{Router: &recRouter{addr: be.addr()}, Dial: func(addr string) (net.Conn, error) {
		if dials.Add(1) > 1 {
			<-release // every dial after the first hangs until the test lets it go
		}
		return net.Dial("tcp", addr)
	}}
	addr := newEngine(t, s)
	t.Cleanup(let) // runs before the engine's Shutdown, which waits for dials
	a, b := dial(t, addr), dial(t, addr)
	a.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := a.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}

	a.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n") // holds the pooled connection
	time.Sleep(20 * time.Millisecond)
	b.send("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n") // finds none idle, dials, waits
	if resp, body := b.read("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("waiting request: %d %q", resp.StatusCode, body)
	}
	if resp, _ := a.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("slow request: %d", resp.StatusCode)
	}
	if n := be.accepted.Load(); n != 1 {
		t.Fatalf("backend accepted %d connections before the second dial was let go, want 1", n)
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2 (the waiting request's own)", n)
	}

	let() // the dial that lost the race completes into the pool
	deadline := time.Now().Add(5 * time.Second)
	for be.accepted.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for _, c := range []*client{a, b} { // two at once: both connections are used, no third dial
		c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	for _, c := range []*client{a, b} {
		if resp, _ := c.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("after the dial: %d", resp.StatusCode)
		}
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials after two concurrent requests on two pooled connections, want 2", n)
	}
}

// A dial that fails reaches the request waiting on it as the dial error, as
// before (the router may then try another instance).
func TestWaitingRequestGetsDialError(t *testing.T) {
	r := &recRouter{addr: refusedAddr(t)}
	addr := newEngine(t, &Server{Router: r})
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := c.read("GET"); resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d for a refused dial", resp.StatusCode)
	}
	if res := r.result(t, 1); res.Err == nil {
		t.Fatalf("result %+v: want the dial error", res)
	}
}
