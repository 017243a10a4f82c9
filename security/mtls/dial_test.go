package mtls

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDialerBoundsHandshakesPerDestination: a burst of dials to one
// destination whose handshakes are stalled opens at most MaxHandshakes
// connections at a time; the rest wait their turn and all complete once
// the destination answers; another destination is not held up.
func TestDialerBoundsHandshakesPerDestination(t *testing.T) {
	ca := newTestCA(t, td)
	src := serverSource(t, ca)
	stalled, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	var accepted atomic.Int32
	release := make(chan struct{})
	var srv sync.WaitGroup
	go func() {
		for {
			c, err := stalled.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			srv.Add(1)
			go func() {
				defer srv.Done()
				<-release // the handshake stalls until released
				tl := NewListener(&oneConn{c: c, addr: stalled.Addr()}, src, Strict, nil)
				if tc, err := tl.Accept(); err == nil {
					buf := make([]byte, 1)
					_, _ = tc.Read(buf) // until the client closes
					tc.Close()
				}
				tl.Close()
				tl.Wait()
			}()
		}
	}()
	other := server(t, serverSource(t, ca), Strict)

	const limit, burst = 3, 12
	d := &Dialer{Source: serverSource(t, ca), MaxHandshakes: limit, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial(t.Context(), "tcp", stalled.Addr().String(), ALPNHTTP1)
			if err != nil {
				errs <- err
				return
			}
			c.Close()
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for accepted.Load() < limit && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // room for more to arrive, were they not held back
	if n := accepted.Load(); n != limit {
		t.Fatalf("%d connections opened while handshakes were stalled, want %d", n, limit)
	}
	// Another destination has its own bound.
	c, err := d.Dial(t.Context(), "tcp", other.Addr().String(), ALPNHTTP1)
	if err != nil {
		t.Fatalf("dial to another destination during the stall: %v", err)
	}
	c.Close()
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("dial: %v", err)
	}
	if n := accepted.Load(); n != burst {
		t.Errorf("%d connections in all, want %d", n, burst)
	}
	stalled.Close()
	srv.Wait()
}

// TestDialUnlessFreedGivesWay: a dial waiting for a handshake slot ends
// with ErrFreed, nothing dialled, when its freed channel closes; one with
// a slot free dials as Dial does.
func TestDialUnlessFreedGivesWay(t *testing.T) {
	ca := newTestCA(t, td)
	l := server(t, serverSource(t, ca), Strict)
	addr := l.Addr().String()
	d := &Dialer{Source: serverSource(t, ca), MaxHandshakes: 1, Timeout: 30 * time.Second}
	g := d.gate(addr)
	g <- struct{}{} // the one slot is taken: a handshake in progress
	freed := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		c, err := d.DialUnlessFreed(t.Context(), "tcp", addr, ALPNHTTP1, freed)
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("returned while the slot was taken and nothing freed: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(freed)
	select {
	case err := <-done:
		if !errors.Is(err, ErrFreed) {
			t.Fatalf("err %v, want ErrFreed", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "dial" {
			t.Fatalf("err %#v, want a *net.OpError with Op dial", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting after freed closed")
	}
	if n := d.Source.Handshakes.Load(); n != 0 {
		t.Fatalf("%d handshakes, want none", n)
	}
	<-g
	c, err := d.DialUnlessFreed(t.Context(), "tcp", addr, ALPNHTTP1, make(chan struct{}))
	if err != nil {
		t.Fatalf("dial with a free slot: %v", err)
	}
	c.Close()
}

// oneConn is a listener that yields one connection, then blocks until
// closed.
type oneConn struct {
	c    net.Conn
	addr net.Addr
	once sync.Once
	done chan struct{}
	mu   sync.Mutex
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.done == nil {
		l.done = make(chan struct{})
	}
	l.mu.Unlock()
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done == nil {
		l.done = make(chan struct{})
	}
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.addr }
