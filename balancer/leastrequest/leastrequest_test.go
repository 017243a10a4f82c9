package leastrequest_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

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

const ms = int64(time.Millisecond)

// TestLatencyAware: of three endpoints one answers 100 ms slower; whatever
// the fast ones hold in flight (up to the 6 callers of the test), it
// is never the cheaper of a pair, so it gets no picks.
func TestLatencyAware(t *testing.T) {
	eps := endpoints(0, 0, 0)
	now := balancer.Mono()
	eps[0].ObserveAt(now, time.Millisecond, false)
	eps[1].ObserveAt(now, 2*time.Millisecond, false)
	eps[2].ObserveAt(now, 101*time.Millisecond, false)
	p := balancertest.Build(t, leastrequest.Name, eps)
	rng := rand.New(rand.NewPCG(3, 4))
	got := map[string]int{}
	for range 10_000 {
		eps[0].InFlight.Store(rng.Int64N(6))
		eps[1].InFlight.Store(rng.Int64N(6))
		got[balancertest.PickID(t, p, balancer.PickInfo{})]++
	}
	if got[eps[2].ID] > 0 {
		t.Errorf("the slow endpoint got %d of 10000 picks, want 0: %v", got[eps[2].ID], got)
	}
	// Two equally fast endpoints share by in-flight counts, as before.
	if got[eps[0].ID] < 3000 || got[eps[1].ID] < 3000 {
		t.Errorf("the two fast endpoints should share the picks: %v", got)
	}
}

// TestPeakEWMA checks the estimate: a slower sample takes over at once, a
// faster one is blended in by elapsed time (1-e^-Δt/10s), and reading it
// decays it towards zero.
func TestPeakEWMA(t *testing.T) {
	ep := &balancer.Endpoint{ID: "a"}
	t0 := int64(1e12)
	approx := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > want*0.01 {
			t.Errorf("%s: %.3fms, want %.3fms", what, got/1e6, want/1e6)
		}
	}
	if got := ep.RTT(t0); got != 0 {
		t.Fatalf("RTT before any observation = %v, want 0", got)
	}
	ep.ObserveAt(t0, 10*time.Millisecond, false)
	approx("first sample", ep.RTT(t0), 10e6)
	ep.ObserveAt(t0, 100*time.Millisecond, false)
	approx("peak", ep.RTT(t0), 100e6)
	// 10 s later a 10 ms sample weighs 1-1/e.
	ep.ObserveAt(t0+10_000*ms, 10*time.Millisecond, false)
	want := 100e6/math.E + 10e6*(1-1/math.E)
	approx("blend after 10 s", ep.RTT(t0+10_000*ms), want)
	approx("read 20 s later", ep.RTT(t0+30_000*ms), want/math.E/math.E)
	// Samples close together barely move it down.
	ep.ObserveAt(t0+10_001*ms, time.Millisecond, false)
	if got := ep.RTT(t0 + 10_001*ms); got < want*0.99 {
		t.Errorf("a sample 1 ms after the last moved the estimate from %.2fms to %.2fms", want/1e6, got/1e6)
	}
}

// TestFailurePenalty: a failed attempt (a refused connection answers
// fast) must make an endpoint costlier, not cheaper.
func TestFailurePenalty(t *testing.T) {
	ep := &balancer.Endpoint{ID: "a"}
	now := int64(1e12)
	ep.ObserveAt(now, time.Millisecond, false)
	ep.ObserveAt(now, 100*time.Microsecond, true)
	if got := ep.RTT(now); got < float64(50*time.Millisecond) {
		t.Errorf("after a failed attempt the estimate is %.2fms, want ≥ 50ms", got/1e6)
	}
	if ep.Failures() != 1 {
		t.Errorf("Failures = %d, want 1", ep.Failures())
	}
	ep.ObserveAt(now, time.Millisecond, false)
	if ep.Failures() != 0 {
		t.Errorf("Failures = %d after a success, want 0", ep.Failures())
	}
}

// TestNewEndpoint: an endpoint with no answer yet gets one request at
// once, then none while that one is in flight, whatever its peers cost.
func TestNewEndpoint(t *testing.T) {
	now := balancer.Mono()
	old, fresh := &balancer.Endpoint{ID: "old"}, &balancer.Endpoint{ID: "new"}
	old.ObserveAt(now, 50*time.Millisecond, false)
	old.InFlight.Store(5)
	if c0, c1 := leastrequest.Cost(fresh, now), leastrequest.Cost(old, now); c0 >= c1 {
		t.Errorf("an idle new endpoint costs %g, a busy observed one %g: the new one should win", c0, c1)
	}
	fresh.InFlight.Store(1)
	if c0, c1 := leastrequest.Cost(fresh, now), leastrequest.Cost(old, now); c0 <= c1 {
		t.Errorf("a new endpoint with a request in flight and no answer costs %g, an observed one %g: it should lose", c0, c1)
	}
}

// TestSecondChance: an endpoint avoided for being slow is tried again once
// its estimate has decayed below its peers' cost, so it can show it
// recovered.
func TestSecondChance(t *testing.T) {
	eps := endpoints(2, 0)
	now := balancer.Mono()
	eps[0].ObserveAt(now, 2*time.Millisecond, false)
	eps[1].ObserveAt(now-60_000*ms, 200*time.Millisecond, false) // 60 s ago: 200ms·e^-6 ≈ 0.5ms
	p := balancertest.Build(t, leastrequest.Name, eps)
	if got := balancertest.PickID(t, p, balancer.PickInfo{}); got != eps[1].ID {
		t.Errorf("picked %s; the endpoint slow a minute ago should be tried again", got)
	}
}
