package harness

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A perf script excerpt: CPU 1 runs the hop (pid 100) from 1.000 to
// 1.002 s, a neighbour (pid 300, "cc1") until 1.005, the hop again until
// 1.006; the hop's thread 101 is woken at 1.0025 and runs at 1.005 (a
// 2.5 ms wait behind cc1). CPU 1's cpu-clock samples stop between 1.0055
// and 1.0090 while the hop runs: the vCPU was away.
const scriptExcerpt = `     100/100   [001]     1.000000000: sched:sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=weft next_pid=100 next_prio=120
     100/100   [001]     1.002000000: sched:sched_switch: prev_comm=weft prev_pid=100 prev_prio=120 prev_state=S ==> next_comm=cc1 next_pid=300 next_prio=120
     300/300   [001]     1.002500000: sched:sched_wakeup: comm=weft pid=101 prio=120 target_cpu=001
     300/300   [001]     1.005000000: sched:sched_switch: prev_comm=cc1 prev_pid=300 prev_prio=120 prev_state=R ==> next_comm=weft next_pid=101 next_prio=120
     100/101   [001]     1.005500000: cpu-clock: 
     100/101   [001]     1.009000000: cpu-clock: 
     100/101   [001]     1.009500000: syscalls:sys_enter_madvise: start: 0x7f, len_in: 0x1000, behavior: 0x00000004
     100/101   [001]     1.010000000: sched:sched_switch: prev_comm=weft prev_pid=101 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
garbage line
`

func TestParseSchedScript(t *testing.T) {
	evs, err := ParseSchedScript(strings.NewReader(scriptExcerpt))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 8 {
		t.Fatalf("%d events, want 8: %+v", len(evs), evs)
	}
	sw := evs[1]
	if sw.Kind != 's' || sw.CPU != 1 || sw.PID != 100 || sw.TID != 100 || sw.NextTID != 300 || sw.NextComm != "cc1" || sw.PrevState != "S" || sw.T != 1_002_000_000 {
		t.Errorf("switch parsed as %+v", sw)
	}
	wk := evs[2]
	if wk.Kind != 'w' || wk.WakeTID != 101 || wk.WakeCPU != 1 || wk.T != 1_002_500_000 {
		t.Errorf("wake-up parsed as %+v", wk)
	}
	if evs[4].Kind != 'c' || evs[6].Kind != 'm' {
		t.Errorf("kinds %c %c, want c m", evs[4].Kind, evs[6].Kind)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestTimelineOccupancyWaitsSteal(t *testing.T) {
	evs, err := ParseSchedScript(strings.NewReader(scriptExcerpt))
	if err != nil {
		t.Fatal(err)
	}
	tl := BuildTimeline(evs, Roles{100: "hop"})
	occ := tl.Occupancy(1_000_000_000, 1_010_000_000)[1]
	// hop: 0-2 ms and 5-10 ms less the 3.25 ms away (5.75-9.0); cc1 3 ms.
	if !near(occ["hop"], 2+5-3.25) || !near(occ["other:cc1"], 3) || !near(occ[roleSteal], 3.25) {
		t.Errorf("occupancy %v", occ)
	}
	who, ms, cpu, meanwhile := tl.LongestWait(1_000_000_000, 1_010_000_000, map[string]bool{"hop": true})
	if who != "hop" || !near(ms, 2.5) || cpu != 1 || !near(meanwhile["other:cc1"], 2.5) {
		t.Errorf("longest wait %q %v ms on %d behind %v", who, ms, cpu, meanwhile)
	}
	if m := tl.Madvise(1_000_000_000, 1_010_000_000); len(m) != 1 || m[0] != "hop" {
		t.Errorf("madvise %v", m)
	}
	if f := tl.foreign(1_000_000_000, 1_010_000_000); f != 3*time.Millisecond+3250*time.Microsecond {
		t.Errorf("foreign %v, want 6.25ms", f)
	}
	if f := tl.foreign(1_000_000_000, 1_001_000_000); f != 0 {
		t.Errorf("foreign of a quiet stretch %v", f)
	}
	x := Explain([]SlowRequest{{At: 2 * time.Millisecond, Latency: 5 * time.Millisecond}}, 1_000_000_000, tl, nil, map[string]bool{"hop": true}, nil)
	if len(x) != 1 || x[0].Cause != CauseNeighbour {
		t.Errorf("explained %+v, want cause neighbour (3 of 5 ms)", x)
	}
	s := tl.Summarize(1, x, 1_000_000_000, 1_010_000_000, map[string]bool{"hop": true})
	if s.WaitsOver1ms["other:cc1"] != 1 || len(s.Steal) != 1 || !near(s.StealMs, 3.25) {
		t.Errorf("summary %+v", s)
	}
}

func TestReadGCTrace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.log")
	log := "@5000000000 gc 3 @1.234s 0%: 0.059+8.1+0.008 ms clock, 0.059+0/1.2/0+0.008 ms cpu, 3->3->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 1 P\n" +
		"@5000000001 time=2026 level=INFO msg=hello\n"
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	g := ReadGCTrace("side", p)
	if len(g) != 1 || g[0].End != 5_000_000_000 || !near(g[0].Clock, 8.167) || g[0].Proc != "side" {
		t.Fatalf("gc events %+v", g)
	}
	x := Explain([]SlowRequest{{At: 0, Latency: time.Millisecond}}, 4_995_000_000, nil, g, map[string]bool{"side": true}, nil)
	if len(x[0].GC) != 1 || x[0].Cause != CauseGC {
		t.Errorf("a request inside the cycle: %+v", x[0])
	}
}

func TestStampLines(t *testing.T) {
	var out bytes.Buffer
	stampLines(strings.NewReader("one\ntwo"), &out)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "@") || !strings.HasSuffix(lines[0], " one") || !strings.HasSuffix(lines[1], " two") {
		t.Errorf("stamped %q", out.String())
	}
}

func TestOpenLoopKeepsSlowest(t *testing.T) {
	var n atomic.Int64
	c := requesterFunc(func(context.Context) error {
		if n.Add(1) == 7 {
			time.Sleep(30 * time.Millisecond)
		}
		return nil
	})
	res, err := OpenLoopKeep(context.Background(), c, 200, 100*time.Millisecond, 4, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Slowest) != 3 || len(res.All) != int(res.Completed()) {
		t.Fatalf("kept %d slowest and %d of %d", len(res.Slowest), len(res.All), res.Completed())
	}
	if res.Slowest[0].Latency < 30*time.Millisecond || res.Slowest[0].Latency < res.Slowest[1].Latency {
		t.Errorf("slowest first: %+v", res.Slowest)
	}
	if res.StartMono <= 0 {
		t.Errorf("no CLOCK_MONOTONIC start")
	}
}

type requesterFunc func(context.Context) error

func (f requesterFunc) Do(ctx context.Context) error { return f(ctx) }
func (f requesterFunc) Close()                       {}
