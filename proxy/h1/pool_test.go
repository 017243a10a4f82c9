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
// gate) take the connection the first request gives back instead of each
// dialling its own; with Dial, every one of them opens a connection.
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
			opened := be.accepted.Load() - before
			if !wait && opened != burst {
				t.Fatalf("Dial: %d connections for %d concurrent requests, want %d", opened, burst, burst)
			}
			// The first dial, then at most the one that took the slot when
			// the first connection came back and one more on a slow machine.
			if wait && opened > 3 {
				t.Fatalf("DialWait: %d connections for %d concurrent requests (%d dials), want at most 3", opened, burst, dials.Load())
			}
			t.Logf("%s: %d connections, %d dials", name, opened, dials.Load())
		})
	}
}
