package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"

	"github.com/weftmesh/weft/proxy/h1"
	"github.com/weftmesh/weft/proxy/h2"
)

// HTTP/2 engines: what serves the h2 connections the HTTP/1.1 fast path
// hands off (h2c prior knowledge, h2 over TLS).
const (
	H2EngineNative  = "native"  // proxy/h2: frames forwarded stream to stream
	H2EngineNetHTTP = "nethttp" // net/http's server and httputil.ReverseProxy
	// DefaultH2Engine is the engine the sidecar runs unless told.
	DefaultH2Engine = H2EngineNative
)

// H2Config is the HTTP/2 engine's static configuration (flags).
type H2Config struct {
	Engine               string
	MaxConcurrentStreams uint32 // per downstream connection; 0: h2.DefaultMaxConcurrentStreams
	MaxHeaderListSize    uint32 // decoded header block; 0: h2.DefaultMaxHeaderListSize
}

// Validate checks the engine name.
func (c H2Config) Validate() error {
	switch c.Engine {
	case "", H2EngineNative, H2EngineNetHTTP:
		return nil
	}
	return fmt.Errorf("--h2-engine %q: want %s or %s", c.Engine, H2EngineNative, H2EngineNetHTTP)
}

// native reports whether the native engine serves HTTP/2.
func (c H2Config) native() bool {
	return c.Engine == H2EngineNative || (c.Engine == "" && DefaultH2Engine == H2EngineNative)
}

// front serves one proxy listener: the HTTP/1.1 fast path (proxy/h1) with
// a net/http server behind it for what the fast path hands off (h2c and
// gRPC, Upgrade, CONNECT) — or, with the fast path off, net/http alone.
type front struct {
	ln   net.Listener
	fast *h1.Server
	hand *h1.HandoffListener
	hs   *http.Server
	// guard wraps a connection net/http serves in the h2 frame guard.
	guard func(net.Conn) net.Conn
	h2    *h2.Server // nil: net/http serves HTTP/2 too
}

func newFront(ln net.Listener, h http.Handler, router h1.Router, log *slog.Logger, lim ListenLimits, lm *listenerMetrics, name string) *front {
	lim = lim.withDefaults()
	ln = lm.limit(ln, name, lim.MaxConns, lim.WriteTimeout)
	hs := newServer(limitBodies(h, lim))
	hs.ReadHeaderTimeout, hs.IdleTimeout = lim.ReadHeaderTimeout, lim.IdleTimeout
	f := &front{ln: ln, hs: hs}
	f.guard = func(c net.Conn) net.Conn {
		return newH2Guard(c, func(reason string) {
			lm.closed.WithLabelValues(name, reason).Inc()
			log.Warn("connection closed", "reason", reason, "remote", c.RemoteAddr().String())
		})
	}
	if router != nil {
		f.hand = h1.NewHandoffListener(ln.Addr())
		f.fast = &h1.Server{Router: router, Logger: log, Limits: h1.Limits{
			ReadHeaderTimeout: lim.ReadHeaderTimeout, IdleTimeout: lim.IdleTimeout,
			BodyTimeout: lim.BodyTimeout, MinBodyRate: lim.MinBodyRate, TunnelIdle: lim.TunnelIdle, WriteTimeout: lim.WriteTimeout,
		}, Fallback: func(c net.Conn) {
			g := f.guard(c)
			if f.h2 != nil {
				// The fast path hands off the preface only when its first
				// line is exactly h2PrefaceLine (its head is buffered, so
				// these bytes are there: any request line is at least as
				// long); Upgrade and CONNECT, whatever the method, go to
				// net/http.
				var pri [len(h2PrefaceLine)]byte
				if _, err := io.ReadFull(g, pri[:]); err != nil {
					c.Close()
					return
				}
				pc := &prefixed{Conn: g, pre: pri[:]}
				if string(pri[:]) == h2PrefaceLine {
					f.h2.ServeConn(pc)
					return
				}
				if err := f.hand.Handoff(pc); err != nil {
					c.Close()
				}
				return
			}
			if err := f.hand.Handoff(g); err != nil {
				c.Close()
			}
		}}
		lm.countTunnels(name, f.fast)
	}
	return f
}

// useH2 makes the native engine serve the listener's HTTP/2 connections
// (with the fast path on; h2guard stays in front of it). Call before run.
func (f *front) useH2(cfg H2Config, r h2.Router, dial func(ctx context.Context, addr string) (net.Conn, error),
	base func(net.Addr) context.Context, log *slog.Logger, lim ListenLimits) {
	if f.fast == nil || !cfg.native() {
		return
	}
	lim = lim.withDefaults()
	f.h2 = &h2.Server{Router: r, Logger: log, Dial: dial, Context: base, Limits: h2.Limits{
		MaxConcurrentStreams: cfg.MaxConcurrentStreams, MaxHeaderListSize: cfg.MaxHeaderListSize,
		IdleTimeout: lim.IdleTimeout,
	}}
}

// h2PrefaceLine is the first line of the HTTP/2 client connection preface.
const h2PrefaceLine = "PRI * HTTP/2.0\r\n"

// prefixed returns pre before reading on.
type prefixed struct {
	net.Conn
	pre []byte
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite half-closes when the connection can (a CONNECT tunnel).
func (p *prefixed) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return p.Conn.Close()
}

// run serves until shutdown.
func (f *front) run(goRun func(string, func() error), name string) {
	if f.fast == nil {
		goRun(name, func() error { return serve(f.hs, &guardListener{Listener: f.ln, guard: f.guard}) })
		return
	}
	goRun(name+" (net/http)", func() error { return serve(f.hs, f.hand) })
	goRun(name, func() error {
		if err := f.fast.Serve(f.ln); err != nil && !errors.Is(err, h1.ErrServerClosed) {
			return err
		}
		return nil
	})
}

// setDraining makes later HTTP/1.1 answers carry Connection: close.
func (f *front) setDraining() {
	if f.fast != nil {
		f.fast.SetDraining(true)
	}
}

// shutdown stops accepting and waits for in-flight requests, bounded by ctx.
func (f *front) shutdown(ctx context.Context) error {
	var err error
	if f.fast != nil {
		err = f.fast.Shutdown(ctx)
	}
	if f.h2 != nil {
		if e := f.h2.Shutdown(ctx); err == nil {
			err = e
		}
	}
	if e := f.hs.Shutdown(ctx); err == nil {
		err = e
	}
	if f.hand != nil {
		f.hand.Close()
	}
	return err
}

func (f *front) close() {
	f.hs.Close()
	if f.h2 != nil {
		f.h2.Close()
	}
	if f.fast != nil {
		f.fast.CloseIdleUpstreams()
	}
}
