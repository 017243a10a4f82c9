package balancer_test

import (
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/balancertest"
)

// zoned returns 4 endpoints: ep-000, ep-001 in zone a; ep-002, ep-003 in b.
func zoned() []*balancer.Endpoint {
	eps := balancertest.Endpoints(4)
	for i, ep := range eps {
		ep.Zone = map[bool]string{true: "a", false: "b"}[i < 2]
	}
	return eps
}

func zones(t *testing.T, p balancer.Picker, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		ep, err := p.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		got[ep.Zone]++
	}
	return got
}

// TestZonePreference: a caller in zone a sends everything to zone a while
// an endpoint there can take it, with any algorithm; it fails over to zone
// b when zone a's endpoints fail, report no headroom, or queue far more
// than zone b's, and comes back when they recover.
func TestZonePreference(t *testing.T) {
	for _, alg := range []string{"round_robin", "random", "least_request", "load_aware"} {
		t.Run(alg, func(t *testing.T) {
			eps := zoned()
			p := balancertest.BuildWith(t, alg, eps, balancer.BuildOptions{Zone: "a"})
			if got := zones(t, p, 200); got["a"] != 200 {
				t.Fatalf("caller in zone a: picks by zone %v, want all in a", got)
			}

			// Both local endpoints failing: over to b.
			for _, ep := range eps[:2] {
				for range 3 {
					ep.Observe(time.Millisecond, true)
				}
			}
			if got := zones(t, p, 200); got["b"] != 200 {
				t.Errorf("zone a's endpoints failing: picks by zone %v, want all in b", got)
			}
			eps[0].Observe(time.Millisecond, false) // one recovered
			if got := zones(t, p, 50); got["a"] != 50 {
				t.Errorf("one zone-a endpoint recovered: picks by zone %v, want all in a", got)
			}
			eps[1].Observe(time.Millisecond, false)

			// Saturated by their own reports.
			for _, ep := range eps[:2] {
				ep.ReportLoad([]byte("v=1;h=0.01;cpu=0.99"))
			}
			if got := zones(t, p, 100); got["b"] != 100 {
				t.Errorf("zone a reporting no headroom: picks by zone %v, want all in b", got)
			}
			for _, ep := range eps[:2] {
				ep.ReportLoad([]byte("v=1;h=0.9"))
			}

			// Queueing: 20 in flight each in a, 1 in b: spill.
			for i, ep := range eps {
				ep.InFlight.Store(map[bool]int64{true: 20, false: 1}[i < 2])
			}
			if balancer.LocalUsable(p) {
				t.Errorf("zone a holding 20 in flight per endpoint against 1 in b should spill over")
			}
			eps[0].InFlight.Store(5)
			eps[1].InFlight.Store(5)
			if !balancer.LocalUsable(p) {
				t.Errorf("zone a holding 5 in flight per endpoint against 1 in b should stay local")
			}
		})
	}
}

// TestZoneFallbacks: no local endpoint ready (none in the set), or no
// zone at all, means the plain algorithm over every endpoint.
func TestZoneFallbacks(t *testing.T) {
	eps := zoned()
	for _, tc := range []struct {
		name string
		eps  []*balancer.Endpoint
		zone string
	}{
		{"no endpoint in the caller's zone", eps, "c"},
		{"caller without a zone", eps, ""},
		{"every endpoint local", eps[:2], "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := balancertest.BuildWith(t, "round_robin", tc.eps, balancer.BuildOptions{Zone: tc.zone})
			seen := map[string]bool{}
			for range 2 * len(tc.eps) {
				seen[balancertest.PickID(t, p, balancer.PickInfo{})] = true
			}
			if len(seen) != len(tc.eps) {
				t.Errorf("picked %v of %d endpoints, want all", seen, len(tc.eps))
			}
		})
	}
}

// TestZoneFailingRetriedLater: local endpoints down for failures get a
// request again once they have had none for a while, or they could never
// show they recovered.
func TestZoneFailingRetriedLater(t *testing.T) {
	eps := zoned()
	p := balancertest.BuildWith(t, "round_robin", eps, balancer.BuildOptions{Zone: "a"})
	old := balancer.Mono() - int64(6*time.Second)
	for _, ep := range eps[:2] {
		for range 3 {
			ep.ObserveAt(old, time.Millisecond, true)
		}
	}
	if !balancer.LocalUsable(p) {
		t.Error("zone a failed 6 s ago and had no attempt since: it should be tried again")
	}
}

func TestZonePickDoesNotAllocate(t *testing.T) {
	p := balancertest.BuildWith(t, "least_request", zoned(), balancer.BuildOptions{Zone: "a"})
	if a := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(balancer.PickInfo{}) }); a != 0 {
		t.Fatalf("Pick allocates %v times per call, want 0", a)
	}
}
