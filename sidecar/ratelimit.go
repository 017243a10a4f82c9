package sidecar

import (
	"context"

	"github.com/weftmesh/weft/discovery"
)

// watchRateLimit keeps the inbound's rate limit at what the service's own
// TrafficPolicy says (rateLimit is enforced by each instance's sidecar),
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
		if d.Policy != nil {
			s.in.SetRateLimit(s.cfg.Service, d.Policy.RateLimit)
		} else {
			s.in.SetRateLimit(s.cfg.Service, nil)
		}
	}
}
