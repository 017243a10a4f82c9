package modulo_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/balancertest"
	"github.com/weftmesh/weft/balancer/modulo"
)

func TestEmpty(t *testing.T) {
	for _, eps := range [][]*balancer.Endpoint{nil, {}} {
		for _, info := range []balancer.PickInfo{{}, balancertest.KeyInfo(1)} {
			if ep, err := balancertest.Build(t, modulo.Name, eps).Pick(info); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
				t.Fatalf("Pick on empty set = %v, %v; want nil, ErrNoEndpoints", ep, err)
			}
		}
	}
}

func TestNeedsHashKey(t *testing.T) {
	if !balancer.NeedsHashKey(modulo.Name) {
		t.Fatal("NeedsHashKey(modulo) = false, want true")
	}
}

func TestSameKeySameEndpoint(t *testing.T) {
	for _, n := range []int{1, 3, 10} {
		t.Run(fmt.Sprintf("endpoints=%d", n), func(t *testing.T) {
			eps := balancertest.Endpoints(n)
			p := balancertest.Build(t, modulo.Name, eps)
			rebuilt := balancertest.Build(t, modulo.Name, balancertest.Endpoints(n)) // same IDs, new Endpoint values
			for i := range 1000 {
				info := balancertest.KeyInfo(i)
				want := eps[info.Hash%uint64(n)].ID
				for range 3 {
					if got := balancertest.PickID(t, p, info); got != want {
						t.Fatalf("key %d: got %s, want %s", i, got, want)
					}
				}
				if got := balancertest.PickID(t, rebuilt, info); got != want {
					t.Fatalf("key %d after rebuild: got %s, want %s", i, got, want)
				}
			}
		})
	}
}

// TestKeyMovement documents modulo's weakness: going from 3 to 4 endpoints
// moves every key whose hash mod 12 is not 0, 1 or 2, about 75% of them.
func TestKeyMovement(t *testing.T) {
	const keys = 10_000
	for _, tc := range []struct {
		from, to int
		minMoved float64
	}{
		{3, 4, 0.50},
		{4, 3, 0.50},
		{9, 10, 0.80},
	} {
		t.Run(fmt.Sprintf("%d->%d", tc.from, tc.to), func(t *testing.T) {
			before, after := balancertest.Build(t, modulo.Name, balancertest.Endpoints(tc.from)), balancertest.Build(t, modulo.Name, balancertest.Endpoints(tc.to))
			moved := 0
			for i := range keys {
				if balancertest.PickID(t, before, balancertest.KeyInfo(i)) != balancertest.PickID(t, after, balancertest.KeyInfo(i)) {
					moved++
				}
			}
			frac := float64(moved) / keys
			t.Logf("%d->%d endpoints: %d of %d keys moved (%.1f%%)", tc.from, tc.to, moved, keys, 100*frac)
			if frac < tc.minMoved {
				t.Errorf("moved %.1f%% of keys, modulo should move at least %.0f%%", 100*frac, 100*tc.minMoved)
			}
		})
	}
}

func TestNoHashFallsBackToRandom(t *testing.T) {
	const n, perEndpoint = 3, 10_000
	eps := balancertest.Endpoints(n)
	p := balancertest.Build(t, modulo.Name, eps)
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

func TestPickDoesNotAllocate(t *testing.T) {
	p := balancertest.Build(t, modulo.Name, balancertest.Endpoints(3))
	for _, info := range []balancer.PickInfo{balancertest.KeyInfo(7), {}} {
		if a := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(info) }); a != 0 {
			t.Fatalf("Pick(%+v) allocates %v times per call, want 0", info, a)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			p := balancertest.Build(b, modulo.Name, balancertest.Endpoints(n))
			b.ReportAllocs()
			var h uint64
			for b.Loop() {
				h += 0x9e3779b97f4a7c15
				_, _ = p.Pick(balancer.PickInfo{Hash: h, HasHash: true})
			}
		})
	}
}
