package balancer

// Zone preference. A caller with a zone (weft sidecar --zone) sends its
// requests to the endpoints of its own zone, with the destination's
// algorithm over those only, and fails over to the other zones' endpoints
// (the same algorithm over them) while no local endpoint can take the
// request: none in the zone is ready (then the set has no local endpoints
// and no zone picker is built), or every local one is failing or
// overloaded. The check reads the local endpoints' atomics on every Pick,
// so a failover starts with the first request after the local zone went
// bad and ends with the first after it recovered.

// Thresholds of a local endpoint's usability.
const (
	// zoneMaxFailures consecutive failed attempts make a local endpoint
	// count as down (outlier ejection, where configured, removes it from
	// the set altogether).
	zoneMaxFailures = 3
	// zoneRetryAfter: a local endpoint down for failures is tried again
	// once it has had no attempt for this long (nothing else would reset
	// its count while the traffic goes elsewhere).
	zoneRetryAfter = int64(5e9)
	// zoneMinHeadroom: a local endpoint reporting less headroom is
	// overloaded.
	zoneMinHeadroom = 0.05
	// The local zone is overloaded, too, when its endpoints hold on
	// average more than zoneSpillFactor × the others' mean in-flight plus
	// zoneSpillSlack: queueing there while the other zones sit idle.
	zoneSpillFactor = 2
	zoneSpillSlack  = 8
)

// Build builds b's picker over endpoints with opts, preferring opts.Zone's
// endpoints when some are in it and some are not. It is what the discovery
// client calls; Builder.Build itself knows nothing of zones.
func Build(b Builder, endpoints []*Endpoint, opts BuildOptions) Picker {
	if len(endpoints) == 0 {
		return Empty()
	}
	if opts.Zone == "" {
		return b.Build(endpoints, opts)
	}
	var local, other []*Endpoint
	for _, ep := range endpoints {
		if ep.Zone == opts.Zone {
			local = append(local, ep)
		} else {
			other = append(other, ep)
		}
	}
	if len(local) == 0 || len(other) == 0 {
		return b.Build(endpoints, opts)
	}
	return &zonal{local: local, other: other, localPick: b.Build(local, opts), otherPick: b.Build(other, opts)}
}

// zonal is immutable; its endpoints' counters are what changes.
type zonal struct {
	local, other         []*Endpoint
	localPick, otherPick Picker
}

func (z *zonal) Pick(info PickInfo) (*Endpoint, error) {
	if z.localUsable() {
		return z.localPick.Pick(info)
	}
	return z.otherPick.Pick(info)
}

// LocalUsable reports whether p, a picker Build made, would pick in the
// caller's zone now (true for a picker without zone preference). For the
// admin view and tests.
func LocalUsable(p Picker) bool {
	z, ok := p.(*zonal)
	return !ok || z.localUsable()
}

func (z *zonal) localUsable() bool {
	now := Mono()
	up := false
	var inLocal int64
	for _, ep := range z.local {
		inLocal += ep.InFlight.Load()
		if up {
			continue // one usable endpoint is enough; only the sum is left
		}
		failing := ep.fails.Load() >= zoneMaxFailures && now-ep.rttAt.Load() < zoneRetryAfter
		up = !failing && ep.Headroom(now) >= zoneMinHeadroom
	}
	if !up {
		return false
	}
	var inOther int64
	for _, ep := range z.other {
		inOther += ep.InFlight.Load()
	}
	// mean(local) > factor·mean(other) + slack, without dividing.
	nl, no := int64(len(z.local)), int64(len(z.other))
	return inLocal*no <= (zoneSpillFactor*inOther+zoneSpillSlack*no)*nl
}
