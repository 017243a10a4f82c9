package sidecar

import (
	"context"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/resource"
)

// watchRateLimit keeps the inbound's rate limit at what the service's own
// TrafficPolicy and Route say (rateLimit is enforced by each instance's sidecar),
// until ctx ends.
func (s *Sidecar) watchRateLimit(ctx context.Context) {
	ch, stop := s.disc.Watch(s.cfg.Service)
	defer stop()
	for {
		var d *discovery.Destination
		select {
		case <-ctx.Done():
			return
		case d = <-ch:
		}
		var rl *resource.RateLimit
		if d.Policy != nil {
			rl = d.Policy.RateLimit
		}
		// The Route's rules may set their own (route.Rule.RateLimit).
		s.in.SetRateLimits(s.cfg.Service, rl, d.Routes)
	}
}
