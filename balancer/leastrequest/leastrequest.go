// Package leastrequest implements the "least_request" balancer: the power of
// two random choices on a latency-aware cost, as Finagle's and Linkerd's
// peak-EWMA balancers do. It samples two distinct endpoints and picks the
// cheaper, where an endpoint's cost is its response-time estimate (a
// peak-EWMA with a 10 s decay, which the request pipeline feeds through
// Endpoint.Observe) times its requests in flight plus one. An instance far
// slower than its peers therefore gets almost nothing, while among equally
// fast ones this is least-request on in-flight counts. The sidecar's
// discovery client builds a picker per destination whenever its endpoint
// set changes, and the proxy calls Pick on every request.
package leastrequest

import (
	"math/rand/v2"

	"github.com/weftmesh/weft/balancer"
)

// Name is the name the algorithm is registered under.
const Name = "least_request"

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

// penalty stands for the response time of an endpoint with requests in
// flight and no answer yet (as Finagle's): a new instance gets a request at
// once, then hardly more until its first answer says how fast it is. It is
// above any estimate (those are capped at 30 s) and small enough that
// penalty × (in flight + 1) keeps the counts apart in a float64.
const penalty = 1e13

// Cost is an endpoint's cost as of now (a balancer.Mono instant): lower is
// better. Exported for the admin view and tests.
func Cost(ep *balancer.Endpoint, now int64) float64 {
	pending := float64(ep.InFlight.Load())
	rtt := ep.RTT(now)
	if rtt == 0 {
		if pending == 0 {
			return 0
		}
		return penalty * (pending + 1)
	}
	return rtt * (pending + 1)
}

func (p picker) Pick(balancer.PickInfo) (*balancer.Endpoint, error) {
	n := len(p)
	if n == 1 {
		return p[0], nil
	}
	// Two distinct indices, uniformly: j is drawn from the n-1 others.
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := p[i], p[j]
	now := balancer.Mono()
	// a is the random one of the pair, so keeping it on a tie breaks ties
	// at random.
	if Cost(b, now) < Cost(a, now) {
		return b, nil
	}
	return a, nil
}
