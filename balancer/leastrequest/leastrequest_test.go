package leastrequest_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/balancertest"
	"github.com/weftmesh/weft/balancer/leastrequest"
)

func endpoints(inFlight ...int64) []*balancer.Endpoint {
	eps := make([]*balancer.Endpoint, len(inFlight))
	for i, f := range inFlight {
		eps[i] = &balancer.Endpoint{ID: fmt.Sprintf("ep-%03d", i), Address: fmt.Sprintf("10.0.0.%d:15006", i)}
		eps[i].InFlight.Store(f)
	}
	return eps
}

func TestEmpty(t *testing.T) {
	for _, eps := range [][]*balancer.Endpoint{nil, {}} {
		if ep, err := balancertest.Build(t, leastrequest.Name, eps).Pick(balancer.PickInfo{}); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
			t.Fatalf("Pick on empty set = %v, %v; want nil, ErrNoEndpoints", ep, err)
		}
	}
}

// TestShares runs 30,000 picks per case and checks each endpoint's share of
// them against [min, max]. Expected shares follow from two-choice sampling:
// an endpoint wins when it is in the sampled pair (2/n) and the other one is
// busier, or ties and it wins the coin toss.
func TestShares(t *testing.T) {
	const picks = 30_000
	for _, tc := range []struct {
		name     string
		inFlight []int64
		min, max []float64 // per endpoint
	}{
		{"single busy endpoint", []int64{50}, []float64{1}, []float64{1}},
		{"two: always the idler", []int64{1, 5}, []float64{1, 0}, []float64{1, 0}},
		// The idle one wins whenever sampled: 2/3 of picks.
		{"one idle two busy", []int64{10, 0, 10}, []float64{0.1, 0.6, 0.1}, []float64{0.2, 0.73, 0.2}},
		// All tied: uniform, 1/3 each.
		{"ties are random", []int64{3, 3, 3}, []float64{0.3, 0.3, 0.3}, []float64{0.37, 0.37, 0.37}},
		// The busiest is never picked: it loses to whichever it is paired with.
		{"busiest never", []int64{0, 1, 2, 9}, []float64{0.45, 0.28, 0.12, 0}, []float64{0.55, 0.38, 0.22, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := endpoints(tc.inFlight...)
			p := balancertest.Build(t, leastrequest.Name, eps)
			counts := map[*balancer.Endpoint]int{}
			for range picks {
				ep, err := p.Pick(balancer.PickInfo{})
				if err != nil {
					t.Fatal(err)
				}
				counts[ep]++
			}
			for i, ep := range eps {
				share := float64(counts[ep]) / picks
				if share < tc.min[i] || share > tc.max[i] {
					t.Errorf("%s (in flight %d) got %.3f of picks, want [%.2f, %.2f]",
						ep.ID, tc.inFlight[i], share, tc.min[i], tc.max[i])
				}
			}
		})
	}
}

// TestConcurrentInFlight exercises Pick while the proxy's counters change
// under it, for the race detector.
func TestConcurrentInFlight(t *testing.T) {
	eps := endpoints(0, 0, 0, 0)
	p := balancertest.Build(t, leastrequest.Name, eps)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				ep, err := p.Pick(balancer.PickInfo{})
				if err != nil {
					t.Error(err)
					return
				}
				ep.InFlight.Add(1)
				ep.InFlight.Add(-1)
			}
		})
	}
	wg.Wait()
	for _, ep := range eps {
		if f := ep.InFlight.Load(); f != 0 {
			t.Errorf("%s InFlight = %d after all requests finished", ep.ID, f)
		}
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, eps := range [][]*balancer.Endpoint{endpoints(4), endpoints(0, 1, 2)} {
		p := balancertest.Build(t, leastrequest.Name, eps)
		if a := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(balancer.PickInfo{}) }); a != 0 {
			t.Fatalf("Pick allocates %v times per call, want 0", a)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			inFlight := make([]int64, n)
			for i := range inFlight {
				inFlight[i] = int64(i % 7)
			}
			p := balancertest.Build(b, leastrequest.Name, endpoints(inFlight...))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Pick(balancer.PickInfo{})
			}
		})
	}
}
