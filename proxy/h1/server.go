package h1

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Errors in Result.Err (wrapped around their cause) and from Serve.
var (
	ErrServerClosed      = errors.New("h1: server closed")
	ErrUpstreamClosed    = errors.New("h1: upstream connection closed or failed")
	ErrUpstreamTimeout   = errors.New("h1: upstream response head timeout")
	ErrMalformedResponse = errors.New("h1: malformed upstream response")
	ErrDownstream        = errors.New("h1: downstream connection failed")
	ErrBadRequest        = errors.New("h1: malformed request body")
	ErrInvalidField      = errors.New("h1: invalid field in Decision")
)

// Server is the engine: it serves HTTP/1.x connections from listeners,
// forwarding each request where its Router says.
//
// Fallback receives the connections the engine does not handle: HTTP/2
// prior knowledge (the "PRI * HTTP/2.0" preface), Upgrade requests
// (WebSocket) and CONNECT, always at a request boundary (after the
// responses to earlier requests on the connection were written), with every
// byte already read replayed first. It is called on the connection's
// goroutine and should hand the connection over and return, e.g. through a
// HandoffListener served by an http.Server. Without a Fallback a preface
// is answered 505, CONNECT 501, and an Upgrade field is dropped as the
// hop-by-hop field it is (the request is forwarded without it).
// A Router that is a Tunneler carries Upgrade and CONNECT itself, and the
// Fallback sees only HTTP/2 prior knowledge (upgrade.go).
//
// Limits and Logger are read when Serve is first called.
type Server struct {
	Router   Router
	Limits   Limits
	Fallback func(c net.Conn)
	Logger   *slog.Logger
	// Dial, when set, opens upstream connections instead of a TCP dial
	// (the sidecar's mTLS to other sidecars). Its errors should be
	// *net.OpError with Op "dial" when nothing was sent, so the Router can
	// retry elsewhere.
	Dial func(addr string) (net.Conn, error)
	// DialWait, when set, is used instead of Dial. freed is closed when a
	// connection to addr goes back to the pool; a dial that is still
	// waiting for its turn (the mTLS dialer's handshake slots) may then
	// give up with an error, and the request takes that connection. nil
	// for tunnels, which never use pooled connections.
	DialWait func(addr string, freed <-chan struct{}) (net.Conn, error)

	initOnce   sync.Once
	handoff    Handoffer // Router's, if it has the capability
	lim        Limits
	log        *slog.Logger
	ups        upstreams
	draining   atomic.Bool
	inShutdown atomic.Bool
	parks      atomic.Int64 // idle connections moved to a fresh goroutine
	park       parker       // idle connections without one (park_linux.go)
	tunnels    tunnelStats  // Upgrade and CONNECT tunnels (tunnel.go)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup // connection goroutines
}

func (s *Server) init() {
	s.lim = s.Limits.withDefaults()
	s.log = s.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ups.init(&s.lim)
	s.ups.dial = s.Dial
	s.ups.dialWait = s.DialWait
	s.handoff, _ = s.Router.(Handoffer)
	s.listeners = map[net.Listener]struct{}{}
	s.conns = map[*conn]struct{}{}
}

// Serve accepts connections on ln until ln is closed (the accept error is
// returned, wrapping net.ErrClosed) or Shutdown is called
// (ErrServerClosed).
func (s *Server) Serve(ln net.Listener) error {
	s.initOnce.Do(s.init)
	if s.Router == nil {
		return errors.New("h1: Server.Router is nil")
	}
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("h1: accept: %w", err)
			}
			// Out of file descriptors and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.inShutdown.Load() {
			s.mu.Unlock()
			nc.Close()
			c.free()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) serveConn(c *conn) {
	handedOff, parked := false, false
	c.spawnServed = c.served
	defer func() {
		if v := recover(); v != nil {
			// A Router bug must not take the sidecar down with it; the
			// connection's state is suspect, so it is not pooled.
			s.log.Error("panic serving connection", "remote", c.nc.RemoteAddr(), "panic", v, "stack", string(debug.Stack()))
			if up := c.up.Load(); up != nil {
				up.nc.Close()
			}
			s.untrack(c)
			c.nc.Close()
			s.wg.Done()
			return
		}
		if parked {
			return // the fresh goroutine owns c (and the wg count) now
		}
		if !handedOff {
			s.untrack(c)
			c.nc.Close()
		}
		c.free()
		s.wg.Done()
	}()
	for {
		switch c.serveRequest() {
		case actNext:
			continue
		case actHandedOff:
			handedOff = true
		case actPark:
			parked = true
			s.parks.Add(1)
			if !s.parkConn(c) {
				go s.serveConn(c)
			}
		}
		return
	}
}

// SetDraining makes every later response carry "Connection: close" (and
// its connection close after it), so callers' pooled connections end one
// by one before the listener closes.
func (s *Server) SetDraining(on bool) { s.draining.Store(on) }

// CloseIdleUpstreams closes pooled upstream connections; those in use are
// pooled again when their exchange ends.
func (s *Server) CloseIdleUpstreams() {
	s.initOnce.Do(s.init)
	s.ups.closeIdle()
}

// Shutdown stops accepting, closes idle connections (and each busy one once
// its exchange ends, answered with "Connection: close"), and waits for
// them. When ctx ends first it closes the remaining connections, waits for
// their goroutines (a dial in progress can add up to DialTimeout), and
// returns ctx.Err(). Upstream connections are not pooled from the start of
// Shutdown on; pooled ones are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.initOnce.Do(s.init)
	s.mu.Lock()
	s.inShutdown.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	s.ups.closed.Store(true)
	s.ups.closeIdle()
	s.closeParked()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	poll := time.Millisecond
	timer := time.NewTimer(poll)
	defer timer.Stop()
	for {
		s.kick(false)
		select {
		case <-done:
			s.ups.shutdown()
			return nil
		case <-ctx.Done():
			s.kick(true)
			<-done
			s.ups.shutdown()
			return ctx.Err()
		case <-timer.C:
			poll = min(2*poll, 100*time.Millisecond)
			timer.Reset(poll)
		}
	}
}

// aLongTimeAgo is a deadline that has passed, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// kick wakes connections waiting for a request (they see Shutdown and
// close), or with all, every connection and its upstream. Deadlines rather
// than Close: a connection that just received a request is not cut off.
// Shutdown repeats it because a connection can set its own idle deadline
// just after being kicked.
func (s *Server) kick(all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if all {
			c.nc.SetDeadline(aLongTimeAgo)
			if up := c.up.Load(); up != nil {
				up.nc.SetDeadline(aLongTimeAgo)
			}
		} else if c.state.Load() == stateIdle {
			c.nc.SetReadDeadline(aLongTimeAgo)
		}
	}
}
