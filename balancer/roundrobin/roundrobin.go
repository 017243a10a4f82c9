// Package roundrobin implements the "round_robin" balancer: strict rotation
// over a destination's endpoints, each picker starting at a random offset so
// that many sidecars do not all hit the same endpoint first. The sidecar's
// discovery client builds a picker per destination whenever its endpoint set
// changes, and the proxy calls Pick on every request.
package roundrobin

import (
	"math/rand/v2"
	"sync/atomic"

	"github.com/weftmesh/weft/balancer"
)

// Name is the name the algorithm is registered under.
const Name = "round_robin"

func init() { balancer.Register(builder{}) }

type builder struct{}

var _ balancer.Builder = builder{}

func (builder) Name() string { return Name }

func (builder) Build(endpoints []*balancer.Endpoint, _ balancer.BuildOptions) balancer.Picker {
	if len(endpoints) == 0 {
		return balancer.Empty()
	}
	p := &picker{endpoints: endpoints}
	p.next.Store(rand.Uint64N(uint64(len(endpoints))))
	return p
}

// picker hands out endpoints in order. next is the only mutable state and is
// advanced atomically, so N*k picks give every endpoint exactly k, however
// many goroutines share the picker.
type picker struct {
	endpoints []*balancer.Endpoint
	next      atomic.Uint64
}

func (p *picker) Pick(balancer.PickInfo) (*balancer.Endpoint, error) {
	n := p.next.Add(1) - 1
	return p.endpoints[n%uint64(len(p.endpoints))], nil
}
