package harness

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func run(round int, path string, rate int, p50, p99, cpu float64) *RunResult {
	kind := KindOpen
	if rate == 0 {
		kind = KindClosed
	}
	return &RunResult{
		Round: round, Path: path, Kind: kind, Rate: rate,
		Latency: Latency{Count: 100, P50: p50, P90: p50, P99: p99, P999: p99},
		Sent:    100, OK: 100, Achieved: float64(rate),
		ProxyCPUPerReq: Num(cpu), ProxyCPUUtil: NaN(), AuxCPUPerReq: NaN(),
	}
}

func TestFinish(t *testing.T) {
	nan := math.NaN()
	runs := []*RunResult{
		// round 1
		run(1, PathDirect, 500, 0.10, 0.30, nan),
		run(1, PathWeft, 500, 0.50, 1.30, 300),
		run(1, PathHAProxy, 500, 0.30, 0.80, 120),
		run(1, PathNginx, 500, 0.35, 0.90, 110),
		// round 2: direct got slower; added latency is vs the same round
		run(2, PathDirect, 500, 0.20, 0.40, nan),
		run(2, PathWeft, 500, 0.56, 1.50, 320),
		run(2, PathHAProxy, 500, 0.40, 0.90, 140),
		run(2, PathNginx, 500, 0.43, 1.00, 118),
		// round 3
		run(3, PathDirect, 500, 0.10, 0.30, nan),
		run(3, PathWeft, 500, 0.52, 1.20, 310),
		run(3, PathHAProxy, 500, 0.28, 0.70, 100),
		run(3, PathNginx, 500, 0.30, 0.80, 125),
		// max runs: nothing is "added" there
		run(1, PathDirect, 0, 1, 2, nan),
		run(1, PathWeft, 0, 4, 9, 130),
		run(1, PathHAProxy, 0, 1, 3, 30),
	}
	// Memory per hop: weft's second hop lost its PSS in round 2 (0), so its
	// median is over the other two rounds.
	for i, hop := range [][2]int64{{20 << 20, 22 << 20}, {21 << 20, 23 << 20}, {19 << 20, 24 << 20}} {
		runs[1+4*i].HopRSSPeak = hop[:]
		runs[1+4*i].HopPSSPeak = []int64{hop[0] / 2, hop[1] / 2}
	}
	runs[5].HopPSSPeak[1] = 0
	rep := &Report{Meta: Meta{Paths: AllPaths}, Runs: runs}
	Finish(rep)

	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	// Added latency per run.
	addTests := []struct {
		r        *RunResult
		p50, p99 float64
	}{
		{runs[1], 0.40, 1.00},
		{runs[5], 0.36, 1.10},
		{runs[10], 0.18, 0.40},
		{runs[0], nan, nan},
		{runs[13], nan, nan},
	}
	for _, tt := range addTests {
		g50, g99 := float64(tt.r.AddedP50), float64(tt.r.AddedP99)
		if math.IsNaN(tt.p50) {
			if !math.IsNaN(g50) || !math.IsNaN(g99) {
				t.Errorf("round %d %s %d: added = %v/%v, want none", tt.r.Round, tt.r.Path, tt.r.Rate, g50, g99)
			}
			continue
		}
		if !near(g50, tt.p50) || !near(g99, tt.p99) {
			t.Errorf("round %d %s %d: added = %v/%v, want %v/%v", tt.r.Round, tt.r.Path, tt.r.Rate, g50, g99, tt.p50, tt.p99)
		}
	}

	// Summary rows in path order, with medians over rounds.
	var order []string
	for _, r := range rep.Summary {
		order = append(order, r.Path)
	}
	if got := strings.Join(order, ","); got != "direct,weft,haproxy,nginx" {
		t.Fatalf("summary order = %s", got)
	}
	w := rep.Summary[1]
	sumTests := []struct {
		name string
		got  Stat
		want Stat
	}{
		{"weft p50", w.P50, Stat{Median: 0.52, Min: 0.50, Max: 0.56, N: 3}},
		{"weft added p50", w.AddedP50, Stat{Median: 0.40, Min: 0.36, Max: 0.42, N: 3}},
		{"weft added p99", w.AddedP99, Stat{Median: 1.00, Min: 0.90, Max: 1.10, N: 3}},
		{"weft cpu", w.CPUPerReq, Stat{Median: 310, Min: 300, Max: 320, N: 3}},
		{"haproxy cpu", rep.Summary[2].CPUPerReq, Stat{Median: 120, Min: 100, Max: 140, N: 3}},
		{"haproxy added p50", rep.Summary[2].AddedP50, Stat{Median: 0.20, Min: 0.18, Max: 0.20, N: 3}},
		{"weft hop 1 rss", w.HopRSSMiB[0], Stat{Median: 20, Min: 19, Max: 21, N: 3}},
		{"weft hop 1 pss", w.HopPSSMiB[0], Stat{Median: 10, Min: 9.5, Max: 10.5, N: 3}},
		{"weft hop 2 pss", w.HopPSSMiB[1], Stat{Median: 11.5, Min: 11, Max: 12, N: 2}},
	}
	for _, tt := range sumTests {
		g := tt.got
		if g.N != tt.want.N || !near(g.Median, tt.want.Median) || !near(g.Min, tt.want.Min) || !near(g.Max, tt.want.Max) {
			t.Errorf("%s = %+v, want %+v", tt.name, g, tt.want)
		}
	}
	if d := rep.Summary[0]; d.CPUPerReq.Valid() || d.AddedP50.Valid() {
		t.Errorf("direct has proxy CPU %+v or added latency %+v", d.CPUPerReq, d.AddedP50)
	}
	if len(rep.Max) != 3 || rep.Max[1].Path != PathWeft {
		t.Fatalf("max rows = %+v", rep.Max)
	}

	// Ratios: weft / haproxy and weft / nginx of the medians.
	if len(rep.Ratios) != 2 {
		t.Fatalf("ratios = %+v, want 500 and max", rep.Ratios)
	}
	r := rep.Ratios[0]
	ratioTests := []struct {
		name string
		got  Num
		want float64
	}{
		{"cpu vs haproxy", r.CPUVsHAProxy, 310.0 / 120},
		{"cpu vs nginx", r.CPUVsNginx, 310.0 / 118},
		{"added p50 vs haproxy", r.AddP50VsHAProx, 0.40 / 0.20},
		{"added p99 vs haproxy", r.AddP99VsHAProx, 1.00 / 0.50},
		{"max cpu vs haproxy", rep.Ratios[1].CPUVsHAProxy, 130.0 / 30},
		{"max cpu vs nginx (no nginx max run)", rep.Ratios[1].CPUVsNginx, nan},
	}
	for _, tt := range ratioTests {
		g := float64(tt.got)
		if math.IsNaN(tt.want) != math.IsNaN(g) || !math.IsNaN(g) && !near(g, tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, g, tt.want)
		}
	}

	// Rendering does not fail and JSON has no NaN in it.
	var md bytes.Buffer
	WriteMarkdown(&md, rep)
	if !strings.Contains(md.String(), "| weft | 500 |") || !strings.Contains(md.String(), "| 20.0 / 23.0 | 10.0 / 11.5 |") {
		t.Errorf("markdown lacks the weft row:\n%s", md.String())
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatalf("json: %v", err)
	}
}

func TestFailedPathShown(t *testing.T) {
	rep := &Report{
		Meta:     Meta{Paths: AllPaths},
		Runs:     []*RunResult{run(1, PathDirect, 500, 0.1, 0.3, math.NaN())},
		Failures: []PathFailure{{Round: 1, Path: PathWeft, Error: "start: weft binary: not found"}},
	}
	Finish(rep)
	var md bytes.Buffer
	WriteMarkdown(&md, rep)
	for _, want := range []string{"| weft | – | FAILED", "round 1, weft: start: weft binary: not found"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
}
