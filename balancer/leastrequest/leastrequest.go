// Package leastrequest implements the "least_request" balancer with the power
// of two random choices: it samples two distinct endpoints and picks the one
// with fewer requests in flight (Endpoint.InFlight, which the proxy maintains),
// a tie going to either with equal probability. The sidecar's discovery client
// builds a picker per destination whenever its endpoint set changes, and the
// proxy calls Pick on every request.
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

func (builder) Build(endpoints []*balancer.Endpoint) balancer.Picker {
	if len(endpoints) == 0 {
		return balancer.Empty()
	}
	return picker(endpoints)
}

type picker []*balancer.Endpoint

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
	// a is the random one of the pair, so keeping it on a tie breaks ties
	// at random.
	if b.InFlight.Load() < a.InFlight.Load() {
		return b, nil
	}
	return a, nil
}
