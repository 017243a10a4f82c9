package load

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
)

// TestOwnProcess measures this test process while it spins one goroutine:
// a real /proc, a real CPU. The box may be busy, so only a clearly
// non-zero share is asserted: 20 ms of CPU time in the 400 ms.
func TestOwnProcess(t *testing.T) {
	m := New(Config{PID: os.Getpid()})
	m.sample()
	start := time.Now()
	stop := start.Add(400 * time.Millisecond)
	x := 0
	for time.Now().Before(stop) {
		x++
	}
	m.sample()
	s := m.Last()
	ncpu := float64(runtime.NumCPU())
	used := s.CPU * time.Since(start).Seconds() * ncpu
	t.Logf("spinning one goroutine for 400ms: cpu %.3f of %d CPUs (%.0f ms of CPU time), headroom %.3f", s.CPU, runtime.NumCPU(), used*1000, s.Headroom)
	if s.Source != "proc" || used < 0.02 || s.CPU > 1 {
		t.Errorf("sample %+v: want at least 20 ms of CPU time seen", s)
	}
	if s.Headroom > 1-s.CPU+1e-9 {
		t.Errorf("headroom %.3f with cpu %.3f", s.Headroom, s.CPU)
	}
	_ = x
}

func writeStat(t *testing.T, root string, pid, ppid int, ticks uint64) {
	t.Helper()
	dir := filepath.Join(root, strconvI(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// utime = ticks, stime = 0; comm with a space and a parenthesis.
	line := strconvI(pid) + " (my (app) x) S " + strconvI(ppid) + " 1 1 0 -1 0 0 0 0 0 " + strconvU(ticks) + " 0 0 0 20 0 1 0 100 0 0\n"
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestProcTree: the app's children and grandchildren count, an unrelated
// process does not, and a child that exits drops out without a negative
// delta.
func TestProcTree(t *testing.T) {
	root := t.TempDir()
	now := time.Unix(1000, 0)
	m := New(Config{PID: 10, ProcRoot: root, CPUs: 2, Now: func() time.Time { return now }})
	writeStat(t, root, 10, 1, 100)
	writeStat(t, root, 11, 10, 100)
	writeStat(t, root, 12, 11, 100)
	writeStat(t, root, 13, 1, 100)
	m.sample()
	if s := m.Last(); s.CPU != -1 || s.Procs != 3 {
		t.Fatalf("first sample %+v: want cpu unknown and 3 processes in the tree", s)
	}
	now = now.Add(time.Second)
	writeStat(t, root, 10, 1, 150) // +50 ticks: half a CPU
	writeStat(t, root, 11, 10, 130)
	writeStat(t, root, 12, 11, 120)
	writeStat(t, root, 13, 1, 300) // not the app's
	m.sample()
	if s := m.Last(); s.CPU < 0.499 || s.CPU > 0.501 { // 100 ticks = 1 CPU-second of 2 CPUs
		t.Errorf("cpu = %.3f, want 0.5 (1 CPU-second over 1 s of 2 CPUs)", s.CPU)
	}
	now = now.Add(time.Second)
	os.RemoveAll(filepath.Join(root, "12"))
	writeStat(t, root, 10, 1, 150)
	writeStat(t, root, 11, 10, 130)
	m.sample()
	if s := m.Last(); s.CPU < 0 || s.CPU > 0.26 { // smoothed: 0.5 → 0.25
		t.Errorf("cpu = %.3f after an idle second and a child's exit, want 0.25 (smoothed)", s.CPU)
	}
	os.RemoveAll(filepath.Join(root, "10"))
	now = now.Add(time.Second)
	m.sample()
	if s := m.Last(); s.CPU != -1 || s.Headroom != 1 {
		t.Errorf("the app gone: %+v, want cpu unknown and full headroom", s)
	}
}

func TestCgroup(t *testing.T) {
	dir := t.TempDir()
	w := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(1000, 0)
	w("cpu.stat", "usage_usec 1000000\nuser_usec 800000\nsystem_usec 200000\n")
	w("cpu.max", "50000 100000\n")
	w("cpu.pressure", "some avg10=10.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
	w("memory.current", "536870912\n")
	w("memory.max", "1073741824\n")
	w("memory.pressure", "some avg10=20.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
	m := New(Config{Cgroup: dir, CPUs: 4, Now: func() time.Time { return now }})
	m.sample()
	now = now.Add(time.Second)
	w("cpu.stat", "usage_usec 1400000\n") // 0.4 CPU-s of a 0.5 CPU quota: 0.8
	m.sample()
	s := m.Last()
	if s.Source != "cgroup" || s.CPU < 0.799 || s.CPU > 0.801 || s.Mem < 0.499 || s.Mem > 0.501 || s.Headroom > 0.201 {
		t.Errorf("sample %+v: want cpu 0.8 (quota 0.5), mem 0.5, headroom 0.2", s)
	}
	w("cpu.max", "max 100000\n")
	w("cpu.pressure", "some avg10=90.00 avg60=0.00 avg300=0.00 total=0\n")
	w("memory.max", "max\n")
	now = now.Add(time.Second)
	w("cpu.stat", "usage_usec 1500000\n") // 0.1 of 4 CPUs, but waiting 90% of the time
	m.sample()
	if s := m.Last(); s.CPU < 0.84 || s.CPU > 0.86 || s.Mem < 0.349 || s.Mem > 0.351 { // smoothed: 0.8 → 0.85, 0.5 → 0.35
		t.Errorf("sample %+v: want cpu 0.85 (pressure 0.9, smoothed) and mem 0.35 (pressure 0.2 with no limit, smoothed)", s)
	}
}

func TestResolveCgroup(t *testing.T) {
	root := t.TempDir()
	cg := filepath.Join(root, "cg", "app.slice")
	os.MkdirAll(filepath.Join(root, "self"), 0o755)
	os.MkdirAll(cg, 0o755)
	os.WriteFile(filepath.Join(root, "self", "cgroup"), []byte("4:memory:/x\n0::/app.slice\n"), 0o644)
	os.WriteFile(filepath.Join(root, "self", "mountinfo"), []byte(
		"22 1 0:20 / /sys rw shared:7 - sysfs sysfs rw\n30 22 0:26 / "+filepath.Join(root, "cg")+" rw,nosuid shared:9 - cgroup2 cgroup2 rw\n"), 0o644)
	got, err := ownCgroup(root)
	if err != nil || got != cg {
		t.Fatalf("ownCgroup = %q, %v; want %q", got, err, cg)
	}
	if err := checkCgroup(cg); err == nil {
		t.Error("checkCgroup accepted a directory without cpu.stat")
	}
	if _, err := ResolveCgroup(t.TempDir()); err == nil || !strings.Contains(err.Error(), "--load-cgroup") {
		t.Errorf("ResolveCgroup of a plain directory: %v, want an error naming the flag", err)
	}
}

// TestAppend: the header value parses, carries the live in-flight count
// and the latency, and costs no allocation once dst has room.
func TestAppend(t *testing.T) {
	m := New(Config{})
	m.Begin()
	m.Begin()
	m.Begin()
	m.End()
	m.Latency(20 * time.Millisecond)
	m.sample()
	v := m.Append(nil)
	r, ok := balancer.ParseLoad(v)
	if !ok || r.InFlight != 2 || r.Headroom != 1 || r.CPU != -1 || r.LatencyMs < 19.9 || r.LatencyMs > 20.1 {
		t.Fatalf("Append = %q → %+v, %v", v, r, ok)
	}
	m.Begin()
	if r, _ := balancer.ParseLoad(m.Append(nil)); r.InFlight != 3 {
		t.Errorf("in flight not live: %+v", r)
	}
	buf := make([]byte, 0, 128)
	if a := testing.AllocsPerRun(1000, func() { m.Begin(); buf = m.Append(buf[:0]); m.Latency(time.Millisecond); m.End() }); a != 0 {
		t.Errorf("per-request work allocates %v times, want 0", a)
	}
}

func strconvI(i int) string    { return strconv.Itoa(i) }
func strconvU(u uint64) string { return strconv.FormatUint(u, 10) }

// TestRunnableDemand: an app whose threads are all runnable counts as
// busy even when it got little CPU time (starved by its neighbours); one
// whose threads sleep does not.
func TestRunnableDemand(t *testing.T) {
	root := t.TempDir()
	now := time.Unix(1000, 0)
	m := New(Config{PID: 10, ProcRoot: root, CPUs: 2, Now: func() time.Time { return now }})
	writeStat(t, root, 10, 1, 100)
	task := func(tid int, state string) {
		dir := filepath.Join(root, "10", "task", strconvI(tid))
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "stat"), []byte(strconvI(tid)+" (app) "+state+" 1 1 1 0 -1 0 0 0 0 0 0 0 0 0\n"), 0o644)
	}
	task(10, "S")
	task(11, "R")
	task(12, "R")
	m.sample()
	for range demandProbes {
		m.proc.probe(root)
	}
	now = now.Add(time.Second)
	writeStat(t, root, 10, 1, 120) // 0.2 CPU-s: 10% of 2 CPUs
	m.sample()
	if s := m.Last(); s.CPU < 0.999 {
		t.Errorf("two runnable threads on 2 CPUs, 10%% CPU time: cpu = %.3f, want 1 (the demand)", s.CPU)
	}
	task(11, "S")
	task(12, "S")
	for range demandProbes {
		m.proc.probe(root)
	}
	now = now.Add(time.Second)
	writeStat(t, root, 10, 1, 140)
	m.sample()
	if s := m.Last(); s.CPU < 0.54 || s.CPU > 0.56 { // 1 → 0.1, smoothed: 0.55
		t.Errorf("threads asleep, 10%% CPU time: cpu = %.3f, want 0.55 (smoothed from 1 to 0.1)", s.CPU)
	}
}
