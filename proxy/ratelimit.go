package proxy

import (
	"fmt"
	"net/http"
	"time"

	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/resource"
	routes "github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/security/mtls"
	"github.com/weftmesh/weft/telemetry/metrics"
)

// inLimits is what the inbound enforces: the TrafficPolicy's rate limit
// and the service's Route rules' own. Immutable; swapped whole.
type inLimits struct {
	service string
	all     *policy.RateLimiter // nil: none
	// routes is the service's Route when a rule has a rateLimit (nil
	// otherwise); rules[i] is rule i's limiter, nil where it has none.
	routes *routes.Table
	rules  []*policy.RateLimiter
}

// SetRateLimit makes the inbound enforce rl for service (nil: no limit).
// An unchanged limit keeps its buckets.
func (in *Inbound) SetRateLimit(service string, rl *resource.RateLimit) {
	in.SetRateLimits(service, rl, nil)
}

// SetRateLimits makes the inbound enforce rl for service, and each rule
// of routes that has a rateLimit for the requests it matches (in place of
// rl). Limits that did not change keep their buckets.
func (in *Inbound) SetRateLimits(service string, rl *resource.RateLimit, table *routes.Table) {
	cur := in.limits.Load()
	next := &inLimits{service: service, all: keep(cur.allLimiter(), service, rl)}
	if table != nil && table.RateLimited() {
		next.routes = table
		next.rules = make([]*policy.RateLimiter, len(table.Rules))
		for i := range table.Rules {
			if r := table.Rules[i].RateLimit; r != nil {
				next.rules[i] = keep(cur.ruleLimiter(i), service, r)
			}
		}
	}
	if next.all == nil && next.routes == nil {
		next = nil
	}
	in.limits.Store(next)
}

func (l *inLimits) allLimiter() *policy.RateLimiter {
	if l == nil {
		return nil
	}
	return l.all
}

func (l *inLimits) ruleLimiter(i int) *policy.RateLimiter {
	if l == nil || i >= len(l.rules) {
		return nil
	}
	return l.rules[i]
}

// keep returns cur when it enforces rl already, else a new limiter.
func keep(cur *policy.RateLimiter, service string, rl *resource.RateLimit) *policy.RateLimiter {
	if cur != nil && cur.Same(rl) {
		return cur
	}
	return policy.NewRateLimiter(service, rl)
}

// limited reports whether r, from source, is over its rate limit,
// counting it and returning the answer to send when it is. It runs after
// authorization: a denied request takes no token.
func (in *Inbound) limited(source string, r routes.Request, now time.Time) *MeshError {
	ls := in.limits.Load()
	if ls == nil {
		return nil
	}
	l, rule := ls.all, -1
	if ls.routes != nil {
		if m := ls.routes.Match(r); m != nil && ls.rules[m.Index] != nil {
			l, rule = ls.rules[m.Index], m.Index
		}
	}
	if l == nil || l.Allow(source, now) {
		return nil
	}
	if !metrics.ValidName(source) {
		source = metrics.Unknown
	}
	in.Metrics.Count(metrics.EventRateLimited, metrics.Server, source, ls.service)
	msg := fmt.Sprintf("instance over the rate limit of service %q", ls.service)
	if rule >= 0 {
		msg = fmt.Sprintf("instance over the rate limit of route %s rule %d of service %q", ls.routes.Name, rule, ls.service)
	}
	return &MeshError{Status: http.StatusTooManyRequests, Code: CodeRateLimited, Service: ls.service, Message: msg}
}

// limitedH1 is limited for the fast path's request (nil at once when no
// limit is set: nothing to adapt).
func (f *FastInbound) limitedH1(req *h1Request, peer *mtls.Peer) *MeshError {
	if f.in.limits.Load() == nil {
		return nil
	}
	return f.in.limited(sourceOf(peer, bytesString(req.r.Get(HeaderSource))), req, time.Now())
}

// sourceOf is the calling service for perSource limits: the verified
// identity's when the caller has one (x-weft-source is the caller's
// word), else the header.
func sourceOf(peer *mtls.Peer, header string) string {
	if peer != nil && peer.Verified && peer.ID.Service != "" {
		return peer.ID.Service
	}
	return header
}
