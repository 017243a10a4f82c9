package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"

	"github.com/weftmesh/weft/proxy/h1"
)

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
			if err := f.hand.Handoff(f.guard(c)); err != nil {
				c.Close()
			}
		}}
		lm.countTunnels(name, f.fast)
	}
	return f
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
	if f.fast != nil {
		f.fast.CloseIdleUpstreams()
	}
}
