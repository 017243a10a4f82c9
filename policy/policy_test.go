package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/resource"
)

func TestOutlierEjection(t *testing.T) {
	pct := 50
	spec := &resource.TrafficPolicySpec{Service: "orders", OutlierDetection: &resource.OutlierDetection{
		Consecutive5xx: 3, BaseEjectionTime: "10s", Interval: "1s", MaxEjectionPercent: &pct}}
	live := NewLive()
	d := Compile(spec, live).Outlier
	changes := 0
	d.OnChange(func() { changes++ })
	stats := d.Track([]string{"a", "b", "c", "d"}, []string{"1", "2", "3", "4"})
	now := time.Now()
	for i := range 2 {
		if d.Report(stats["a"], true, true, now) {
			t.Fatalf("ejected after %d failures, threshold 3", i+1)
		}
	}
	d.Report(stats["a"], false, false, now) // a success resets the count
	for range 2 {
		d.Report(stats["a"], true, false, now)
	}
	if stats["a"].Ejected() {
		t.Fatal("ejected though a success broke the run")
	}
	if !d.Report(stats["a"], true, false, now) || !stats["a"].Ejected() || changes != 1 {
		t.Fatalf("not ejected after 3 consecutive 5xx (changes %d)", changes)
	}
	for range 3 {
		d.Report(stats["b"], true, true, now)
	}
	if !stats["b"].Ejected() {
		t.Fatal("b not ejected (50% of 4 allows 2)")
	}
	for range 5 {
		d.Report(stats["c"], true, true, now)
	}
	if stats["c"].Ejected() {
		t.Fatal("c ejected past maxEjectionPercent 50")
	}
	ej := d.Ejections()
	if len(ej) != 2 || ej[0].ID != "a" || ej[0].Reason != "3 consecutive 5xx" || !ej[0].Until.Equal(now.Add(10*time.Second)) {
		t.Fatalf("ejections %+v", ej)
	}
	if d.Sweep(now.Add(9 * time.Second)) {
		t.Fatal("re-admitted before baseEjectionTime")
	}
	if !d.Sweep(now.Add(10*time.Second)) || stats["a"].Ejected() {
		t.Fatal("not re-admitted after baseEjectionTime")
	}
	// A second ejection in a row lasts twice as long.
	later := now.Add(11 * time.Second)
	for range 3 {
		d.Report(stats["a"], true, false, later)
	}
	if ej := d.Ejections(); ej[0].ID != "a" || ej[0].Until.Sub(later) != 20*time.Second || ej[0].Ejections != 2 {
		t.Fatalf("second ejection %+v, want 20s", ej[0])
	}
}

func TestOutlierNeverEjectsTheLast(t *testing.T) {
	pct := 100
	det := Compile(&resource.TrafficPolicySpec{Service: "x", OutlierDetection: &resource.OutlierDetection{Consecutive5xx: 1, MaxEjectionPercent: &pct}}, NewLive()).Outlier
	stats := det.Track([]string{"a", "b"}, []string{"1", "2"})
	now := time.Now()
	det.Report(stats["a"], true, false, now)
	det.Report(stats["b"], true, false, now)
	if stats["a"].Ejected() == stats["b"].Ejected() {
		t.Fatalf("ejected a=%v b=%v, want exactly one", stats["a"].Ejected(), stats["b"].Ejected())
	}
}

func TestBudgetWithdraw(t *testing.T) {
	live := NewLive()
	ratio, per := 0.5, 2
	Compile(&resource.TrafficPolicySpec{Service: "x", Retries: &resource.Retries{Attempts: 1,
		Budget: &resource.RetryBudget{Ratio: &ratio, MinPerSecond: &per}}}, live)
	b := &live.Budget
	now := time.Now()
	got := 0
	for range 10 {
		b.Request()
		if b.Withdraw(now) {
			got++
		}
	}
	// One second's 2 to start, then one per two requests.
	if got != 2+5 {
		t.Errorf("%d retries allowed for 10 requests, want 7", got)
	}
	if b.Withdraw(now) {
		t.Error("a retry allowed with the budget spent")
	}
	if !b.Withdraw(now.Add(time.Second)) {
		t.Error("no retry allowed a second later (minPerSecond 2)")
	}
}

func TestRateLimiter(t *testing.T) {
	l := NewRateLimiter("orders", &resource.RateLimit{RequestsPerSecond: 10, Burst: 5})
	now := time.Now()
	got := 0
	for range 20 {
		if l.Allow("a", now) {
			got++
		}
	}
	if got != 5 {
		t.Errorf("%d allowed at once, want the burst of 5", got)
	}
	if !l.Allow("a", now.Add(100*time.Millisecond)) || l.Allow("a", now.Add(100*time.Millisecond)) {
		t.Error("after 100ms at 10/s, want exactly one more")
	}
	ps := NewRateLimiter("orders", &resource.RateLimit{RequestsPerSecond: 1, Burst: 1, PerSource: true})
	if !ps.Allow("a", now) || ps.Allow("a", now) || !ps.Allow("b", now) {
		t.Error("perSource: each source wants its own allowance")
	}
}

// TestSuccessRateEjection: per interval, an instance far below its peers'
// success rate is ejected (with the reason), only with enough requests
// and instances, within maxEjectionPercent; equal rates eject nobody.
func TestSuccessRateEjection(t *testing.T) {
	pct := 50
	type inst struct{ reqs, fails int }
	for _, tc := range []struct {
		name      string
		sr        resource.SuccessRateEjection
		insts     []inst // instance i is "i0", "i1", …
		wantOut   []string
		wantCount int
	}{
		{"one outlier of three", resource.SuccessRateEjection{MinRequests: 20, StdevFactor: 1},
			[]inst{{100, 0}, {100, 1}, {100, 50}}, []string{"i2"}, 1},
		{"default factor 1.9 needs more peers", resource.SuccessRateEjection{MinRequests: 20},
			[]inst{{100, 0}, {100, 1}, {100, 50}}, nil, 0},
		{"default factor, seven instances", resource.SuccessRateEjection{MinRequests: 20},
			[]inst{{100, 0}, {100, 1}, {100, 0}, {100, 2}, {100, 0}, {100, 1}, {100, 60}}, []string{"i6"}, 1},
		{"too few requests", resource.SuccessRateEjection{MinRequests: 200, StdevFactor: 1},
			[]inst{{100, 0}, {100, 1}, {100, 50}}, nil, 0},
		{"too few instances with data", resource.SuccessRateEjection{MinRequests: 20, StdevFactor: 1},
			[]inst{{100, 0}, {10, 0}, {100, 50}}, nil, 0},
		{"min hosts", resource.SuccessRateEjection{MinRequests: 20, MinHosts: 4, StdevFactor: 1},
			[]inst{{100, 0}, {100, 0}, {100, 50}}, nil, 0},
		{"all equal", resource.SuccessRateEjection{MinRequests: 20, StdevFactor: 0.1},
			[]inst{{100, 10}, {100, 10}, {100, 10}, {100, 10}}, nil, 0},
		{"within maxEjectionPercent, lowest first", resource.SuccessRateEjection{MinRequests: 20, StdevFactor: 0.1},
			[]inst{{100, 0}, {100, 0}, {100, 90}, {100, 80}, {100, 70}, {100, 60}}, []string{"i2", "i3", "i4"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sr := tc.sr
			det := Compile(&resource.TrafficPolicySpec{Service: "x", OutlierDetection: &resource.OutlierDetection{
				Consecutive5xx: 1000, Interval: "1s", BaseEjectionTime: "10s", MaxEjectionPercent: &pct, SuccessRate: &sr}}, NewLive()).Outlier
			var ids []string
			for i := range tc.insts {
				ids = append(ids, fmt.Sprintf("i%d", i))
			}
			stats := det.Track(ids, ids)
			now := time.Now()
			det.Sweep(now) // the first review starts the first interval
			for i, in := range tc.insts {
				for j := range in.reqs {
					fail := j < in.fails
					det.Report(stats[ids[i]], fail, fail, now)
				}
			}
			if det.Sweep(now.Add(500 * time.Millisecond)) {
				t.Fatal("judged before the interval was over")
			}
			changed := det.Sweep(now.Add(1100 * time.Millisecond))
			var out []string
			for _, e := range det.Ejections() {
				out = append(out, e.ID)
				if e.Code != ReasonSuccessRate || !strings.HasPrefix(e.Reason, "success rate ") {
					t.Errorf("ejection %+v: want code success_rate and a reason that says so", e)
				}
			}
			if strings.Join(out, ",") != strings.Join(tc.wantOut, ",") || changed != (len(tc.wantOut) > 0) {
				t.Fatalf("ejected %v (changed %v), want %v", out, changed, tc.wantOut)
			}
			if n := det.SweptEjections(); n != tc.wantCount {
				t.Fatalf("SweptEjections %d, want %d", n, tc.wantCount)
			}
			// The next interval starts from zero: no new data, no new verdict.
			if det.Sweep(now.Add(2200*time.Millisecond)) || det.SweptEjections() != 0 {
				t.Fatal("a second interval without requests changed something")
			}
		})
	}
}

// TestHealthCheckEjection: unhealthyThreshold failed probes in a row eject
// (reason health_check, why), time does not re-admit, healthyThreshold
// passes in a row do.
func TestHealthCheckEjection(t *testing.T) {
	p := Compile(&resource.TrafficPolicySpec{Service: "x", OutlierDetection: &resource.OutlierDetection{BaseEjectionTime: "1s",
		HealthCheck: &resource.HealthCheck{Path: "/healthz", Interval: "1s", UnhealthyThreshold: 2, HealthyThreshold: 2}}}, NewLive())
	if hc := p.HealthCheck; hc == nil || hc.Path != "/healthz" || hc.Interval != time.Second || hc.Timeout != time.Second {
		t.Fatalf("compiled health check %+v", hc)
	}
	det := p.Outlier
	stats := det.Track([]string{"a", "b", "c"}, []string{"1", "2", "3"})
	now := time.Now()
	if det.ReportHealth("a", false, "GET /healthz: 503", now) || stats["a"].Ejected() {
		t.Fatal("ejected after one failed probe, threshold 2")
	}
	det.ReportHealth("a", true, "", now) // a pass breaks the run
	det.ReportHealth("a", false, "GET /healthz: 503", now)
	if !det.ReportHealth("a", false, "GET /healthz: 503", now) || !stats["a"].Ejected() {
		t.Fatal("not ejected after 2 failed probes in a row")
	}
	ej := det.Ejections()
	if len(ej) != 1 || ej[0].Code != ReasonHealthCheck || ej[0].Reason != "health check failed 2 times in a row: GET /healthz: 503" {
		t.Fatalf("ejections %+v", ej)
	}
	if det.SweptEjections() != 1 {
		t.Fatal("the ejection is not counted")
	}
	if det.Sweep(now.Add(time.Hour)) || !stats["a"].Ejected() {
		t.Fatal("re-admitted by time though its probes still fail")
	}
	if det.ReportHealth("a", true, "", now) || !stats["a"].Ejected() {
		t.Fatal("re-admitted after one pass, threshold 2")
	}
	if !det.ReportHealth("a", true, "", now) || stats["a"].Ejected() {
		t.Fatal("not re-admitted after 2 passes")
	}
	if det.ReportHealth("nobody", false, "x", now) {
		t.Fatal("an unknown instance changed something")
	}
}
