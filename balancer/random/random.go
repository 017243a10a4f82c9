// Package random implements the "random" balancer: every request goes to an
// endpoint chosen uniformly at random with the lock-free top-level functions
// of math/rand/v2. The sidecar's discovery client builds a picker per
// destination whenever its endpoint set changes, and the proxy calls Pick on
// every request.
package random

import (
	"math/rand/v2"

	"github.com/weftmesh/weft/balancer"
)

// Name is the name the algorithm is registered under.
const Name = "random"

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

func (p picker) Pick(balancer.PickInfo) (*balancer.Endpoint, error) {
	return p[rand.IntN(len(p))], nil
}
