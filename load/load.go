// Package load measures the load of this sidecar's own instance — the CPU
// use of its app (the app's process tree from /proc, or a cgroup v2 when the
// instance has its own), memory pressure (cgroup), requests in flight and
// the app's latency — and renders it as the balancer.LoadHeader value that
// the inbound adds to every response, so that load_aware callers can weight
// this instance by its headroom.
//
// A Meter is sampled on a ticker owned by its Run (every second by
// default, with ten counts of the app's runnable threads in between); per
// request it costs a few atomic operations (Begin, End, Latency) and an
// append of the value it last rendered (Append).
package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/balancer"
)

// DefaultInterval is how often a Meter samples.
const DefaultInterval = time.Second

// Config configures a Meter. With neither PID nor Cgroup (nor SetPID
// later), only in-flight requests and latency are reported, with full
// headroom.
type Config struct {
	// PID is the app's process id: its process tree's CPU time is read
	// from /proc. 0: not known yet (see SetPID).
	PID int
	// Cgroup is a cgroup v2 directory (e.g. /sys/fs/cgroup inside a
	// container) whose cpu.stat, cpu.max, cpu.pressure, memory.current,
	// memory.max and memory.pressure describe the instance; it wins over
	// PID. "" : none. See ResolveCgroup for "auto".
	Cgroup string
	// Interval between samples (default DefaultInterval).
	Interval time.Duration
	Logger   *slog.Logger

	// For tests: where /proc is (default "/proc"), the clock and the
	// number of CPUs the app may use (default runtime.NumCPU()).
	ProcRoot string
	Now      func() time.Time
	CPUs     float64
}

// Meter measures one instance. Safe for concurrent use.
type Meter struct {
	cfg Config
	log *slog.Logger
	pid atomic.Int64

	inFlight atomic.Int64
	latency  atomic.Uint64 // float64 bits: EWMA of the app's time to response head, ms; 0 = none

	// rendered is the report without its in-flight count, which Append
	// adds live: head is "v=1;h=…;cpu=…;mem=…", tail ";lat=…" or "".
	rendered atomic.Pointer[rendered]
	last     atomic.Pointer[Sample]

	// The sampler's own state (Run's goroutine only).
	proc  procState
	cg    cgroupState
	cpu   float64 // smoothed; <0 unknown
	mem   float64
	ticks int
}

type rendered struct{ head, tail []byte }

// Sample is one measurement, for the admin view and metrics.
type Sample struct {
	Time     time.Time
	Source   string  // "cgroup", "proc" or "none"
	CPU      float64 // 0 … 1 of what the instance may use; <0 unknown
	Mem      float64 // 0 … 1; <0 unknown
	Headroom float64
	InFlight int64
	// LatencyMs is the EWMA of the app's time to response head; <0 unknown.
	LatencyMs float64
	// Procs is how many processes the app's tree had (proc source).
	Procs int
}

// New returns a Meter; its figures are neutral until Run has sampled twice.
func New(cfg Config) *Meter {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = float64(runtime.NumCPU())
	}
	m := &Meter{cfg: cfg, log: cfg.Logger, cpu: -1, mem: -1}
	m.pid.Store(int64(cfg.PID))
	m.publish(cfg.Now())
	return m
}

// SetPID tells the meter the app's process id once it is known (weft run
// starts the app after the sidecar).
func (m *Meter) SetPID(pid int) { m.pid.Store(int64(pid)) }

// Begin, End and Latency implement proxy.LoadTracker.
func (m *Meter) Begin() { m.inFlight.Add(1) }
func (m *Meter) End()   { m.inFlight.Add(-1) }

// latencyWeight is the weight of each new latency sample.
const latencyWeight = 0.05

// Latency folds one request's time to response head into the EWMA.
func (m *Meter) Latency(d time.Duration) {
	ms := float64(d) / 1e6
	for {
		ob := m.latency.Load()
		old := math.Float64frombits(ob)
		next := ms
		if old > 0 {
			next = old + latencyWeight*(ms-old)
		}
		if m.latency.CompareAndSwap(ob, math.Float64bits(max(next, 1e-6))) {
			return
		}
	}
}

// Append appends the current balancer.LoadHeader value to dst: the last
// sample with the live in-flight count.
func (m *Meter) Append(dst []byte) []byte {
	r := m.rendered.Load()
	dst = append(dst, r.head...)
	dst = append(dst, ";inflight="...)
	dst = strconv.AppendInt(dst, max(m.inFlight.Load(), 0), 10)
	return append(dst, r.tail...)
}

// Last returns the last sample.
func (m *Meter) Last() Sample { return *m.last.Load() }

// Run samples every Interval until ctx is done.
//
// Between samples, with the proc source, it also looks demandProbes times
// at which of the app's threads are runnable (see procState.runnable).
func (m *Meter) Run(ctx context.Context) {
	m.sample()
	t := time.NewTicker(m.cfg.Interval / demandProbes)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if m.cfg.Cgroup == "" && m.pid.Load() > 0 {
				m.proc.probe(m.cfg.ProcRoot)
			}
			if n%demandProbes == 0 {
				m.sample()
			}
		}
	}
}

// demandProbes is how many times per sample the runnable threads are
// counted.
const demandProbes = 10

// smoothing is the weight of a new CPU or memory sample: with 1 s samples
// a change shows half in the first second, 90% within about three.
const smoothing = 0.5

func (m *Meter) sample() {
	now := m.cfg.Now()
	m.ticks++
	var cpu, mem float64 = -1, -1
	var err error
	switch {
	case m.cfg.Cgroup != "":
		cpu, mem, err = m.cg.sample(m.cfg.Cgroup, now, m.cfg.CPUs)
	case m.pid.Load() > 0:
		cpu, err = m.proc.sample(m.cfg.ProcRoot, int(m.pid.Load()), now, m.cfg.CPUs, m.ticks%treeRescan == 1)
	}
	if err != nil && m.ticks%60 == 1 {
		m.log.Warn("cannot measure the instance's load; reporting in-flight requests only", "err", err)
	}
	m.cpu = smooth(m.cpu, cpu)
	m.mem = smooth(m.mem, mem)
	m.publish(now)
}

func smooth(old, v float64) float64 {
	switch {
	case v < 0:
		return -1
	case old < 0:
		return v
	}
	return old + smoothing*(v-old)
}

// publish renders the current figures for Append and Last.
func (m *Meter) publish(now time.Time) {
	s := &Sample{Time: now, Source: "none", CPU: m.cpu, Mem: m.mem, Headroom: 1, InFlight: m.inFlight.Load(), LatencyMs: -1,
		Procs: len(m.proc.last)}
	switch {
	case m.cfg.Cgroup != "":
		s.Source = "cgroup"
	case m.pid.Load() > 0:
		s.Source = "proc"
	}
	s.Headroom = 1 - max(m.cpu, m.mem, 0)
	if l := math.Float64frombits(m.latency.Load()); l > 0 {
		s.LatencyMs = l
	}
	full := balancer.AppendLoad(nil, balancer.LoadReport{Headroom: s.Headroom, CPU: s.CPU, Mem: s.Mem, LatencyMs: s.LatencyMs})
	// Split around the in-flight field AppendLoad writes, so Append can put
	// the live count there.
	i := indexOf(full, ";inflight=")
	j := i + len(";inflight=")
	for j < len(full) && full[j] != ';' {
		j++
	}
	m.rendered.Store(&rendered{head: full[:i:i], tail: full[j:]})
	m.last.Store(s)
}

func indexOf(b []byte, sub string) int {
	for i := 0; i+len(sub) <= len(b); i++ {
		if string(b[i:i+len(sub)]) == sub {
			return i
		}
	}
	return len(b)
}

// ErrNoCgroup is returned by ResolveCgroup when there is no cgroup v2 to read.
var ErrNoCgroup = errors.New("no cgroup v2 with cpu.stat found")

// ResolveCgroup turns the --load-cgroup flag into a directory: "auto" is
// this process's own cgroup v2 (right when the app shares it, as in a
// container whose entrypoint is weft run); any other value must be a
// cgroup v2 directory with a cpu.stat.
func ResolveCgroup(flag string) (string, error) {
	if flag == "" {
		return "", nil
	}
	dir := flag
	if flag == "auto" {
		var err error
		if dir, err = ownCgroup("/proc"); err != nil {
			return "", fmt.Errorf("--load-cgroup auto: %w", err)
		}
	}
	if err := checkCgroup(dir); err != nil {
		return "", fmt.Errorf("--load-cgroup %s: %w", flag, err)
	}
	return dir, nil
}
