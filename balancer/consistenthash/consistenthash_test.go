package consistenthash_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/balancertest"
	"github.com/weftmesh/weft/balancer/consistenthash"
)

func TestEmpty(t *testing.T) {
	for _, eps := range [][]*balancer.Endpoint{nil, {}} {
		for _, info := range []balancer.PickInfo{{}, balancertest.KeyInfo(1)} {
			if ep, err := balancertest.Build(t, consistenthash.Name, eps).Pick(info); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
				t.Fatalf("Pick on empty set = %v, %v; want nil, ErrNoEndpoints", ep, err)
			}
		}
	}
}

func TestNeedsHashKey(t *testing.T) {
	if !balancer.NeedsHashKey(consistenthash.Name) {
		t.Fatal("NeedsHashKey(consistent_hash) = false, want true")
	}
}

func TestSameKeySameEndpoint(t *testing.T) {
	for _, n := range []int{1, 3, 10} {
		t.Run(fmt.Sprintf("endpoints=%d", n), func(t *testing.T) {
			p := balancertest.Build(t, consistenthash.Name, balancertest.Endpoints(n))
			rebuilt := balancertest.Build(t, consistenthash.Name, balancertest.Endpoints(n)) // same IDs, new Endpoint values: another sidecar
			for i := range 1000 {
				want := balancertest.PickID(t, p, balancertest.KeyInfo(i))
				for range 3 {
					if got := balancertest.PickID(t, p, balancertest.KeyInfo(i)); got != want {
						t.Fatalf("key %d: got %s, then %s", i, want, got)
					}
				}
				if got := balancertest.PickID(t, rebuilt, balancertest.KeyInfo(i)); got != want {
					t.Fatalf("key %d: %s on one ring, %s on a ring built from the same IDs", i, want, got)
				}
			}
		})
	}
}

// TestKeyMovement checks the point of consistent hashing: adding one endpoint
// to N moves about 1/(N+1) of the keys, and only to the new endpoint;
// removing one moves only the keys it owned.
func TestKeyMovement(t *testing.T) {
	const keys = 10_000
	for _, tc := range []struct {
		from, to int
		maxMoved float64
	}{
		{3, 4, 0.30},    // ideal 25%
		{4, 3, 0.30},    // ideal 25%
		{9, 10, 0.13},   // ideal 10%
		{99, 100, 0.02}, // ideal 1%
	} {
		t.Run(fmt.Sprintf("%d->%d", tc.from, tc.to), func(t *testing.T) {
			// balancertest.Endpoints(n) is a prefix of balancertest.Endpoints(n+1), so from->to adds
			// or removes exactly the last endpoint.
			before, after := balancertest.Build(t, consistenthash.Name, balancertest.Endpoints(tc.from)), balancertest.Build(t, consistenthash.Name, balancertest.Endpoints(tc.to))
			changed := fmt.Sprintf("ep-%03d", max(tc.from, tc.to)-1)
			moved := 0
			for i := range keys {
				b, a := balancertest.PickID(t, before, balancertest.KeyInfo(i)), balancertest.PickID(t, after, balancertest.KeyInfo(i))
				if b == a {
					continue
				}
				moved++
				if tc.to > tc.from && a != changed {
					t.Fatalf("key %d moved %s->%s; keys may only move to the added %s", i, b, a, changed)
				}
				if tc.to < tc.from && b != changed {
					t.Fatalf("key %d moved %s->%s; only keys of the removed %s may move", i, b, a, changed)
				}
			}
			frac := float64(moved) / keys
			t.Logf("%d->%d endpoints: %d of %d keys moved (%.1f%%, ideal %.1f%%)",
				tc.from, tc.to, moved, keys, 100*frac, 100/float64(max(tc.from, tc.to)))
			if frac > tc.maxMoved {
				t.Errorf("moved %.1f%% of keys, want at most %.0f%%", 100*frac, 100*tc.maxMoved)
			}
		})
	}
}

// TestBalance checks the virtual nodes spread keys evenly enough: every
// endpoint gets within ±30% of its fair share. The ring and the keys are
// deterministic, so this cannot flake.
func TestBalance(t *testing.T) {
	const keys = 100_000
	for _, n := range []int{3, 10, 100} {
		t.Run(fmt.Sprintf("endpoints=%d", n), func(t *testing.T) {
			eps := balancertest.Endpoints(n)
			p := balancertest.Build(t, consistenthash.Name, eps)
			counts := map[string]int{}
			for i := range keys {
				counts[balancertest.PickID(t, p, balancertest.KeyInfo(i))]++
			}
			fair := keys / n
			lo, hi := keys, 0
			for _, ep := range eps {
				c := counts[ep.ID]
				lo, hi = min(lo, c), max(hi, c)
				if c < fair*7/10 || c > fair*13/10 {
					t.Errorf("%s owns %d keys, want %d ±30%%", ep.ID, c, fair)
				}
			}
			t.Logf("%d endpoints: keys per endpoint %d..%d (fair %d)", n, lo, hi, fair)
		})
	}
}

func TestNoHashFallsBackToRandom(t *testing.T) {
	const n, perEndpoint = 3, 10_000
	eps := balancertest.Endpoints(n)
	p := balancertest.Build(t, consistenthash.Name, eps)
	counts := map[string]int{}
	for range n * perEndpoint {
		counts[balancertest.PickID(t, p, balancer.PickInfo{Hash: 42})]++ // Hash ignored without HasHash
	}
	for _, ep := range eps {
		if c := counts[ep.ID]; c < perEndpoint*9/10 || c > perEndpoint*11/10 {
			t.Errorf("%s picked %d times without a hash key, want %d ±10%%", ep.ID, c, perEndpoint)
		}
	}
}

func TestWrapAround(t *testing.T) {
	// The largest hash lies after every ring point (bar a point at exactly
	// MaxUint64) and must wrap to the owner of the first one, as hash 0 does.
	p := balancertest.Build(t, consistenthash.Name, balancertest.Endpoints(5))
	top := balancertest.PickID(t, p, balancer.PickInfo{Hash: ^uint64(0), HasHash: true})
	bottom := balancertest.PickID(t, p, balancer.PickInfo{Hash: 0, HasHash: true})
	if top != bottom {
		t.Fatalf("hash MaxUint64 -> %s, hash 0 -> %s; want the ring to wrap", top, bottom)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	p := balancertest.Build(t, consistenthash.Name, balancertest.Endpoints(3))
	for _, info := range []balancer.PickInfo{balancertest.KeyInfo(7), {}} {
		if a := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(info) }); a != 0 {
			t.Fatalf("Pick(%+v) allocates %v times per call, want 0", info, a)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			p := balancertest.Build(b, consistenthash.Name, balancertest.Endpoints(n))
			b.ReportAllocs()
			var h uint64
			for b.Loop() {
				h += 0x9e3779b97f4a7c15
				_, _ = p.Pick(balancer.PickInfo{Hash: h, HasHash: true})
			}
		})
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			eps := balancertest.Endpoints(n)
			bld, _ := balancer.Get(consistenthash.Name)
			b.ReportAllocs()
			for b.Loop() {
				bld.Build(eps, balancer.BuildOptions{})
			}
		})
	}
}

// bound is the bounded-load cap for a pick: max(MinBound, ceil(c·(T+1)/N)).
func bound(c float64, eps []*balancer.Endpoint) int64 {
	var total int64
	for _, ep := range eps {
		total += ep.InFlight.Load()
	}
	return max(consistenthash.MinBound, int64(math.Ceil(c*float64(total+1)/float64(len(eps)))))
}

// TestBoundedLoad simulates many requests in flight at once, half of them
// for one hot key, and checks before every pick that the chosen endpoint
// stays within max(MinBound, ceil(c·(T+1)/N)) once it takes the request,
// for several c.
// Requests finish in random order; the simulation is seeded, so it cannot
// flake.
func TestBoundedLoad(t *testing.T) {
	for _, c := range []float64{1, 1.25, 2} {
		t.Run(fmt.Sprintf("c=%.2f", c), func(t *testing.T) {
			eps := balancertest.Endpoints(10)
			p := balancertest.BuildWith(t, consistenthash.Name, eps, balancer.BuildOptions{HashBalanceFactor: c})
			rng := rand.New(rand.NewPCG(1, 2))
			var inFlight []*balancer.Endpoint
			hotOwners := map[string]bool{}
			maxSeen := 0.0
			for step := range 200_000 {
				// Keep between 0 and ~400 requests in flight, drifting.
				if len(inFlight) > 0 && (rng.IntN(2) == 0 || len(inFlight) > 400) {
					k := rng.IntN(len(inFlight))
					inFlight[k].InFlight.Add(-1)
					inFlight[k] = inFlight[len(inFlight)-1]
					inFlight = inFlight[:len(inFlight)-1]
					continue
				}
				info := balancertest.KeyInfo(rng.IntN(1000))
				hot := rng.IntN(2) == 0
				if hot {
					info = balancertest.KeyInfo(-1)
				}
				limit := bound(c, eps)
				ep, err := p.Pick(info)
				if err != nil {
					t.Fatal(err)
				}
				if got := ep.InFlight.Add(1); got > limit {
					t.Fatalf("step %d: %s now holds %d in flight, over the bound max(%d, ceil(%.2f·(%d+1)/10)) = %d",
						step, ep.ID, got, consistenthash.MinBound, c, len(inFlight), limit)
				}
				inFlight = append(inFlight, ep)
				if hot {
					hotOwners[ep.ID] = true
				}
				var most int64
				for _, e := range eps {
					most = max(most, e.InFlight.Load())
				}
				if n := len(inFlight); n >= 100 {
					maxSeen = max(maxSeen, float64(most)*10/float64(n))
				}
			}
			t.Logf("c=%.2f: the busiest endpoint held at most %.2f× the mean with ≥ 100 in flight (the bound holds when a request is placed; completions elsewhere lower the mean afterwards); the hot key used %d endpoints", c, maxSeen, len(hotOwners))
			if len(hotOwners) < 2 {
				t.Errorf("the hot key (half of all requests) stayed on %v: it must overflow to the next endpoints", hotOwners)
			}
		})
	}
}

// TestStickyUnderBalancedLoad: while no endpoint is over the bound, every
// key goes where the plain ring puts it; when its owner is overloaded, it
// moves to the same next endpoint on every sidecar. Below MinBound in
// flight, nothing is overloaded: two concurrent requests for one key stay
// together.
func TestStickyUnderBalancedLoad(t *testing.T) {
	eps := balancertest.Endpoints(10)
	p := balancertest.Build(t, consistenthash.Name, eps)
	idle := map[int]string{}
	for i := range 500 {
		idle[i] = balancertest.PickID(t, p, balancertest.KeyInfo(i))
	}
	owner := eps[0]
	for _, ep := range eps {
		if ep.ID == idle[0] {
			owner = ep
		}
	}
	owner.InFlight.Store(consistenthash.MinBound - 1) // its other requests, all for key 0
	if got := balancertest.PickID(t, p, balancertest.KeyInfo(0)); got != idle[0] {
		t.Fatalf("key 0 with %d of its requests in flight (and nothing else) moved %s→%s; below MinBound it must stay", consistenthash.MinBound-1, idle[0], got)
	}
	owner.InFlight.Store(0)
	for _, ep := range eps {
		ep.InFlight.Store(7) // T=70, bound ceil(1.25·71/10) = 9
	}
	for i := range 500 {
		if got := balancertest.PickID(t, p, balancertest.KeyInfo(i)); got != idle[i] {
			t.Fatalf("key %d: %s under balanced load, %s when idle; it must stay", i, got, idle[i])
		}
	}
	eps[3].InFlight.Store(10) // T=73: ceil(1.25·74/10) = ceil(9.25) = 10: at the bound
	other := balancertest.Endpoints(10)
	for _, ep := range other {
		ep.InFlight.Store(7)
	}
	other[3].InFlight.Store(10)
	q := balancertest.Build(t, consistenthash.Name, other) // another sidecar, same view
	moved := 0
	for i := range 500 {
		got := balancertest.PickID(t, p, balancertest.KeyInfo(i))
		if idle[i] != eps[3].ID {
			if got != idle[i] {
				t.Fatalf("key %d moved %s→%s, though only %s is overloaded", i, idle[i], got, eps[3].ID)
			}
			continue
		}
		moved++
		if got == eps[3].ID {
			t.Fatalf("key %d stayed on %s, which is at the bound", i, got)
		}
		if again := balancertest.PickID(t, q, balancertest.KeyInfo(i)); again != got {
			t.Fatalf("key %d overflowed to %s on one sidecar and %s on another", i, got, again)
		}
	}
	if moved == 0 {
		t.Fatal("no key was owned by the overloaded endpoint; the test proves nothing")
	}
}

// TestBoundedLoadConcurrent has goroutines pick and hold requests at once.
// Picks racing each other may all see the same spare place, and the total
// moves while a pick reads it, so the bound seen before a pick can be
// exceeded by about the number of concurrent pickers (twice it is asserted);
// the race detector checks the counters' use.
func TestBoundedLoadConcurrent(t *testing.T) {
	const workers = 8
	eps := balancertest.Endpoints(5)
	p := balancertest.Build(t, consistenthash.Name, eps)
	var wg sync.WaitGroup
	var over atomic.Int64
	for w := range workers {
		wg.Go(func() {
			held := make([]*balancer.Endpoint, 0, 16)
			for i := range 3000 {
				limit := bound(balancer.DefaultHashBalanceFactor, eps)
				ep, err := p.Pick(balancertest.KeyInfo((w * i) % 7)) // few keys: heavy overflow
				if err != nil {
					t.Error(err)
					return
				}
				if got := ep.InFlight.Add(1); got > limit+2*workers {
					over.Add(1)
				}
				held = append(held, ep)
				if len(held) == cap(held) {
					for _, h := range held {
						h.InFlight.Add(-1)
					}
					held = held[:0]
				}
			}
			for _, h := range held {
				h.InFlight.Add(-1)
			}
		})
	}
	wg.Wait()
	if n := over.Load(); n > 0 {
		t.Errorf("%d picks put an endpoint over the bound plus twice the %d concurrent pickers", n, workers)
	}
	for _, ep := range eps {
		if f := ep.InFlight.Load(); f != 0 {
			t.Errorf("%s InFlight = %d after all requests finished", ep.ID, f)
		}
	}
}
