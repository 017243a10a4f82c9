package sidecar

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/authz"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/proxy"
	"github.com/weftmesh/weft/resource"
)

// newAuthorizer makes the inbound's authorization stage: denials are
// counted per policy (weft_authz_denied_total) and logged.
func (s *Sidecar) newAuthorizer() *proxy.Authorizer {
	denied := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_authz_denied_total",
		Help: "Requests to this instance denied by an AuthorizationPolicy, by the policy that decided."}, []string{"policy"})
	s.metrics.Registry().MustRegister(denied)
	log := s.log.With("component", "authz")
	return &proxy.Authorizer{OnDeny: func(policy, reason, principal, method, path string) {
		denied.WithLabelValues(policy).Inc()
		if len(path) > 256 {
			path = path[:256]
		}
		log.Info("request denied", "policy", policy, "reason", reason, "peer", principal, "method", method, "path", path)
	}}
}

// watchPolicies keeps the inbound's snapshot in step with the service's
// AuthorizationPolicies as the control plane pushes them.
func (s *Sidecar) watchPolicies(ctx context.Context, a *proxy.Authorizer) {
	updates, stop := s.disc.Watch(s.cfg.Service)
	defer stop()
	var last []byte
	for {
		var d *discovery.Destination
		select {
		case <-ctx.Done():
			return
		case d = <-updates:
		}
		var objs []authz.Object
		var key []byte
		for _, o := range d.Config {
			if o.Kind == resource.KindAuthorizationPolicy {
				objs = append(objs, authz.Object{Name: o.Name, Spec: o.SpecJson})
				key = append(append(append(key, o.Name...), 0), o.SpecJson...)
			}
		}
		if last != nil && string(key) == string(last) {
			continue
		}
		last = append(key, 1) // non-nil even when empty
		snap, err := authz.Compile(objs)
		if err != nil {
			s.log.Error("authorization policies not understood; denying every request until they are fixed", "err", err)
			snap = authz.DenyAll("(invalid policy)")
		}
		a.Set(snap)
		s.policiesOnce.Do(func() { close(s.policiesReady) })
		s.log.Log(ctx, slog.LevelInfo, "authorization policies updated", "policies", len(objs))
	}
}
