package random_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/random"
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
	b, err := balancer.Get(random.Name)
	if err != nil {
		t.Fatal(err)
	}
	return b.Build(eps)
}

func TestEmpty(t *testing.T) {
	for _, eps := range [][]*balancer.Endpoint{nil, {}} {
		if ep, err := build(t, eps).Pick(balancer.PickInfo{}); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
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
			eps := endpoints(n)
			p := build(t, eps)
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
	p := build(t, endpoints(3))
	if a := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(balancer.PickInfo{}) }); a != 0 {
		t.Fatalf("Pick allocates %v times per call, want 0", a)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			p := build(b, endpoints(n))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Pick(balancer.PickInfo{})
			}
		})
	}
}
