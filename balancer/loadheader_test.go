package balancer_test

import (
	"math"
	"strings"
	"testing"

	"github.com/weftmesh/weft/balancer"
)

func TestParseLoad(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		want balancer.LoadReport
	}{
		{"v=1;h=0.580;cpu=0.420;mem=0.100;inflight=3;lat=12.5", true, balancer.LoadReport{Headroom: 0.58, CPU: 0.42, Mem: 0.1, InFlight: 3, LatencyMs: 12.5}},
		{"v=1;h=1", true, balancer.LoadReport{Headroom: 1, CPU: -1, Mem: -1, LatencyMs: -1}},
		{"v=1; h=0.5 ;future=xyz;inflight=0", true, balancer.LoadReport{Headroom: 0.5, CPU: -1, Mem: -1, LatencyMs: -1}},
		{"v=1;cpu=0.5;h=0", true, balancer.LoadReport{Headroom: 0, CPU: 0.5, Mem: -1, LatencyMs: -1}},
		{"", false, balancer.LoadReport{}},
		{"h=0.5", false, balancer.LoadReport{}},                       // no version
		{"v=2;h=0.5", false, balancer.LoadReport{}},                   // a format this sidecar cannot read
		{"v=1;cpu=0.5", false, balancer.LoadReport{}},                 // no headroom
		{"v=1;h=1.5", false, balancer.LoadReport{}},                   // out of range
		{"v=1;h=-0.1", false, balancer.LoadReport{}},                  // no sign
		{"v=1;h=0.5;h=0.6", false, balancer.LoadReport{}},             // twice
		{"v=1;h=.5", false, balancer.LoadReport{}},                    // no leading digit
		{"v=1;h=0.5.1", false, balancer.LoadReport{}},                 // two dots
		{"v=1;h=0.1234567", false, balancer.LoadReport{}},             // too precise
		{"v=1;h=0.5;inflight=1.5", false, balancer.LoadReport{}},      // not an integer
		{"v=1;h=0.5;inflight=99999999", false, balancer.LoadReport{}}, // out of range
		{"v=1;h=0.5;junk", false, balancer.LoadReport{}},              // not key=value
		{"v=1;h=0.5;v=1", false, balancer.LoadReport{}},
		{"v=1;h=0.5" + strings.Repeat(";x=1", 15), false, balancer.LoadReport{}},  // too many fields
		{"v=1;h=0.5;x=" + strings.Repeat("1", 300), false, balancer.LoadReport{}}, // too long
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := balancer.ParseLoad([]byte(tc.in))
			if ok != tc.ok {
				t.Fatalf("ParseLoad(%q) ok = %v, want %v (%+v)", tc.in, ok, tc.ok, got)
			}
			if ok && got != tc.want {
				t.Errorf("ParseLoad(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestAppendLoadRoundTrip(t *testing.T) {
	for _, r := range []balancer.LoadReport{
		{Headroom: 0.58, CPU: 0.42, Mem: 0.1, InFlight: 3, LatencyMs: 12.5},
		{Headroom: 1, CPU: -1, Mem: -1, LatencyMs: -1},
		{Headroom: 2, CPU: math.NaN(), Mem: 7, InFlight: -4, LatencyMs: 1e12}, // clamped
	} {
		b := balancer.AppendLoad(nil, r)
		got, ok := balancer.ParseLoad(b)
		if !ok {
			t.Fatalf("AppendLoad(%+v) = %q, which ParseLoad rejects", r, b)
		}
		if got.Headroom < 0 || got.Headroom > 1 || len(b) > balancer.MaxLoadHeader {
			t.Errorf("AppendLoad(%+v) = %q → %+v", r, b, got)
		}
	}
	if got := string(balancer.AppendLoad(nil, balancer.LoadReport{Headroom: 0.58, CPU: 0.42, Mem: 0.1, InFlight: 3, LatencyMs: 12.5})); got != "v=1;h=0.580;cpu=0.420;mem=0.100;inflight=3;lat=12.5" {
		t.Errorf("AppendLoad = %q", got)
	}
}

func TestReportLoadAndHeadroom(t *testing.T) {
	ep := &balancer.Endpoint{ID: "a"}
	now := int64(1e12)
	if h := ep.Headroom(now); h != 1 {
		t.Errorf("Headroom with no report = %v, want 1 (neutral)", h)
	}
	ep.ReportLoadAt(now, []byte("v=1;h=0.2;cpu=0.8;inflight=4"))
	if h := ep.Headroom(now + int64(balancer.LoadFresh)); math.Abs(h-0.2) > 1e-4 {
		t.Errorf("Headroom of a fresh report = %v, want 0.2", h)
	}
	r, _, ok := ep.LastLoad(now)
	if !ok || math.Abs(r.CPU-0.8) > 1e-4 || r.InFlight != 4 || r.Mem != -1 {
		t.Errorf("LastLoad = %+v, %v", r, ok)
	}
	// Stale: halfway to neutral after LoadFresh + ln2·LoadDecay.
	half := math.Ln2 * float64(balancer.LoadDecay)
	h := ep.Headroom(now + int64(balancer.LoadFresh) + int64(half))
	if math.Abs(h-0.6) > 0.01 {
		t.Errorf("Headroom of a stale report = %v, want ≈ 0.6", h)
	}
	if h := ep.Headroom(now + int64(60e9)); h < 0.99 {
		t.Errorf("Headroom of a minute-old report = %v, want ≈ 1", h)
	}
	ep.ReportLoadAt(now, []byte("garbage"))
	if r, _, _ := ep.LastLoad(now); math.Abs(r.Headroom-0.2) > 1e-4 {
		t.Errorf("an unreadable report replaced the last good one: %+v", r)
	}
}

func TestReportLoadDoesNotAllocate(t *testing.T) {
	ep := &balancer.Endpoint{ID: "a"}
	v := []byte("v=1;h=0.580;cpu=0.420;mem=0.100;inflight=3;lat=12.5")
	if a := testing.AllocsPerRun(1000, func() { ep.ReportLoad(v); ep.Observe(1e6, false) }); a != 0 {
		t.Fatalf("ReportLoad+Observe allocate %v times per call, want 0", a)
	}
}

// FuzzParseLoad: no input makes the parser panic or accept a value out of
// range, and what AppendLoad writes from an accepted report is accepted
// again with the same headroom (to its 3 decimals).
func FuzzParseLoad(f *testing.F) {
	for _, s := range []string{"v=1;h=0.580;cpu=0.420;mem=0.100;inflight=3;lat=12.5", "v=1;h=1", "v=1; h=0.5 ;x=y", "v=2;h=0", "", ";;;", "v=1;h=0.9999999"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := balancer.ParseLoad(b)
		if !ok {
			return
		}
		if r.Headroom < 0 || r.Headroom > 1 || r.CPU > 1 || r.Mem > 1 || r.InFlight < 0 || r.LatencyMs > 1e6 {
			t.Fatalf("ParseLoad(%q) accepted %+v", b, r)
		}
		again, ok := balancer.ParseLoad(balancer.AppendLoad(nil, r))
		if !ok || math.Abs(again.Headroom-r.Headroom) > 0.0005 {
			t.Fatalf("round trip of %q: %+v → %+v (%v)", b, r, again, ok)
		}
	})
}
