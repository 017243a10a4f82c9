package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The tail's timeline (meshbench -timeline): what the machine did while
// each of a run's slowest requests was outstanding.
//
// During the measured run `perf record` traces the kernel's scheduler on
// every CPU (sched_switch, sched_wakeup) and the madvise calls (the
// sidecars' executable trims and the Go heap's scavenger) and connect
// calls (a pool dialling because requests piled up), on
// CLOCK_MONOTONIC, the clock the load generator's schedule is on. Each slow
// request's window, from its scheduled send to its last byte, is then split
// by CPU into who was running: the path's hops, its auxiliary processes
// (weft's control plane), the load generator, the backend, anything else
// on the machine (by command name), or nothing (idle). A hop thread woken
// but kept off its CPU while something else ran is a run-queue wait; the
// longest one inside each window is reported with what ran meanwhile.

// stealProbe is the period of the cpu-clock samples that find the time a
// CPU was not running at all. On a virtual machine the hypervisor can stop
// a vCPU (steal time): the guest's scheduler sees nothing (the task that
// was on the CPU looks like it ran on), but its hrtimer-driven samples stop,
// idle or busy, so a gap between two of them longer than two periods is
// time the CPU was away. At 4 kHz per CPU the samples cost about 1% of a
// CPU, every path alike.
const stealProbe = 250 * time.Microsecond

// SchedTrace is a running `perf record` of the scheduler.
type SchedTrace struct {
	cmd  *exec.Cmd
	file string
	log  string
	done chan error
}

// StartSchedTrace starts perf recording into file, itself pinned to cpu
// (the load generator's; "" = unpinned) so that the tracer's own wake-ups
// stay off the proxies' core. It returns nil when perf is missing or fails
// to start (the report then has no timeline).
func StartSchedTrace(file, cpu, taskset string) (*SchedTrace, error) {
	perf := LookBinary("perf")
	if perf == "" {
		return nil, fmt.Errorf("perf not found (Debian: linux-perf)")
	}
	argv := []string{perf, "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-m", "1024",
		"-e", "sched:sched_switch", "-e", "sched:sched_wakeup", "-e", "syscalls:sys_enter_madvise", "-e", "syscalls:sys_enter_connect",
		"-e", fmt.Sprintf("cpu-clock/period=%d/", stealProbe.Nanoseconds()), "-o", file}
	if cpu != "" && taskset != "" {
		argv = append([]string{taskset, "-c", cpu}, argv...)
	}
	logf := file + ".log"
	lf, err := os.Create(logf)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := &SchedTrace{cmd: cmd, file: file, log: logf, done: make(chan error, 1)}
	go func() { t.done <- cmd.Wait() }()
	// perf needs a moment to open its events on every CPU; events before
	// that are lost, so give it the time the warm-up would anyway.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(file); err == nil && st.Size() > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	return t, nil
}

// Stop ends the recording (SIGINT, as perf expects) and waits for it.
func (t *SchedTrace) Stop() error {
	if t == nil {
		return nil
	}
	_ = t.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-t.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGINT {
				err = nil // perf re-raises the SIGINT it handled, once the file is written
			}
		}
		if err != nil {
			b, _ := os.ReadFile(t.log)
			return fmt.Errorf("perf record: %v: %s", err, strings.TrimSpace(string(b)))
		}
		return nil
	case <-time.After(20 * time.Second):
		_ = t.cmd.Process.Kill()
		<-t.done
		return fmt.Errorf("perf record did not stop")
	}
}

// Events reads the recording back through `perf script`.
func (t *SchedTrace) Events() ([]SchedEvent, error) {
	perf := LookBinary("perf")
	cmd := exec.Command(perf, "script", "-i", t.file, "--ns", "-F", "pid,tid,cpu,time,event,trace")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	evs, perr := ParseSchedScript(out)
	werr := cmd.Wait()
	if perr != nil {
		return evs, perr
	}
	if werr != nil && len(evs) == 0 {
		return nil, fmt.Errorf("perf script: %w", werr)
	}
	return evs, nil
}

// Remove deletes the recording.
func (t *SchedTrace) Remove() {
	if t != nil {
		os.Remove(t.file)
		os.Remove(t.log)
	}
}

// SchedEvent is one traced kernel event.
type SchedEvent struct {
	T    int64 // CLOCK_MONOTONIC ns
	CPU  int
	Kind byte // 's' switch, 'w' wake-up, 'm' madvise, 'k' connect, 'c' cpu-clock sample
	PID  int  // process (thread group) of the task current when it fired
	TID  int
	// switch: the task leaving the CPU (TID) and the one taking it;
	// wake-up: the task woken and the CPU it will run on.
	PrevComm  string
	PrevState string
	NextTID   int
	NextComm  string
	WakeTID   int
	WakeComm  string
	WakeCPU   int
}

var (
	reHead   = regexp.MustCompile(`^\s*(-?\d+)/(-?\d+)\s+\[(\d+)\]\s+(\d+)\.(\d+):\s+(\S+):\s?(.*)$`)
	reSwitch = regexp.MustCompile(`prev_comm=(.*) prev_pid=(\d+) prev_prio=\S+ prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+) next_prio=`)
	reWake   = regexp.MustCompile(`comm=(.*) pid=(\d+) prio=\S+(?: success=\d+)? target_cpu=(\d+)`)
)

// ParseSchedScript parses `perf script --ns -F pid,tid,cpu,time,event,trace`.
func ParseSchedScript(r io.Reader) ([]SchedEvent, error) {
	var evs []SchedEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := reHead.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var e SchedEvent
		e.PID, _ = strconv.Atoi(m[1])
		e.TID, _ = strconv.Atoi(m[2])
		e.CPU, _ = strconv.Atoi(m[3])
		sec, _ := strconv.ParseInt(m[4], 10, 64)
		frac := m[5]
		for len(frac) < 9 {
			frac += "0"
		}
		ns, _ := strconv.ParseInt(frac[:9], 10, 64)
		e.T = sec*1e9 + ns
		switch {
		case strings.HasSuffix(m[6], "sched_switch"):
			s := reSwitch.FindStringSubmatch(m[7])
			if s == nil {
				continue
			}
			e.Kind = 's'
			e.PrevComm, e.PrevState, e.NextComm = s[1], s[3], s[4]
			e.NextTID, _ = strconv.Atoi(s[5])
			if tid, _ := strconv.Atoi(s[2]); tid != e.TID {
				e.TID = tid // perf's sample is the leaving task; keep the kernel's word
			}
		case strings.HasSuffix(m[6], "sched_wakeup"):
			w := reWake.FindStringSubmatch(m[7])
			if w == nil {
				continue
			}
			e.Kind = 'w'
			e.WakeComm = w[1]
			e.WakeTID, _ = strconv.Atoi(w[2])
			e.WakeCPU, _ = strconv.Atoi(w[3])
		case strings.Contains(m[6], "madvise"):
			e.Kind = 'm'
		case strings.Contains(m[6], "sys_enter_connect"):
			e.Kind = 'k'
		case strings.HasPrefix(m[6], "cpu-clock"):
			e.Kind = 'c'
		default:
			continue
		}
		evs = append(evs, e)
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].T < evs[j].T })
	return evs, sc.Err()
}

// Roles names processes by pid: the path's hops, its auxiliary processes,
// the load generator, the backend. Threads of other processes are named
// "other:<command>", idle CPUs "idle".
type Roles map[int]string

const (
	roleIdle   = "idle"
	roleSteal  = "steal"
	otherLabel = "other:"
)

// runSlice is a stretch of one CPU given to one task.
type runSlice struct {
	start, end int64
	pid, tid   int
	comm       string
}

// wait is a hop thread woken and not yet running.
type wait struct {
	tid, cpu   int
	woken, ran int64
}

// Timeline is a scheduler trace cut into what each CPU ran, ready to be
// asked about windows of time.
type Timeline struct {
	slices  map[int][]runSlice // by CPU, in time order
	steal   map[int][][2]int64 // by CPU: stretches with no cpu-clock sample (the vCPU was away)
	waits   []wait
	madvise []SchedEvent
	connect []SchedEvent
	tgid    map[int]int // tid -> pid, as seen leaving a CPU
	roles   Roles
	first   int64
	last    int64
}

// BuildTimeline cuts evs (in time order) into per-CPU run slices and
// run-queue waits.
func BuildTimeline(evs []SchedEvent, roles Roles) *Timeline {
	tl := &Timeline{slices: map[int][]runSlice{}, steal: map[int][][2]int64{}, tgid: map[int]int{}, roles: roles}
	lastSwitch := map[int]int64{}
	lastSample := map[int]SchedEvent{}
	woken := map[int]int64{} // tid -> wake-up time, while not yet on a CPU
	wokenCPU := map[int]int{}
	if len(evs) > 0 {
		tl.first, tl.last = evs[0].T, evs[len(evs)-1].T
	}
	for _, e := range evs {
		switch e.Kind {
		case 's':
			if e.TID != 0 {
				tl.tgid[e.TID] = e.PID
			}
			if t0, ok := lastSwitch[e.CPU]; ok {
				tl.slices[e.CPU] = append(tl.slices[e.CPU], runSlice{start: t0, end: e.T, pid: e.PID, tid: e.TID, comm: e.PrevComm})
			}
			lastSwitch[e.CPU] = e.T
			if w, ok := woken[e.NextTID]; ok {
				tl.waits = append(tl.waits, wait{tid: e.NextTID, cpu: e.CPU, woken: w, ran: e.T})
				delete(woken, e.NextTID)
				delete(wokenCPU, e.NextTID)
			}
			if e.PrevState == "R" || e.PrevState == "R+" {
				// Preempted: still runnable, waiting from now.
				woken[e.TID] = e.T
				wokenCPU[e.TID] = e.CPU
			}
		case 'w':
			if _, ok := woken[e.WakeTID]; !ok {
				woken[e.WakeTID] = e.T
				wokenCPU[e.WakeTID] = e.WakeCPU
			}
		case 'm':
			tl.madvise = append(tl.madvise, e)
		case 'k':
			tl.connect = append(tl.connect, e)
		case 'c':
			// A gap counts only when a task was on the CPU as it began: an
			// idle CPU stops its tick and takes no samples (NO_HZ).
			if l, ok := lastSample[e.CPU]; ok && l.PID != 0 && e.T-l.T > 2*stealProbe.Nanoseconds() {
				// Away from the end of the period after the last sample
				// until this one.
				tl.steal[e.CPU] = append(tl.steal[e.CPU], [2]int64{l.T + stealProbe.Nanoseconds(), e.T})
			}
			lastSample[e.CPU] = e
		}
		if e.Kind == 's' && e.NextTID == 0 {
			// Going idle: no sample is due until the CPU runs a task again.
			delete(lastSample, e.CPU)
		}
	}
	return tl
}

func (tl *Timeline) label(pid int, comm string) string {
	if pid == 0 {
		return roleIdle
	}
	if r, ok := tl.roles[pid]; ok {
		return r
	}
	c := comm
	if i := strings.IndexAny(c, "/:"); i > 0 {
		c = c[:i] // kworker/1:2 -> kworker
	}
	return otherLabel + c
}

// CPUTime is, for one CPU and window, the time each label ran (ms).
type CPUTime map[string]float64

// Occupancy is what each CPU ran during [from, to).
func (tl *Timeline) Occupancy(from, to int64) map[int]CPUTime {
	out := map[int]CPUTime{}
	for cpu, ss := range tl.slices {
		i := sort.Search(len(ss), func(i int) bool { return ss[i].end > from })
		ct := CPUTime{}
		for ; i < len(ss) && ss[i].start < to; i++ {
			s := ss[i]
			a, b := max(s.start, from), min(s.end, to)
			if d := b - a - tl.stolen(cpu, a, b); d > 0 {
				ct[tl.label(s.pid, s.comm)] += float64(d) / 1e6
			}
		}
		if st := tl.stolen(cpu, from, to); st > 0 {
			ct[roleSteal] += float64(st) / 1e6
		}
		out[cpu] = ct
	}
	return out
}

// quietForeign is how much foreign CPU time (stolen, or another process's)
// a request's window may hold and still count as quiet.
const quietForeign = 50 * time.Microsecond

// foreign is the time in [from, to) when a CPU was stolen or ran a process
// of the machine that is not the harness's or the path's. The kernel's
// softirq threads are not counted: they carry the path's own loopback
// traffic.
func (tl *Timeline) foreign(from, to int64) time.Duration {
	var n int64
	for cpu, ss := range tl.slices {
		n += tl.stolen(cpu, from, to)
		i := sort.Search(len(ss), func(i int) bool { return ss[i].end > from })
		for ; i < len(ss) && ss[i].start < to; i++ {
			s := ss[i]
			if s.pid == 0 {
				continue
			}
			if _, ok := tl.roles[s.pid]; ok || strings.HasPrefix(s.comm, "ksoftirqd") {
				continue
			}
			a, b := max(s.start, from), min(s.end, to)
			if d := b - a - tl.stolen(cpu, a, b); d > 0 {
				n += d
			}
		}
	}
	return time.Duration(n)
}

// stolen is how much of [from, to) cpu was away (ns).
func (tl *Timeline) stolen(cpu int, from, to int64) int64 {
	st := tl.steal[cpu]
	i := sort.Search(len(st), func(i int) bool { return st[i][1] > from })
	var n int64
	for ; i < len(st) && st[i][0] < to; i++ {
		if d := min(st[i][1], to) - max(st[i][0], from); d > 0 {
			n += d
		}
	}
	return n
}

// LongestWait is the longest run-queue wait of a thread of the given
// roles overlapping [from, to): who waited, for how long (ms), on which
// CPU, and what that CPU ran meanwhile.
func (tl *Timeline) LongestWait(from, to int64, roles map[string]bool) (who string, ms float64, cpu int, meanwhile CPUTime) {
	var best *wait
	for i := range tl.waits {
		w := &tl.waits[i]
		if w.ran <= from || w.woken >= to {
			continue
		}
		if !roles[tl.roles[tl.tgid[w.tid]]] {
			continue
		}
		if best == nil || w.ran-w.woken > best.ran-best.woken {
			best = w
		}
	}
	if best == nil {
		return "", 0, -1, nil
	}
	return tl.roles[tl.tgid[best.tid]], float64(best.ran-best.woken) / 1e6, best.cpu, tl.Occupancy(best.woken, best.ran)[best.cpu]
}

// Madvise lists the madvise calls in [from, to) by label.
func (tl *Timeline) Madvise(from, to int64) []string { return tl.calls(tl.madvise, from, to) }

// Connects lists the connect calls (dials) of the path's processes in
// [from, to) by label.
func (tl *Timeline) Connects(from, to int64) []string { return tl.calls(tl.connect, from, to) }

func (tl *Timeline) calls(evs []SchedEvent, from, to int64) []string {
	var out []string
	for _, e := range evs {
		if r, ok := tl.roles[e.PID]; ok && e.T >= from && e.T < to {
			out = append(out, r)
		}
	}
	return out
}

// GCEvent is one collection of a Go process, from its GODEBUG=gctrace=1
// line (stamped by the harness when read: the line is printed at the end
// of the cycle).
type GCEvent struct {
	Proc  string
	End   int64   // CLOCK_MONOTONIC ns the line was read
	Clock float64 // wall ms of the cycle: STW sweep termination + concurrent mark + STW mark termination
	Line  string
}

var reGC = regexp.MustCompile(`^@(\d+) (gc \d+ @\S+ \S+ ([\d.]+)\+([\d.]+)\+([\d.]+) ms clock.*)$`)

// ReadGCTrace reads the gctrace lines of a stamped log (ProcSpec.Stamp).
func ReadGCTrace(proc, logPath string) []GCEvent {
	f, err := os.Open(logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []GCEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := reGC.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		t, _ := strconv.ParseInt(m[1], 10, 64)
		a, _ := strconv.ParseFloat(m[3], 64)
		b, _ := strconv.ParseFloat(m[4], 64)
		c, _ := strconv.ParseFloat(m[5], 64)
		out = append(out, GCEvent{Proc: proc, End: t, Clock: a + b + c, Line: m[2]})
	}
	return out
}

// SlowExplained is one slow request with what the machine did meanwhile.
type SlowExplained struct {
	AtMs      float64 `json:"at_ms"` // scheduled send, from the run's first
	LatencyMs float64 `json:"latency_ms"`
	Err       bool    `json:"err,omitempty"`
	// CPUms is, per CPU, the time each process ran inside the window (ms).
	CPUms map[string]CPUTime `json:"cpu_ms,omitempty"`
	// WaitMs is the longest run-queue wait of a hop thread in the window:
	// woken, and kept off its CPU while WaitMeanwhile ran.
	WaitMs        float64  `json:"hop_wait_ms,omitempty"`
	WaitWho       string   `json:"hop_wait_who,omitempty"`
	WaitCPU       int      `json:"hop_wait_cpu,omitempty"`
	WaitMeanwhile CPUTime  `json:"hop_wait_meanwhile_ms,omitempty"`
	GC            []string `json:"gc,omitempty"`      // collections overlapping the window
	Madvise       []string `json:"madvise,omitempty"` // madvise calls in the window, by process
	// Dials are the connect calls of the path's processes (and the load
	// generator's) from 5 ms before the window to its end.
	Dials []string `json:"dials,omitempty"`
	// Cause is the request's likeliest cause (see cause).
	Cause string `json:"cause,omitempty"`
}

// Causes of a slow request, from what ran during its window.
const (
	CauseSteal     = "steal"     // the hypervisor took a vCPU
	CauseNeighbour = "neighbour" // another process of the machine ran on a CPU of the path
	CauseAux       = "aux"       // the path's auxiliary process (weft's control plane)
	CauseGC        = "gc"        // a collection of a hop overlapped
	CauseOwn       = "own"       // none of these: the path (or the harness) itself
)

// causeShare is the share of a window a foreign use of the CPUs must have
// to be named its cause.
const causeShare = 0.3

// cause names what most likely made x slow: the largest of the time
// stolen by the hypervisor, run by other processes, or run by the path's
// auxiliaries, on any CPU, if it is at least causeShare of the latency;
// else a collection of a hop overlapping; else the path itself.
func (x *SlowExplained) cause(auxRoles map[string]bool) string {
	var steal, other, aux float64
	for _, ct := range x.CPUms {
		for k, v := range ct {
			switch {
			case k == roleSteal:
				steal += v
			case strings.HasPrefix(k, otherLabel):
				other += v
			case auxRoles[k]:
				aux += v
			}
		}
	}
	best, bv := "", 0.0
	for _, c := range []struct {
		name string
		v    float64
	}{{CauseSteal, steal}, {CauseNeighbour, other}, {CauseAux, aux}} {
		if c.v > bv {
			best, bv = c.name, c.v
		}
	}
	if best != "" && bv >= causeShare*x.LatencyMs {
		return best
	}
	if len(x.GC) > 0 {
		return CauseGC
	}
	return CauseOwn
}

// Explain lines each slow request up against the timeline and the
// collections. hopRoles are the labels whose waits count.
func Explain(slow []SlowRequest, startMono int64, tl *Timeline, gcs []GCEvent, hopRoles, auxRoles map[string]bool) []SlowExplained {
	out := make([]SlowExplained, 0, len(slow))
	for _, s := range slow {
		from := startMono + s.At.Nanoseconds()
		to := from + s.Latency.Nanoseconds()
		x := SlowExplained{AtMs: ms(s.At), LatencyMs: ms(s.Latency), Err: s.Err}
		if tl != nil {
			x.CPUms = map[string]CPUTime{}
			for cpu, ct := range tl.Occupancy(from, to) {
				x.CPUms[strconv.Itoa(cpu)] = roundCPU(ct)
			}
			who, w, cpu, meanwhile := tl.LongestWait(from, to, hopRoles)
			if who != "" {
				x.WaitMs, x.WaitWho, x.WaitCPU, x.WaitMeanwhile = round3(w), who, cpu, roundCPU(meanwhile)
			}
			x.Madvise = tl.Madvise(from, to)
			x.Dials = tl.Connects(from-5e6, to)
		}
		for _, g := range gcs {
			gs := g.End - int64(g.Clock*1e6)
			if hopRoles[g.Proc] && g.End >= from && gs < to {
				x.GC = append(x.GC, fmt.Sprintf("%s %s (ended %+.1f ms)", g.Proc, g.Line[:min(len(g.Line), 48)], float64(g.End-from)/1e6))
			}
		}
		if tl != nil {
			x.Cause = x.cause(auxRoles)
		} else if len(x.GC) > 0 {
			x.Cause = CauseGC
		}
		out = append(out, x)
	}
	return out
}

func ms(d time.Duration) float64 { return round3(float64(d) / 1e6) }

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

func roundCPU(ct CPUTime) CPUTime {
	out := CPUTime{}
	for k, v := range ct {
		if r := round3(v); r > 0 {
			out[k] = r
		}
	}
	return out
}

// TimelineSummary sums the slow windows: for the proxies' CPU, how much of
// the windows' time each label had, beside its share of the whole run (if
// the slow windows' share of a neighbour is far above its share of the
// run, the neighbour is what makes them slow).
type TimelineSummary struct {
	CPU       int                `json:"cpu"`
	SlowShare map[string]float64 `json:"slow_windows_share"`
	RunShare  map[string]float64 `json:"run_share"`
	// WaitsOver1ms counts hop run-queue waits longer than 1 ms over the
	// whole run, by what held the CPU most of that time.
	WaitsOver1ms map[string]int `json:"hop_waits_over_1ms_by_holder,omitempty"`
	// LongRuns are the hops' stretches of more than 1 ms on this CPU
	// without a switch (one thread busy: a collection, a scrape, a burst),
	// "<hop> @<ms from the run's start> <ms>".
	LongRuns []string `json:"hop_runs_over_1ms,omitempty"`
	// Steal is the CPU's stretches away (no cpu-clock sample) longer than
	// 1 ms, "@<ms from the run's start> <ms>", and their total.
	Steal   []string `json:"steal_over_1ms,omitempty"`
	StealMs float64  `json:"steal_ms"`
}

// Summarize sums the slow windows and the run on cpu.
func (tl *Timeline) Summarize(cpu int, xs []SlowExplained, runFrom, runTo int64, hopRoles map[string]bool) TimelineSummary {
	s := TimelineSummary{CPU: cpu, SlowShare: map[string]float64{}, RunShare: map[string]float64{}, WaitsOver1ms: map[string]int{}}
	total := 0.0
	for _, x := range xs {
		for k, v := range x.CPUms[strconv.Itoa(cpu)] {
			s.SlowShare[k] += v
			total += v
		}
	}
	for k := range s.SlowShare {
		s.SlowShare[k] = round3(s.SlowShare[k] / total)
	}
	run := tl.Occupancy(runFrom, runTo)[cpu]
	rt := 0.0
	for _, v := range run {
		rt += v
	}
	for k, v := range run {
		if r := round3(v / rt); r > 0 {
			s.RunShare[k] = r
		}
	}
	for _, sl := range tl.slices[cpu] {
		if sl.end-sl.start > 1e6 && sl.end > runFrom && sl.start < runTo && hopRoles[tl.roles[sl.pid]] {
			r := fmt.Sprintf("%s @%.1f %.2f", tl.roles[sl.pid], float64(sl.start-runFrom)/1e6, float64(sl.end-sl.start)/1e6)
			if st := tl.stolen(cpu, sl.start, sl.end); st > 0 {
				r += fmt.Sprintf(" (%.2f stolen)", float64(st)/1e6)
			}
			s.LongRuns = append(s.LongRuns, r)
		}
	}
	for _, st := range tl.steal[cpu] {
		if st[1] <= runFrom || st[0] >= runTo {
			continue
		}
		s.StealMs += float64(st[1]-st[0]) / 1e6
		if st[1]-st[0] > 1e6 {
			s.Steal = append(s.Steal, fmt.Sprintf("@%.1f %.2f", float64(st[0]-runFrom)/1e6, float64(st[1]-st[0])/1e6))
		}
	}
	s.StealMs = round3(s.StealMs)
	for _, w := range tl.waits {
		if w.ran-w.woken < 1e6 || w.ran < runFrom || w.woken > runTo || !hopRoles[tl.roles[tl.tgid[w.tid]]] {
			continue
		}
		best, bv := "", 0.0
		for k, v := range tl.Occupancy(w.woken, w.ran)[w.cpu] {
			if v > bv {
				best, bv = k, v
			}
		}
		s.WaitsOver1ms[best]++
	}
	return s
}

// shareLine prints the largest shares of a map, largest first.
func shareLine(m map[string]float64, n int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	var b strings.Builder
	for i, k := range keys {
		if i == n {
			break
		}
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s %.0f%%", k, 100*m[k])
	}
	return b.String()
}

// cpuLine prints a CPUTime, largest first, in ms.
func cpuLine(ct CPUTime, n int) string { return topN(ct, n) }

// topN prints the n largest values of m, largest first ("name 1.23"; ties
// by name).
func topN(m map[string]float64, n int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		if i == n {
			break
		}
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s %.2f", k, m[k])
	}
	return b.String()
}

// explainSlowest fills r.Slowest (and, with a trace, r.Timeline) from the
// run's slowest requests.
func (r *RunResult) explainSlowest(cfg Config, res *LoadResult, trace *SchedTrace, topo *Topology, base Roles, backend *Proc) {
	roles := Roles{}
	for k, v := range base {
		roles[k] = v
	}
	hopRoles := map[string]bool{}
	for _, h := range topo.Hops {
		for _, p := range Descendants(h.PID()) {
			roles[p] = h.Name
		}
		hopRoles[h.Name] = true
	}
	auxRoles := map[string]bool{}
	for _, a := range topo.Aux {
		roles[a.PID()] = a.Name
		auxRoles[a.Name] = true
	}
	var tl *Timeline
	if trace != nil {
		roles[trace.cmd.Process.Pid] = "tracer" // the harness's own, on the load generator's CPU
		evs, err := trace.Events()
		if err != nil {
			fmt.Fprintf(cfg.Log, "timeline: %v\n", err)
		} else {
			tl = BuildTimeline(evs, roles)
		}
	}
	var gcs []GCEvent
	runFrom, runTo := res.StartMono, res.StartMono+res.Elapsed.Nanoseconds()
	if cfg.GCTrace {
		procs := append([]*Proc{backend}, topo.procs...)
		for _, p := range procs {
			for _, g := range ReadGCTrace(p.Name, p.Log) {
				gcs = append(gcs, g)
				if g.End >= runFrom && g.End < runTo {
					if r.GCs == nil {
						r.GCs = map[string]int{}
					}
					r.GCs[p.Name]++
				}
			}
		}
	}
	if tl != nil && len(res.All) > 0 {
		h := NewHistogram()
		for _, q := range res.All {
			from := res.StartMono + q.At.Nanoseconds()
			if tl.foreign(from, from+q.Latency.Nanoseconds()) <= quietForeign {
				_ = h.RecordValue(max(min(q.Latency.Microseconds(), histHighest), histLowest))
			}
		}
		l := Summarize(h)
		r.Quiet = &l
		r.QuietShare = Num(float64(h.TotalCount()) / float64(len(res.All)))
	}
	r.Slowest = Explain(res.Slowest, res.StartMono, tl, gcs, hopRoles, auxRoles)
	for _, x := range r.Slowest {
		if x.Cause != "" {
			if r.Causes == nil {
				r.Causes = map[string]int{}
			}
			r.Causes[x.Cause]++
		}
	}
	if tl != nil {
		if d := tl.Connects(runFrom, runTo); len(d) > 0 {
			r.Dials = map[string]int{}
			for _, x := range d {
				r.Dials[x]++
			}
		}
		cpus := make([]int, 0, len(tl.slices))
		for c := range tl.slices {
			cpus = append(cpus, c)
		}
		sort.Ints(cpus)
		for _, c := range cpus {
			r.Timeline = append(r.Timeline, tl.Summarize(c, r.Slowest, runFrom, runTo, hopRoles))
		}
	}
}

// timelineLines prints a run's timeline summaries and its n slowest
// requests explained, for the progress log.
func timelineLines(r *RunResult, n int) string {
	var b strings.Builder
	for _, s := range r.Timeline {
		fmt.Fprintf(&b, "    cpu%d  slow windows: %s\n          whole run:    %s\n", s.CPU, shareLine(s.SlowShare, 6), shareLine(s.RunShare, 6))
		if len(s.WaitsOver1ms) > 0 {
			keys := make([]string, 0, len(s.WaitsOver1ms))
			for k := range s.WaitsOver1ms {
				keys = append(keys, k)
			}
			sort.Slice(keys, func(i, j int) bool { return s.WaitsOver1ms[keys[i]] > s.WaitsOver1ms[keys[j]] })
			fmt.Fprintf(&b, "          hop waits > 1 ms, by what held the CPU:")
			for _, k := range keys {
				fmt.Fprintf(&b, " %s %d", k, s.WaitsOver1ms[k])
			}
			b.WriteString("\n")
		}
		if len(s.Steal) > 0 || s.StealMs > 0 {
			fmt.Fprintf(&b, "          vCPU away (steal) %.1f ms in all; > 1 ms: %s\n", s.StealMs, strings.Join(s.Steal, ", "))
		}
		if len(s.LongRuns) > 0 {
			fmt.Fprintf(&b, "          hop runs > 1 ms: %s\n", strings.Join(s.LongRuns, ", "))
		}
	}
	byName(&b, "    /proc/stat steal in the run (10 ms ticks):", r.StealMs, " cpu%s %.0f ms")
	byName(&b, "    collections in the run:", r.GCs, " %s %d")
	byName(&b, "    connect calls in the run:", r.Dials, " %s %d")
	if len(r.HopSockets) > 0 {
		fmt.Fprintf(&b, "    hop sockets before -> after:")
		for _, hs := range r.HopSockets {
			fmt.Fprintf(&b, " %d -> %d", hs[0], hs[1])
		}
		b.WriteString("\n")
	}
	if r.Quiet != nil {
		fmt.Fprintf(&b, "    quiet requests (%.1f%%): p50 %.3f p99 %.3f p99.9 %.3f ms\n", 100*float64(r.QuietShare), r.Quiet.P50, r.Quiet.P99, r.Quiet.P999)
	}
	if len(r.Causes) > 0 {
		fmt.Fprintf(&b, "    causes of the %d slowest:", len(r.Slowest))
		for _, c := range []string{CauseSteal, CauseNeighbour, CauseAux, CauseGC, CauseOwn} {
			if r.Causes[c] > 0 {
				fmt.Fprintf(&b, " %s %d", c, r.Causes[c])
			}
		}
		b.WriteString("\n")
	}
	shown := 0
	for _, x := range r.Slowest {
		// The slowest few, then those the machine does not explain.
		if shown >= n && x.Cause != CauseOwn && x.Cause != CauseGC && x.Cause != CauseAux {
			continue
		}
		if shown >= 2*n {
			break
		}
		shown++
		fmt.Fprintf(&b, "    slow @%.1f ms took %.2f ms [%s]:", x.AtMs, x.LatencyMs, x.Cause)
		cpus := make([]string, 0, len(x.CPUms))
		for c := range x.CPUms {
			cpus = append(cpus, c)
		}
		sort.Strings(cpus)
		for _, c := range cpus {
			fmt.Fprintf(&b, " cpu%s[%s]", c, cpuLine(x.CPUms[c], 5))
		}
		if x.WaitWho != "" {
			fmt.Fprintf(&b, " longest hop wait %.2f ms %s on cpu%d behind [%s]", x.WaitMs, x.WaitWho, x.WaitCPU, cpuLine(x.WaitMeanwhile, 3))
		}
		if len(x.GC) > 0 {
			fmt.Fprintf(&b, " gc[%s]", strings.Join(x.GC, "; "))
		}
		if len(x.Madvise) > 0 {
			fmt.Fprintf(&b, " madvise[%s]", countLine(x.Madvise))
		}
		if len(x.Dials) > 0 {
			fmt.Fprintf(&b, " dials[%s]", countLine(x.Dials))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// ReadSteal is each CPU's steal time from /proc/stat (the 8th figure of a
// "cpuN" line: time the hypervisor ran something else while this vCPU had
// work), in ms, by CPU number.
func ReadSteal() map[string]float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		v, err := strconv.ParseFloat(f[8], 64)
		if err == nil {
			out[strings.TrimPrefix(f[0], "cpu")] = v * 1000 / float64(ClockTicks())
		}
	}
	return out
}

// stealDelta is after - before, per CPU.
func stealDelta(before, after map[string]float64) map[string]float64 {
	if before == nil || after == nil {
		return nil
	}
	out := map[string]float64{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

// countLine prints "a ×2 b" for [a a b].
func countLine(xs []string) string {
	n := map[string]int{}
	var order []string
	for _, x := range xs {
		if n[x] == 0 {
			order = append(order, x)
		}
		n[x]++
	}
	var b strings.Builder
	for i, x := range order {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(x)
		if n[x] > 1 {
			fmt.Fprintf(&b, " ×%d", n[x])
		}
	}
	return b.String()
}

// byName writes title and then each of m's entries in name order with
// format (name, value), and a newline; nothing when m is empty.
func byName[V int | float64](b *strings.Builder, title string, m map[string]V, format string) {
	if len(m) == 0 {
		return
	}
	b.WriteString(title)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(b, format, k, m[k])
	}
	b.WriteString("\n")
}
