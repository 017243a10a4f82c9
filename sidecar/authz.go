package sidecar

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/authz"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/proxy"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/security/mtls"
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
		s.peerAuthentication(d)
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

// peerAuthentication applies the service's PeerAuthentication, if any, to
// the inbound listener's mode.
func (s *Sidecar) peerAuthentication(d *discovery.Destination) {
	for _, o := range d.Config {
		if o.Kind != resource.KindPeerAuthentication {
			continue
		}
		spec, err := resource.ParsePeerAuthenticationSpec(o.SpecJson)
		if err != nil {
			s.log.Error("PeerAuthentication not understood; keeping the mesh's mode", "name", o.Name, "err", err)
			break
		}
		m, _ := mtls.ParseMode(spec.Mode)
		if cur := s.id.svcMode.Load(); cur == nil || *cur != m {
			s.log.Info("inbound mTLS mode set by PeerAuthentication", "name", o.Name, "mode", spec.Mode)
		}
		s.id.setServiceMode(&m)
		return
	}
	if s.id.svcMode.Load() != nil {
		s.log.Info("PeerAuthentication removed; inbound follows the mesh's mTLS mode")
		s.id.setServiceMode(nil)
	}
}
