package modulo_test

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/modulo"
)

func endpoints(n int) []*balancer.Endpoint {
	eps := make([]*balancer.Endpoint, n)
	for i := range eps {
		eps[i] = &balancer.Endpoint{ID: fmt.Sprintf("ep-%03d", i), Address: fmt.Sprintf("10.0.0.%d:15006", i)}
	}
	return eps
}

func build(t testing.TB, eps []*balancer.Endpoint) balancer.Picker {
	t.Helper()
	b, err := balancer.Get(modulo.Name)
	if err != nil {
		t.Fatal(err)
	}
	return b.Build(eps)
}

func keyInfo(i int) balancer.PickInfo {
	return balancer.PickInfo{Hash: xxhash.Sum64String("user-" + strconv.Itoa(i)), HasHash: true}
}

func pickID(t *testing.T, p balancer.Picker, info balancer.PickInfo) string {
	t.Helper()
	ep, err := p.Pick(info)
	if err != nil {
		t.Fatal(err)
	}
	return ep.ID
}

func TestEmpty(t *testing.T) {
	for _, eps := range [][]*balancer.Endpoint{nil, {}} {
		for _, info := range []balancer.PickInfo{{}, keyInfo(1)} {
			if ep, err := build(t, eps).Pick(info); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
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
			eps := endpoints(n)
			p := build(t, eps)
			rebuilt := build(t, endpoints(n)) // same IDs, new Endpoint values
			for i := range 1000 {
				info := keyInfo(i)
				want := eps[info.Hash%uint64(n)].ID
				for range 3 {
					if got := pickID(t, p, info); got != want {
						t.Fatalf("key %d: got %s, want %s", i, got, want)
					}
				}
				if got := pickID(t, rebuilt, info); got != want {
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
			before, after := build(t, endpoints(tc.from)), build(t, endpoints(tc.to))
			moved := 0
			for i := range keys {
				if pickID(t, before, keyInfo(i)) != pickID(t, after, keyInfo(i)) {
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
	eps := endpoints(n)
	p := build(t, eps)
	counts := map[string]int{}
	for range n * perEndpoint {
		counts[pickID(t, p, balancer.PickInfo{Hash: 42})]++ // Hash ignored without HasHash
	}
	for _, ep := range eps {
		if c := counts[ep.ID]; c < perEndpoint*9/10 || c > perEndpoint*11/10 {
			t.Errorf("%s picked %d times without a hash key, want %d ±10%%", ep.ID, c, perEndpoint)
		}
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	p := build(t, endpoints(3))
	for _, info := range []balancer.PickInfo{keyInfo(7), {}} {
		if a := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(info) }); a != 0 {
			t.Fatalf("Pick(%+v) allocates %v times per call, want 0", info, a)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			p := build(b, endpoints(n))
			b.ReportAllocs()
			var h uint64
			for b.Loop() {
				h += 0x9e3779b97f4a7c15
				_, _ = p.Pick(balancer.PickInfo{Hash: h, HasHash: true})
			}
		})
	}
}
