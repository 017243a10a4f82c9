package loadaware_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/balancertest"
	"github.com/weftmesh/weft/balancer/loadaware"
)

func TestEmpty(t *testing.T) {
	if ep, err := balancertest.Build(t, loadaware.Name, nil).Pick(balancer.PickInfo{}); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
		t.Fatalf("Pick on empty set = %v, %v; want nil, ErrNoEndpoints", ep, err)
	}
}

// TestShares: 60,000 picks over three endpoints with the given reported
// headroom (-1: none) and nothing in flight; each endpoint's share must lie
// in [min, max].
func TestShares(t *testing.T) {
	const picks = 60_000
	for _, tc := range []struct {
		name     string
		headroom []float64
		min, max []float64
	}{
		{"no reports: uniform", []float64{-1, -1, -1}, []float64{0.3, 0.3, 0.3}, []float64{0.37, 0.37, 0.37}},
		{"equal reports: uniform", []float64{0.5, 0.5, 0.5}, []float64{0.3, 0.3, 0.3}, []float64{0.37, 0.37, 0.37}},
		// Saturated: at the floor, w = 0.01 against 0.9: about 2/3 · 0.01/0.91.
		{"one saturated", []float64{0, 0.95, 0.95}, []float64{0.002, 0.45, 0.45}, []float64{0.02, 0.55, 0.55}},
		// Half the headroom: a quarter of the weight.
		{"one at half", []float64{0.5, 1, 1}, []float64{0.08, 0.4, 0.4}, []float64{0.2, 0.48, 0.48}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := balancertest.Endpoints(3)
			for i, h := range tc.headroom {
				if h >= 0 {
					eps[i].ReportLoad(fmt.Appendf(nil, "v=1;h=%.3f", h))
				}
			}
			p := balancertest.Build(t, loadaware.Name, eps)
			counts := map[string]int{}
			for range picks {
				counts[balancertest.PickID(t, p, balancer.PickInfo{})]++
			}
			for i, ep := range eps {
				share := float64(counts[ep.ID]) / picks
				if share < tc.min[i] || share > tc.max[i] {
					t.Errorf("%s (headroom %.2f) got %.3f of picks, want [%.3f, %.3f]", ep.ID, tc.headroom[i], share, tc.min[i], tc.max[i])
				}
			}
		})
	}
}

// TestInFlightCounts: with equal headroom, an endpoint holding many
// requests gets fewer new ones.
func TestInFlightCounts(t *testing.T) {
	eps := balancertest.Endpoints(2)
	eps[0].InFlight.Store(9)
	p := balancertest.Build(t, loadaware.Name, eps)
	busy := 0
	for range 10_000 {
		if balancertest.PickID(t, p, balancer.PickInfo{}) == eps[0].ID {
			busy++
		}
	}
	// score 1/10 against 1/1: 1/11 of picks.
	if busy < 600 || busy > 1300 {
		t.Errorf("the endpoint with 9 in flight got %d of 10000 picks, want about 900", busy)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	eps := balancertest.Endpoints(3)
	eps[1].ReportLoad([]byte("v=1;h=0.3"))
	p := balancertest.Build(t, loadaware.Name, eps)
	if a := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(balancer.PickInfo{}) }); a != 0 {
		t.Fatalf("Pick allocates %v times per call, want 0", a)
	}
}

func BenchmarkPick(b *testing.B) {
	eps := balancertest.Endpoints(10)
	for i, ep := range eps {
		ep.ReportLoad(fmt.Appendf(nil, "v=1;h=0.%d", i))
	}
	p := balancertest.Build(b, loadaware.Name, eps)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = p.Pick(balancer.PickInfo{})
	}
}
