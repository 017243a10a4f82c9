package aggregator

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/telemetry/metrics"
)

// sidecars are real recorders behind real /metrics endpoints.
type sidecars struct {
	mu      sync.Mutex
	targets []Target
	recs    map[string]*metrics.Recorder
}

func newSidecars(t *testing.T, names ...string) *sidecars {
	s := &sidecars{recs: map[string]*metrics.Recorder{}}
	for _, n := range names {
		s.add(t, n)
	}
	return s
}

func (s *sidecars) add(t *testing.T, name string) *metrics.Recorder {
	r := metrics.New(metrics.Options{})
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(srv.Close)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.targets = append(s.targets, Target{Service: strings.Split(name, "-")[0], Instance: name, Admin: strings.TrimPrefix(srv.URL, "http://")})
	s.recs[name] = r
	return r
}

func (s *sidecars) list() []Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Target(nil), s.targets...)
}

func newAgg(s *sidecars, countFromZero bool) *Aggregator {
	a := New(Config{Targets: s.list, Interval: time.Second})
	if countFromZero {
		a.started = time.Unix(0, 0) // every sidecar is "newer" than the aggregator
	}
	return a
}

func TestDeltasAndViews(t *testing.T) {
	sc := newSidecars(t, "frontend-1", "orders-1")
	a := newAgg(sc, true)
	fe, or := sc.recs["frontend-1"], sc.recs["orders-1"]
	for i := range 100 {
		code := 200
		if i%10 == 0 {
			code = 503
		}
		fe.Request(metrics.Client, "frontend", "orders", code, "", 2*time.Millisecond, 0)
		or.Request(metrics.Server, "frontend", "orders", code, "", time.Millisecond, 0)
	}
	a.Scrape(context.Background())
	st := a.Stats(time.Minute)
	if len(st.Edges) != 1 || len(st.Services) != 1 {
		t.Fatalf("stats %+v", st)
	}
	e := st.Edges[0]
	if e.Source != "frontend" || e.Destination != "orders" || e.Client == nil || e.Server == nil {
		t.Fatalf("edge %+v", e)
	}
	if e.Client.Requests != 100 || e.Server.Requests != 100 {
		t.Fatalf("requests client %v server %v, want 100 each", e.Client.Requests, e.Server.Requests)
	}
	if math.Abs(e.Client.SuccessRate-0.9) > 1e-9 {
		t.Fatalf("success %v, want 0.9", e.Client.SuccessRate)
	}
	if !(e.Server.P50Ms <= e.Client.P50Ms && e.Client.P50Ms > 1 && e.Client.P50Ms <= 2.5 && e.Server.P99Ms <= 1) {
		t.Fatalf("quantiles client %+v server %+v", e.Client, e.Server)
	}
	// A second round adds only what happened since.
	fe.Request(metrics.Client, "frontend", "orders", 200, "", 2*time.Millisecond, 0)
	a.Scrape(context.Background())
	if got := a.Stats(time.Minute).Edges[0].Client.Requests; got != 101 {
		t.Fatalf("after one more request: %v, want 101", got)
	}
	top := a.Topology(time.Minute)
	if len(top.Edges) != 1 || top.Edges[0].Reporter != "client" || len(top.Services) != 2 {
		t.Fatalf("topology %+v", top)
	}
}

func TestOlderSidecarIsBaseline(t *testing.T) {
	sc := newSidecars(t, "orders-1")
	for range 50 {
		sc.recs["orders-1"].Request(metrics.Server, "a", "orders", 200, "", time.Millisecond, 0)
	}
	a := newAgg(sc, false)
	a.started = time.Now().Add(time.Minute) // the sidecar (this test process) started well before
	a.Scrape(context.Background())
	if st := a.Stats(time.Minute); len(st.Edges) != 0 {
		t.Fatalf("history before the aggregator counted: %+v", st.Edges)
	}
	sc.recs["orders-1"].Request(metrics.Server, "a", "orders", 200, "", time.Millisecond, 0)
	a.Scrape(context.Background())
	if got := a.Stats(time.Minute).Edges[0].Server.Requests; got != 1 {
		t.Fatalf("requests %v, want 1", got)
	}
}

func TestCounterReset(t *testing.T) {
	prev := &sample{requests: 100, count: 100}
	cur := &sample{requests: 5, count: 5}
	if d := sub(cur, prev); d.requests != 5 {
		t.Fatalf("after a restart the delta is %v, want 5", d.requests)
	}
}

func TestScrapeFailuresCounted(t *testing.T) {
	sc := newSidecars(t, "orders-1")
	sc.targets = append(sc.targets, Target{Service: "x", Instance: "x-1", Admin: "127.0.0.1:1"}, Target{Service: "y", Instance: "y-1"})
	a := newAgg(sc, true)
	a.Scrape(context.Background())
	st := a.Stats(time.Minute)
	if st.Scrape.Targets != 3 || st.Scrape.Failed != 2 {
		t.Fatalf("scrape status %+v, want 3 targets 2 failed", st.Scrape)
	}
}

func TestKeysBounded(t *testing.T) {
	sc := newSidecars(t, "orders-1")
	r := sc.recs["orders-1"]
	for i := range 300 {
		r.Request(metrics.Server, fmt.Sprintf("caller-%d", i), "orders", 200, "", time.Millisecond, 0)
	}
	a := New(Config{Targets: sc.list, Interval: time.Second, MaxKeys: 50})
	a.started = time.Unix(0, 0)
	a.Scrape(context.Background())
	st := a.Stats(time.Minute)
	if len(st.Edges) > 51 {
		t.Fatalf("%d edges kept, want at most 51", len(st.Edges))
	}
}

func TestQuantile(t *testing.T) {
	var s sample
	// 100 observations: 50 in (0.5ms, 1ms], 50 in (5ms, 10ms].
	for i, b := range metrics.DurationBuckets {
		switch {
		case b >= 0.01:
			s.buckets[i] = 100
		case b >= 0.001:
			s.buckets[i] = 50
		}
	}
	s.count = 100
	tests := []struct{ q, lo, hi float64 }{
		{0.25, 0.0005, 0.001},
		{0.5, 0.0009, 0.0011},
		{0.99, 0.005, 0.01},
	}
	for _, tt := range tests {
		if got := quantile(tt.q, &s); got < tt.lo || got > tt.hi {
			t.Errorf("q%v = %v, want in [%v, %v]", tt.q, got, tt.lo, tt.hi)
		}
	}
	if quantile(0.5, &sample{}) != 0 {
		t.Error("quantile of nothing is not 0")
	}
}

func TestRunStops(t *testing.T) {
	a := New(Config{Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestFailedScrapesKeepBaseline: a sidecar that cannot be scraped for a
// while is neither forgotten nor, when it answers again, counted twice.
func TestFailedScrapesKeepBaseline(t *testing.T) {
	r := metrics.New(metrics.Options{})
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		r.Handler().ServeHTTP(w, req)
	}))
	defer srv.Close()
	targets := func() []Target {
		return []Target{{Service: "orders", Instance: "orders-1", Admin: strings.TrimPrefix(srv.URL, "http://")}}
	}
	a := New(Config{Targets: targets, Interval: time.Millisecond, Retain: time.Minute, Client: &http.Client{Timeout: 5 * time.Second}})
	a.started = time.Unix(0, 0)
	for range 10 {
		r.Request(metrics.Server, "a", "orders", 200, "", time.Millisecond, 0)
	}
	a.Scrape(context.Background())
	failing.Store(true)
	for range 20 {
		time.Sleep(time.Millisecond)
		a.Scrape(context.Background())
	}
	failing.Store(false)
	r.Request(metrics.Server, "a", "orders", 200, "", time.Millisecond, 0)
	a.Scrape(context.Background())
	if got := a.Stats(time.Minute).Edges[0].Server.Requests; got != 11 {
		t.Fatalf("requests %v after the outage, want 11", got)
	}
}

// TestSeries: one point per scrape round, oldest first, each with only
// that interval's requests, per reporter, and only the asked service's.
func TestSeries(t *testing.T) {
	sc := newSidecars(t, "frontend-1", "orders-1")
	a := newAgg(sc, true)
	fe, or := sc.recs["frontend-1"], sc.recs["orders-1"]
	for round, n := range []int{10, 0, 30} {
		for i := range n {
			code := 200
			if round == 2 && i%3 == 0 {
				code = 500
			}
			fe.Request(metrics.Client, "frontend", "orders", code, "", 2*time.Millisecond, 0)
			or.Request(metrics.Server, "frontend", "orders", code, "", time.Millisecond, 0)
		}
		or.Request(metrics.Client, "orders", "inventory", 200, "", time.Millisecond, 0)
		time.Sleep(5 * time.Millisecond)
		a.Scrape(context.Background())
	}
	s := a.Series("orders", time.Minute)
	if len(s.Points) != 3 {
		t.Fatalf("%d points, want 3: %+v", len(s.Points), s.Points)
	}
	for i, p := range s.Points {
		if i > 0 && !p.At.After(s.Points[i-1].At) {
			t.Errorf("point %d at %v is not after point %d", i, p.At, i-1)
		}
		if p.Seconds <= 0 {
			t.Errorf("point %d covers %vs", i, p.Seconds)
		}
	}
	if p := s.Points[0]; p.Client == nil || p.Client.Requests != 10 || p.Server == nil || p.Server.Requests != 10 {
		t.Errorf("point 0: client %+v server %+v, want 10 each", p.Client, p.Server)
	}
	if p := s.Points[1]; p.Client != nil || p.Server != nil {
		t.Errorf("point 1 (no request to orders): client %+v server %+v, want none", p.Client, p.Server)
	}
	p := s.Points[2]
	if p.Client == nil || p.Client.Requests != 30 || math.Abs(p.Client.SuccessRate-0.6666666) > 1e-3 {
		t.Fatalf("point 2: client %+v, want 30 requests, success 2/3", p.Client)
	}
	if want := 30 / p.Seconds; math.Abs(p.Client.RPS-want) > 1e-9 {
		t.Errorf("point 2: rps %v, want %v", p.Client.RPS, want)
	}
	if p.Server.P50Ms > p.Client.P50Ms {
		t.Errorf("point 2: server p50 %v above client p50 %v", p.Server.P50Ms, p.Client.P50Ms)
	}
	if got := a.Series("inventory", time.Minute); len(got.Points) != 3 || got.Points[1].Client == nil || got.Points[1].Client.Requests != 1 {
		t.Errorf("inventory series %+v", got.Points)
	}
	if got := a.Series("nobody", time.Minute); len(got.Points) != 3 || got.Points[0].Client != nil {
		t.Errorf("series of an unknown service: %+v", got.Points)
	}
}

// TestEjections: what callers' sidecars export as ejected shows per
// destination service in Stats and Ejections, with reason and caller, and
// goes once they re-admit the instance or stop being scraped.
func TestEjections(t *testing.T) {
	sc := newSidecars(t, "web-1", "web-2", "orders-1")
	a := newAgg(sc, true)
	w1, w2 := sc.recs["web-1"], sc.recs["web-2"]
	w1.SetEjectedInstances("orders", []metrics.EjectedInstance{{Instance: "orders-3", Reason: "consecutive_5xx"}})
	w2.SetEjectedInstances("orders", []metrics.EjectedInstance{{Instance: "orders-3", Reason: "success_rate"}, {Instance: "orders-2", Reason: "consecutive_5xx"}})
	a.Scrape(context.Background())
	want := []Ejection{
		{Service: "orders", Instance: "orders-2", Reason: "consecutive_5xx", CallerService: "web", CallerInstance: "web-2"},
		{Service: "orders", Instance: "orders-3", Reason: "consecutive_5xx", CallerService: "web", CallerInstance: "web-1"},
		{Service: "orders", Instance: "orders-3", Reason: "success_rate", CallerService: "web", CallerInstance: "web-2"},
	}
	if got := a.Ejections()["orders"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("ejections %+v\nwant %+v", got, want)
	}
	st := a.Stats(time.Minute)
	if len(st.Services) != 1 || st.Services[0].Service != "orders" || !reflect.DeepEqual(st.Services[0].Ejected, want) {
		t.Fatalf("stats (no requests, ejections only) %+v", st.Services)
	}

	// web-1 re-admits; web-2 stops being a target.
	w1.SetEjectedInstances("orders", nil)
	sc.mu.Lock()
	sc.targets = slices.DeleteFunc(sc.targets, func(t Target) bool { return t.Instance == "web-2" })
	sc.mu.Unlock()
	a.Scrape(context.Background())
	if got := a.Ejections(); len(got) != 0 {
		t.Fatalf("after re-admission and web-2 gone: %+v", got)
	}
	if st := a.Stats(time.Minute); len(st.Services) != 0 {
		t.Fatalf("stats after: %+v", st.Services)
	}
}
