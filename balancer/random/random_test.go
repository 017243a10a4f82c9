package random_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/balancertest"
	"github.com/weftmesh/weft/balancer/random"
)

func TestEmpty(t *testing.T) {
	for _, eps := range [][]*balancer.Endpoint{nil, {}} {
		if ep, err := balancertest.Build(t, random.Name, eps).Pick(balancer.PickInfo{}); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
			t.Fatalf("Pick on empty set = %v, %v; want nil, ErrNoEndpoints", ep, err)
		}
	}
}

// TestUniform checks every endpoint gets within ±10% of its fair share. With
// 10,000 expected picks per endpoint the standard deviation is under 100, so
// a ±1,000 band is more than 10σ: the test does not flake.
func TestUniform(t *testing.T) {
	const perEndpoint = 10_000
	for _, n := range []int{1, 3, 10} {
		t.Run(fmt.Sprintf("endpoints=%d", n), func(t *testing.T) {
			eps := balancertest.Endpoints(n)
			p := balancertest.Build(t, random.Name, eps)
			counts := map[*balancer.Endpoint]int{}
			for range n * perEndpoint {
				ep, err := p.Pick(balancer.PickInfo{})
				if err != nil {
					t.Fatal(err)
				}
				counts[ep]++
			}
			for _, ep := range eps {
				if c := counts[ep]; c < perEndpoint*9/10 || c > perEndpoint*11/10 {
					t.Errorf("%s picked %d times, want %d ±10%%", ep.ID, c, perEndpoint)
				}
			}
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	p := balancertest.Build(t, random.Name, balancertest.Endpoints(3))
	if a := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(balancer.PickInfo{}) }); a != 0 {
		t.Fatalf("Pick allocates %v times per call, want 0", a)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			p := balancertest.Build(b, random.Name, balancertest.Endpoints(n))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Pick(balancer.PickInfo{})
			}
		})
	}
}
