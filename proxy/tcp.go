package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/telemetry"
)

// TCPUpstream forwards raw TCP accepted on a local port to a service: each
// connection is tunnelled to one instance's sidecar, which hands it to its
// app (--upstream NAME=127.0.0.1:PORT).
type TCPUpstream struct {
	Service  string
	Listener net.Listener
	Resolver Resolver
	Log      *slog.Logger
	// Source is the calling service (sent as x-weft-source); Telemetry
	// counts connections and bytes (nil: not counted).
	Source    string
	Telemetry *telemetry.Telemetry
	// Dial connects to the instance's sidecar (mTLS); nil: plain TCP.
	Dial DialFunc

	Connections atomic.Int64
}

// Run accepts until ctx is done, then waits for open connections to end.
func (u *TCPUpstream) Run(ctx context.Context) error {
	log := u.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { u.Listener.Close() })
	defer stop()
	var conns sync.Map
	defer func() {
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	}()
	for {
		c, err := u.Listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("upstream %s: %w", u.Service, err)
		}
		u.Connections.Add(1)
		conns.Store(c, struct{}{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.Delete(c)
			if err := u.serve(ctx, c); err != nil {
				log.Warn("tcp upstream", "service", u.Service, "err", err)
				c.Close()
			}
		}()
	}
}

func (u *TCPUpstream) serve(ctx context.Context, c net.Conn) error {
	dest, err := u.Resolver.Lookup(ctx, u.Service)
	if err != nil {
		return err
	}
	var last *balancer.Endpoint
	lastErr := errNoTunnel
	for attempt := 0; attempt < tunnelAttempts; attempt++ {
		ep, err := dest.Picker.Pick(balancer.PickInfo{})
		for i := 0; err == nil && ep == last && i < 4 && len(dest.Endpoints) > 1; i++ {
			ep, err = dest.Picker.Pick(balancer.PickInfo{})
		}
		if err != nil {
			return fmt.Errorf("%s: %w", u.Service, err)
		}
		last = ep
		up, r, err := dialTunnel(ctx, u.Dial, ep.Address, u.Service, u.Source)
		if err != nil {
			lastErr = err
			continue
		}
		ep.InFlight.Add(1)
		done := u.Telemetry.TCPClient(u.Service)
		done(pipe(c, c, up, r))
		ep.InFlight.Add(-1)
		return nil
	}
	return lastErr
}

// tunnelAttempts bounds the instances a TCP connection is tried on (a
// refused tunnel has sent nothing, so another instance is safe).
const tunnelAttempts = 3
