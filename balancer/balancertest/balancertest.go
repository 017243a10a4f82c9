// Package balancertest holds what the tests of every balancer algorithm
// share: endpoint sets, building a picker by name, keyed pick infos.
package balancertest

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/weftmesh/weft/balancer"
)

// Endpoints returns n endpoints with stable, sorted ids ep-000, ep-001, ….
func Endpoints(n int) []*balancer.Endpoint {
	eps := make([]*balancer.Endpoint, n)
	for i := range eps {
		eps[i] = &balancer.Endpoint{ID: fmt.Sprintf("ep-%03d", i), Address: fmt.Sprintf("10.0.0.%d:15006", i)}
	}
	return eps
}

// Build builds the named algorithm's picker over eps with default options.
func Build(t testing.TB, name string, eps []*balancer.Endpoint) balancer.Picker {
	t.Helper()
	return BuildWith(t, name, eps, balancer.BuildOptions{})
}

// BuildWith builds the named algorithm's picker over eps the way the
// discovery client does (balancer.Build, zones included).
func BuildWith(t testing.TB, name string, eps []*balancer.Endpoint, opts balancer.BuildOptions) balancer.Picker {
	t.Helper()
	b, err := balancer.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return balancer.Build(b, eps, opts)
}

// KeyInfo is the pick info of a request whose hash key is "user-<i>",
// hashed the way the sidecar hashes keys.
func KeyInfo(i int) balancer.PickInfo {
	return balancer.PickInfo{Hash: xxhash.Sum64String("user-" + strconv.Itoa(i)), HasHash: true}
}

// PickID picks once and returns the endpoint's id, failing on an error.
func PickID(t testing.TB, p balancer.Picker, info balancer.PickInfo) string {
	t.Helper()
	ep, err := p.Pick(info)
	if err != nil {
		t.Fatal(err)
	}
	return ep.ID
}
