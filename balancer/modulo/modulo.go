// Package modulo implements the "modulo" balancer, classic modulo sharding:
// a request whose hash key hashes to h goes to endpoint h mod N of the
// ID-sorted endpoint set, and a request without a hash key goes to a random
// endpoint. It is cheap and perfectly even, but when N changes most keys move
// (about N/(N+1) of them when one endpoint is added), so prefer
// consistent_hash when key affinity must survive scaling. The sidecar's
// discovery client builds a picker per destination whenever its endpoint set
// changes, and the proxy calls Pick on every request.
package modulo

import (
	"math/rand/v2"

	"github.com/weftmesh/weft/balancer"
)

// Name is the name the algorithm is registered under.
const Name = "modulo"

func init() { balancer.Register(builder{}) }

type builder struct{}

var (
	_ balancer.Builder   = builder{}
	_ balancer.HashBased = builder{}
)

func (builder) Name() string { return Name }

// NeedsHashKey reports true: requests should carry a hash key.
func (builder) NeedsHashKey() bool { return true }

func (builder) Build(endpoints []*balancer.Endpoint, _ balancer.BuildOptions) balancer.Picker {
	if len(endpoints) == 0 {
		return balancer.Empty()
	}
	return picker(endpoints)
}

type picker []*balancer.Endpoint

// Pick returns endpoint info.Hash mod N, or a uniformly random endpoint when
// the request carried no hash key (info.HasHash is false).
func (p picker) Pick(info balancer.PickInfo) (*balancer.Endpoint, error) {
	if !info.HasHash {
		return p[rand.IntN(len(p))], nil
	}
	return p[info.Hash%uint64(len(p))], nil
}
