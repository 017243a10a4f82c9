// Package consistenthash implements the "consistent_hash" balancer, a
// ketama-style ring hash: each endpoint owns 160 points on a 64-bit ring
// (xxhash of ID+"#"+i) and a request goes to the owner of the first point at
// or after its hash key's hash, so adding one endpoint to N moves only about
// 1/(N+1) of the keys, all of them to the new endpoint, and removing one moves
// only the keys it owned. Requests without a hash key start at a random
// point.
//
// Loads are bounded (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing
// with Bounded Loads", as in HAProxy and Envoy): with T requests in flight
// over N endpoints, an endpoint takes a request only while its in-flight
// count is below max(MinBound, ceil(c·(T+1)/N)), c being
// loadBalancer.hashBalanceFactor (default 1.25); otherwise the request walks
// on along the ring to the next endpoint that is. The floor MinBound is ours:
// at low load the plain bound is 1 or 2, and two requests for one key in
// flight at once (a page's parallel calls for one user) would already go to
// two endpoints, so that keys would stop being sticky exactly when no
// endpoint is anywhere near overloaded. Such an endpoint always exists, since not every endpoint
// can hold more than the mean. A key therefore stays on its endpoint as
// long as that endpoint is not overloaded, and a hot key spills over to the
// same next endpoints on every sidecar. The bound holds for each pick's
// view of the counters: picks racing on other goroutines may each see the
// same spare place, so it can be exceeded by at most the number of
// concurrent picks.
// The sidecar's discovery client builds a picker per destination whenever its
// endpoint set changes, and the proxy calls Pick on every request.
//
// A ring was chosen over Maglev because its guarantee on change is exact (a
// key moves only to an added endpoint or away from a removed one; Maglev
// reshuffles a little more), because the point count per endpoint is the
// natural place to honour Endpoint.Weight later, and because building it is
// one sort whereas a Maglev table needs a prime size of ~100×N filled by
// permutation. Pick is a binary search over the sorted points, O(log(160·N)),
// about 8–14 comparisons for 1–100 endpoints, plus one atomic load per
// endpoint for the bound, without allocation.
package consistenthash

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/weftmesh/weft/balancer"
)

// Name is the name the algorithm is registered under.
const Name = "consistent_hash"

// pointsPerEndpoint is the number of virtual nodes of each endpoint on the
// ring. 160 keeps each endpoint's share of the keys within a few percent of
// 1/N while a 100-endpoint ring stays at 16,000 points (256 KB).
const pointsPerEndpoint = 160

// MinBound is the least in-flight count at which an endpoint counts as
// overloaded.
const MinBound = 8

func init() { balancer.Register(builder{}) }

type builder struct{}

var (
	_ balancer.Builder   = builder{}
	_ balancer.HashBased = builder{}
)

func (builder) Name() string { return Name }

// NeedsHashKey reports true: requests should carry a hash key.
func (builder) NeedsHashKey() bool { return true }

func (builder) Build(endpoints []*balancer.Endpoint, opts balancer.BuildOptions) balancer.Picker {
	if len(endpoints) == 0 {
		return balancer.Empty()
	}
	type point struct {
		hash uint64
		ep   *balancer.Endpoint
	}
	points := make([]point, 0, len(endpoints)*pointsPerEndpoint)
	var buf []byte
	for _, ep := range endpoints {
		for i := range pointsPerEndpoint {
			buf = append(buf[:0], ep.ID...)
			buf = append(buf, '#')
			buf = strconv.AppendInt(buf, int64(i), 10)
			points = append(points, point{xxhash.Sum64(buf), ep})
		}
	}
	// Ties (vanishingly rare) are broken by ID so that every sidecar builds
	// the same ring from the same set.
	slices.SortFunc(points, func(a, b point) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return strings.Compare(a.ep.ID, b.ep.ID)
	})
	r := &ring{
		factor:    opts.BalanceFactor(),
		endpoints: endpoints,
		hashes:    make([]uint64, len(points)),
		owners:    make([]*balancer.Endpoint, len(points)),
	}
	for i, pt := range points {
		r.hashes[i] = pt.hash
		r.owners[i] = pt.ep
	}
	return r
}

// ring is immutable after Build. hashes is sorted and owners[i] owns
// hashes[i]; they are kept apart so the binary search touches only hashes.
type ring struct {
	factor    float64
	endpoints []*balancer.Endpoint
	hashes    []uint64
	owners    []*balancer.Endpoint
}

// Pick returns the owner of the first ring point at or after info.Hash,
// wrapping around, that is under the load bound; a request without a hash
// key (info.HasHash false) starts at a random point.
func (r *ring) Pick(info balancer.PickInfo) (*balancer.Endpoint, error) {
	n := len(r.endpoints)
	if n == 1 {
		return r.endpoints[0], nil
	}
	var lo int
	if info.HasHash {
		lo = r.search(info.Hash)
	} else {
		lo = rand.IntN(len(r.hashes))
	}
	// One atomic load per endpoint: a destination has tens of endpoints,
	// rarely more than a few hundred.
	var total int64
	for _, ep := range r.endpoints {
		total += ep.InFlight.Load()
	}
	bound := max(MinBound, int64(math.Ceil(r.factor*float64(total+1)/float64(n))))
	var last *balancer.Endpoint
	for i := range len(r.owners) {
		ep := r.owners[(lo+i)%len(r.owners)]
		if ep == last {
			continue
		}
		if ep.InFlight.Load() < bound {
			return ep, nil
		}
		last = ep
	}
	// Only when the counters moved under the walk.
	return r.owners[lo], nil
}

// search returns the index of the first point at or after h, wrapping.
func (r *ring) search(h uint64) int {
	lo, hi := 0, len(r.hashes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.hashes[m] < h {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(r.hashes) {
		lo = 0
	}
	return lo
}
