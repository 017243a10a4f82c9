package h1

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDialWaitTakesFreedConnection: requests that find the pool empty
// while the one dial slot is busy (as behind the mTLS dialer's handshake
// gate) take the connection the first request gives back, and their dials
// still waiting for the slot give way; with Dial, every one of them dials.
func TestDialWaitTakesFreedConnection(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Write([]byte("ok"))
	}))
	const burst = 6
	for _, wait := range []bool{false, true} {
		name := "Dial"
		if wait {
			name = "DialWait"
		}
		t.Run(name, func(t *testing.T) {
			before := be.accepted.Load()
			slot := make(chan struct{}, 1)
			var dials atomic.Int64
			// A slow dial (a handshake: 300 ms) one at a time.
			dialWait := func(addr string, freed <-chan struct{}) (net.Conn, error) {
				select {
				case slot <- struct{}{}:
				case <-freed:
					return nil, &net.OpError{Op: "dial", Net: "tcp", Err: net.ErrClosed}
				}
				defer func() { <-slot }()
				dials.Add(1)
				time.Sleep(300 * time.Millisecond)
				return net.Dial("tcp", addr)
			}
			s := &Server{Router: &recRouter{addr: be.addr()}}
			if wait {
				s.DialWait = dialWait
			} else {
				s.Dial = func(addr string) (net.Conn, error) { return dialWait(addr, nil) }
			}
			addr := newEngine(t, s)
			var wg sync.WaitGroup
			codes := make(chan int, burst)
			for i := range burst {
				c := dial(t, addr)
				wg.Add(1)
				go func() {
					defer wg.Done()
					if i > 0 {
						time.Sleep(100 * time.Millisecond) // the first one's dial is under way
					}
					c.send("GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
					resp, err := http.ReadResponse(c.br, nil)
					if err != nil {
						codes <- 0
						return
					}
					resp.Body.Close()
					codes <- resp.StatusCode
				}()
			}
			wg.Wait()
			close(codes)
			for code := range codes {
				if code != 200 {
					t.Fatalf("status %d", code)
				}
			}
			// Every request is served by a connection given back before its
			// own dial ends (TestWaitingRequestTakesReturnedConnection); what
			// differs is the dials left running: with Dial each request's
			// dial still runs (a handshake nobody needs), with DialWait the
			// ones still waiting for the slot give way.
			settle := time.Now().Add(5 * time.Second)
			for n := dials.Load(); time.Now().Before(settle); {
				time.Sleep(400 * time.Millisecond)
				if m := dials.Load(); m == n && len(slot) == 0 {
					break
				} else {
					n = m
				}
			}
			opened := be.accepted.Load() - before
			if !wait && dials.Load() != burst {
				t.Fatalf("Dial: %d dials for %d concurrent requests, want %d", dials.Load(), burst, burst)
			}
			// The first dial, then at most the one that took the slot when
			// the first connection came back and one more on a slow machine.
			if wait && dials.Load() > 3 {
				t.Fatalf("DialWait: %d dials for %d concurrent requests (%d connections), want at most 3", dials.Load(), burst, opened)
			}
			t.Logf("%s: %d connections, %d dials", name, opened, dials.Load())
		})
	}
}

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
