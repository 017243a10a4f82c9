package roundrobin_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/balancertest"
	"github.com/weftmesh/weft/balancer/roundrobin"
)

func TestEmpty(t *testing.T) {
	for _, eps := range [][]*balancer.Endpoint{nil, {}} {
		if ep, err := balancertest.Build(t, roundrobin.Name, eps).Pick(balancer.PickInfo{}); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
			t.Fatalf("Pick on empty set = %v, %v; want nil, ErrNoEndpoints", ep, err)
		}
	}
}

func TestExactDistribution(t *testing.T) {
	for _, tc := range []struct{ n, rounds int }{{1, 10}, {2, 7}, {3, 1000}, {10, 100}, {100, 3}} {
		t.Run(fmt.Sprintf("endpoints=%d", tc.n), func(t *testing.T) {
			eps := balancertest.Endpoints(tc.n)
			p := balancertest.Build(t, roundrobin.Name, eps)
			counts := map[*balancer.Endpoint]int{}
			var prev int = -1
			for range tc.n * tc.rounds {
				ep, err := p.Pick(balancer.PickInfo{})
				if err != nil {
					t.Fatal(err)
				}
				counts[ep]++
				idx := indexOf(eps, ep)
				if prev >= 0 && idx != (prev+1)%tc.n {
					t.Fatalf("picked %d after %d, want strict rotation", idx, prev)
				}
				prev = idx
			}
			for _, ep := range eps {
				if counts[ep] != tc.rounds {
					t.Errorf("%s picked %d times, want exactly %d", ep.ID, counts[ep], tc.rounds)
				}
			}
		})
	}
}

func TestExactDistributionConcurrent(t *testing.T) {
	const n, goroutines, perGoroutine = 7, 8, 700
	eps := balancertest.Endpoints(n)
	p := balancertest.Build(t, roundrobin.Name, eps)
	var mu sync.Mutex
	counts := map[*balancer.Endpoint]int{}
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			local := map[*balancer.Endpoint]int{}
			for range perGoroutine {
				ep, _ := p.Pick(balancer.PickInfo{})
				local[ep]++
			}
			mu.Lock()
			for ep, c := range local {
				counts[ep] += c
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, ep := range eps {
		if want := goroutines * perGoroutine / n; counts[ep] != want {
			t.Errorf("%s picked %d times, want exactly %d", ep.ID, counts[ep], want)
		}
	}
}

func TestRandomStart(t *testing.T) {
	eps := balancertest.Endpoints(3)
	first := map[*balancer.Endpoint]bool{}
	for range 100 {
		ep, _ := balancertest.Build(t, roundrobin.Name, eps).Pick(balancer.PickInfo{})
		first[ep] = true
	}
	// Every picker starting at the same endpoint has probability 3^-99.
	if len(first) < 2 {
		t.Fatalf("100 pickers all started at the same endpoint; want a random offset")
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	p := balancertest.Build(t, roundrobin.Name, balancertest.Endpoints(3))
	if a := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(balancer.PickInfo{}) }); a != 0 {
		t.Fatalf("Pick allocates %v times per call, want 0", a)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			p := balancertest.Build(b, roundrobin.Name, balancertest.Endpoints(n))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Pick(balancer.PickInfo{})
			}
		})
	}
}

func indexOf(eps []*balancer.Endpoint, ep *balancer.Endpoint) int {
	for i, e := range eps {
		if e == ep {
			return i
		}
	}
	return -1
}
