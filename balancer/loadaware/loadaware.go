// Package loadaware implements the "load_aware" balancer: callers weight
// instances by the headroom each instance's own sidecar reports on every
// response (balancer.LoadHeader: 1 - max(CPU, memory pressure) of the
// instance's app), so that an instance whose app is busy — with this
// mesh's traffic or anything else on its host — gets less, and gets its
// share back when it recovers. The discovery client builds a picker per
// destination whenever its endpoint set changes, and the proxy calls Pick on
// every request; the reports arrive through Endpoint.ReportLoad.
//
// Pick samples two distinct endpoints and chooses between them at random in
// proportion to their scores, score = w / (in flight + 1), where
// w = max(headroom, Floor)². Squaring makes a loaded instance lose traffic
// faster than linearly (half the headroom, a quarter of the weight); the
// floor keeps even a saturated instance at about 1% of picks next to
// healthy peers, so it keeps answering, and its reports say when it has
// recovered. A report older than balancer.LoadFresh decays towards neutral
// (full headroom), so stale news neither starves nor floods an instance.
// With no reports at all this is least-request on in-flight counts, with
// random tie-breaking.
package loadaware

import (
	"math/rand/v2"

	"github.com/weftmesh/weft/balancer"
)

// Name is the name the algorithm is registered under.
const Name = "load_aware"

// Floor is the least headroom a report counts as.
const Floor = 0.1

func init() { balancer.Register(builder{}) }

type builder struct{}

var _ balancer.Builder = builder{}

func (builder) Name() string { return Name }

func (builder) Build(endpoints []*balancer.Endpoint, _ balancer.BuildOptions) balancer.Picker {
	if len(endpoints) == 0 {
		return balancer.Empty()
	}
	return picker(endpoints)
}

type picker []*balancer.Endpoint

// Score is an endpoint's score as of now (a balancer.Mono instant): higher
// is better. Exported for the admin view and tests.
func Score(ep *balancer.Endpoint, now int64) float64 {
	h := max(ep.Headroom(now), Floor)
	return h * h / float64(ep.InFlight.Load()+1)
}

func (p picker) Pick(balancer.PickInfo) (*balancer.Endpoint, error) {
	n := len(p)
	if n == 1 {
		return p[0], nil
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := p[i], p[j]
	now := balancer.Mono()
	sa, sb := Score(a, now), Score(b, now)
	if rand.Float64()*(sa+sb) < sa {
		return a, nil
	}
	return b, nil
}
