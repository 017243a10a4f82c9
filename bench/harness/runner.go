package harness

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Config is one benchmark.
type Config struct {
	Paths    []string
	Rates    []int // open-model rates, req/s
	Duration time.Duration
	Warmup   time.Duration // unrecorded load before each measured run
	Rounds   int
	Max      bool // closed-loop max-throughput run after the rates
	MaxConns int  // connections of the closed-loop run
	// IdleConns are the idle kept-alive connection counts at which each
	// proxy path's memory is read once (round 1, the path started afresh);
	// none: not measured.
	IdleConns []int

	WeftBin    string
	HAProxyBin string
	NginxBin   string
	// Self is an executable that becomes the backend when started with
	// backendEnv (meshbench itself, or the test binary); default: this one.
	Self string

	Workdir   string // scratch; logs and configs stay there
	Pin       bool   // taskset: load generator + backend on LoadCPU, proxies on ProxyCPU
	LoadCPU   string
	ProxyCPU  string
	ReadyWait time.Duration
	// Perf counts the hops' syscalls with `perf stat` during each measured
	// run (SyscallsPerReq); context switches are always counted, from /proc.
	Perf bool
	// Slowest is how many of each run's slowest requests the report keeps
	// (scheduled time and latency); 0 = DefaultSlowest, negative = none.
	Slowest int
	// Timeline traces the scheduler on every CPU during each measured run
	// (perf record) and explains each kept slow request by what ran while
	// it was outstanding (timeline.go).
	Timeline bool
	// GCTrace: GODEBUG=gctrace=1 for weft's processes and the backend,
	// their collections lined up with the slow requests.
	GCTrace bool
	// ControlCPU is where weft's control plane runs: "" or "proxies" = on
	// ProxyCPU beside the sidecars, "loadgen" = on LoadCPU.
	ControlCPU string

	Log     io.Writer // progress lines; nil = discard
	Command string    // recorded in the report
}

// RunKind distinguishes open-model runs from the closed-loop max run.
const (
	KindOpen   = "open"
	KindClosed = "closed"
)

// RunResult is one measured run of one path at one rate in one round.
type RunResult struct {
	Round    int     `json:"round"`
	Path     string  `json:"path"`
	Kind     string  `json:"kind"`
	Rate     int     `json:"rate"` // target req/s; 0 for the max run
	Conns    int     `json:"conns,omitempty"`
	Latency  Latency `json:"latency"`
	Sent     int64   `json:"sent"`
	OK       int64   `json:"ok"`
	Errors   int64   `json:"errors"`
	ErrorMsg string  `json:"error_kinds,omitempty"`
	Achieved float64 `json:"achieved_rps"`
	Elapsed  float64 `json:"elapsed_s"`
	// Proxy CPU: utime+stime of the hops' process trees over the run.
	ProxyCPUSeconds float64 `json:"proxy_cpu_s"`
	ProxyCPUPerReq  Num     `json:"proxy_cpu_us_per_req"`
	ProxyCPUUtil    Num     `json:"proxy_cpu_cores"` // CPU seconds per wall second
	AuxCPUPerReq    Num     `json:"aux_cpu_us_per_req,omitempty"`
	// Context switches (voluntary + involuntary, every thread) and, with
	// Config.Perf, syscalls of the hops per completed request.
	SwitchesPerReq       Num                `json:"ctx_switches_per_req"`
	ThreadSwitchesPerReq []float64          `json:"busiest_threads_ctx_switches_per_req,omitempty"`
	SyscallsPerReq       Num                `json:"syscalls_per_req"`
	Syscalls             map[string]float64 `json:"syscalls_by_name_per_req,omitempty"`
	// Resident memory, bytes: at the end of the run, and the highest seen
	// during it (sampled every memSampleInterval, and at the end). PSS
	// counts a page shared by n processes (the executable's, mostly) as 1/n
	// in each, so it is what a process costs on a host running several of
	// it. A hop's figure sums its process tree; its PSS is 0 when a
	// process's was unreadable.
	HopRSS     []int64          `json:"hop_rss_bytes,omitempty"`
	HopRSSPeak []int64          `json:"hop_rss_peak_bytes,omitempty"`
	HopPSS     []int64          `json:"hop_pss_bytes,omitempty"`
	HopPSSPeak []int64          `json:"hop_pss_peak_bytes,omitempty"`
	RSS        map[string]int64 `json:"rss_bytes,omitempty"` // per process
	RSSPeak    map[string]int64 `json:"rss_peak_bytes,omitempty"`
	PSS        map[string]int64 `json:"pss_bytes,omitempty"`
	PSSPeak    map[string]int64 `json:"pss_peak_bytes,omitempty"`
	RSSAnon    map[string]int64 `json:"rss_anon_bytes,omitempty"` // at the end
	RSSFile    map[string]int64 `json:"rss_file_bytes,omitempty"`
	AuxRSS     map[string]int64 `json:"aux_rss_bytes,omitempty"`
	AuxPSS     map[string]int64 `json:"aux_pss_bytes,omitempty"`
	// Added latency vs direct at the same rate in the same round.
	AddedP50 Num `json:"added_p50_ms"`
	AddedP99 Num `json:"added_p99_ms"`
	// StartMono is the run's first scheduled send on CLOCK_MONOTONIC (ns);
	// Slowest are its slowest requests, slowest first, with (-timeline)
	// what ran on each CPU meanwhile; Timeline sums them per CPU.
	StartMono int64             `json:"start_mono_ns,omitempty"`
	Slowest   []SlowExplained   `json:"slowest,omitempty"`
	Timeline  []TimelineSummary `json:"timeline,omitempty"`
	// GCs counts each process's collections during the run (-gctrace).
	GCs map[string]int `json:"gcs,omitempty"`
	// Quiet is the latency of the requests during which neither the
	// hypervisor nor another process of the machine took a CPU of the
	// path for more than quietForeign (-timeline), and QuietShare their
	// share of all: the path's own tail, with the machine's noise taken
	// out (the requests delayed by a backlog a disturbance left stay in).
	Quiet      *Latency `json:"quiet_latency,omitempty"`
	QuietShare Num      `json:"quiet_share,omitempty"`
	// HopSockets is each hop's open sockets (its process tree's socket
	// descriptors) before and after the run: a rise is connections the
	// hop opened (or accepted) because of the run, a pool dialling more
	// when requests pile up.
	HopSockets [][2]int `json:"hop_sockets_before_after,omitempty"`
	// Dials counts the connect calls of the path's processes and the load
	// generator during the run, by process (-timeline).
	Dials map[string]int `json:"dials,omitempty"`
	// Causes counts the Slowest by their likeliest cause (-timeline).
	Causes map[string]int `json:"slow_causes,omitempty"`
	// StealMs is each CPU's steal time over the run from /proc/stat (ms,
	// in 10 ms ticks): the hypervisor running something else while the
	// vCPU had work. It stalls whatever ran there, every path alike.
	StealMs map[string]float64 `json:"steal_ms_by_cpu,omitempty"`
}

// memSampleInterval is how often the hops' memory is read during a run.
const memSampleInterval = 250 * time.Millisecond

// recordMem reads the hops' memory at the end of a run and folds in the
// peaks sampled during it.
func (r *RunResult) recordMem(hops []*Proc, peaks map[int]Mem) {
	r.RSS, r.RSSPeak, r.PSS, r.PSSPeak = map[string]int64{}, map[string]int64{}, map[string]int64{}, map[string]int64{}
	r.RSSAnon, r.RSSFile = map[string]int64{}, map[string]int64{}
	for _, h := range hops {
		var end, peak Mem // sums over the hop's processes; PSS -1 once one is unknown
		for _, p := range Descendants(h.PID()) {
			m, err := ReadMem(p)
			if err != nil {
				continue
			}
			pk := m
			if s, ok := peaks[p]; ok {
				pk = PeakMem(s, m)
			}
			name := h.Name
			if p != h.PID() {
				name = fmt.Sprintf("%s/worker-%d", h.Name, p)
			}
			r.RSS[name], r.RSSPeak[name], r.RSSAnon[name], r.RSSFile[name] = m.RSS, pk.RSS, m.Anon, m.File
			end.RSS += m.RSS
			peak.RSS += pk.RSS
			if m.PSS >= 0 && end.PSS >= 0 {
				r.PSS[name], r.PSSPeak[name] = m.PSS, pk.PSS
				end.PSS += m.PSS
				peak.PSS += pk.PSS
			} else {
				end.PSS, peak.PSS = -1, -1
			}
		}
		r.HopRSS = append(r.HopRSS, end.RSS)
		r.HopRSSPeak = append(r.HopRSSPeak, peak.RSS)
		r.HopPSS = append(r.HopPSS, max(end.PSS, 0))
		r.HopPSSPeak = append(r.HopPSSPeak, max(peak.PSS, 0))
	}
}

// PathFailure is a path that could not be started or died in a round.
type PathFailure struct {
	Round int    `json:"round"`
	Path  string `json:"path"`
	Error string `json:"error"`
}

// Meta describes the machine and the run.
type Meta struct {
	Date       string   `json:"date"`
	Command    string   `json:"command"`
	NProc      int      `json:"nproc"`
	CPUModel   string   `json:"cpu_model"`
	Kernel     string   `json:"kernel"`
	GoVersion  string   `json:"go_version"`
	HAProxy    string   `json:"haproxy_version,omitempty"`
	Nginx      string   `json:"nginx_version,omitempty"`
	WeftBin    string   `json:"weft_bin,omitempty"`
	Placement  string   `json:"placement"`
	Paths      []string `json:"paths"`
	Rates      []int    `json:"rates"`
	Duration   string   `json:"duration"`
	Warmup     string   `json:"warmup"`
	Rounds     int      `json:"rounds"`
	MaxConns   int      `json:"max_conns,omitempty"`
	ClockTicks int64    `json:"clock_ticks_per_s"`
	BodyBytes  int      `json:"body_bytes"`
	// /proc/loadavg when the run started and ended: other work on the
	// machine shows here.
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	Meta     Meta          `json:"meta"`
	Runs     []*RunResult  `json:"runs"`
	Failures []PathFailure `json:"failures,omitempty"`
	Summary  []SummaryRow  `json:"summary"`
	Max      []MaxRow      `json:"max,omitempty"`
	Ratios   []RatioRow    `json:"ratios,omitempty"`
	Idle     []IdleRow     `json:"idle,omitempty"`
}

func (c *Config) defaults() error {
	if len(c.Paths) == 0 {
		c.Paths = AllPaths
	}
	if c.Rounds <= 0 {
		c.Rounds = 1
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 32
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Self == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.Self = exe
	}
	if c.LoadCPU == "" {
		c.LoadCPU = "0"
	}
	if c.ProxyCPU == "" {
		c.ProxyCPU = "1"
	}
	switch c.ControlCPU {
	case "", "proxies", "loadgen":
	default:
		return fmt.Errorf("control plane placement %q: want proxies or loadgen", c.ControlCPU)
	}
	if c.Slowest == 0 {
		c.Slowest = DefaultSlowest
	}
	seen := map[string]bool{}
	for _, p := range c.Paths {
		if seen[p] {
			return fmt.Errorf("path %q given twice (rounds already repeat every path)", p)
		}
		seen[p] = true
		ok := p == PathWeftMTLS // an alias of weft, named for what it measures
		for _, q := range AllPaths {
			ok = ok || p == q
		}
		if !ok {
			return fmt.Errorf("unknown path %q (want some of %s)", p, strings.Join(AllPaths, ","))
		}
	}
	for _, r := range c.Rates {
		if r <= 0 {
			return fmt.Errorf("rate %d must be positive", r)
		}
	}
	for i, n := range c.IdleConns {
		if n <= 0 || (i > 0 && n <= c.IdleConns[i-1]) {
			return fmt.Errorf("idle connection counts %v: want ascending positive counts", c.IdleConns)
		}
	}
	if len(c.Rates) == 0 && !c.Max {
		return fmt.Errorf("nothing to run: no rates and no max run")
	}
	return nil
}

// LookBinary finds a program on PATH or in /usr/sbin and /sbin (Debian puts
// haproxy and nginx there, often not on a non-root PATH).
func LookBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Run runs the benchmark: rounds of every path in turn, each path at every
// rate and then closed-loop, with fresh proxy processes per path per round.
// A path that fails is recorded in Failures and the others go on.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	workdir := cfg.Workdir
	if workdir == "" {
		d, err := os.MkdirTemp("", "meshbench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		workdir = d
	}
	if err := os.MkdirAll(workdir, 0o755); err != nil {
		return nil, err
	}
	logs := filepath.Join(workdir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}

	st := &Starter{LogDir: logs}
	defer st.StopAll()

	placement := "unpinned"
	loadCPU, proxyCPU := "", ""
	if cfg.Pin {
		if ts := LookBinary("taskset"); ts == "" {
			placement = "unpinned (no taskset)"
		} else if runtime.NumCPU() < 2 && numOnlineCPUs() < 2 {
			placement = "unpinned (fewer than 2 CPUs)"
		} else {
			st.Taskset = ts
			loadCPU, proxyCPU = cfg.LoadCPU, cfg.ProxyCPU
			placement = fmt.Sprintf("load generator + backend on CPU %s, proxies on CPU %s, GOMAXPROCS=1", loadCPU, proxyCPU)
			if cfg.ControlCPU == "loadgen" {
				placement += fmt.Sprintf("; weft's control plane on CPU %s", loadCPU)
			}
		}
	}

	rep := &Report{Meta: machineMeta(cfg, placement)}

	bport, err := FreePort()
	if err != nil {
		return nil, err
	}
	backendAddr := addr(bport)
	var backend *Proc
	for attempt := 0; ; attempt++ {
		benv := backendEnv(backendAddr)
		if cfg.GCTrace {
			benv = append(benv, "GODEBUG=gctrace=1")
		}
		backend, err = st.Start(ProcSpec{Name: "backend", Argv: []string{cfg.Self}, Env: benv, Dir: logs, CPU: loadCPU, Stamp: cfg.GCTrace})
		if err != nil {
			return nil, err
		}
		err = WaitHTTP(ctx, "http://"+backendAddr+"/", "", 10*time.Second, backend)
		if err == nil {
			break
		}
		backend.Stop(time.Second)
		if attempt == 2 || ctx.Err() != nil {
			return nil, fmt.Errorf("backend: %w", err)
		}
		if bport, err = FreePort(); err != nil {
			return nil, err
		}
		backendAddr = addr(bport)
	}
	fmt.Fprintf(cfg.Log, "backend pid %d on %s; %s\n", backend.PID(), backendAddr, placement)
	var grpcBackend *Proc
	grpcBackendAddr := ""
	if isGRPC(cfg.Paths) {
		if grpcBackend, grpcBackendAddr, err = startGRPCBackend(ctx, st, cfg.Self, logs, loadCPU); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Log, "grpc backend pid %d on %s\n", grpcBackend.PID(), grpcBackendAddr)
	}

	auxCPU := ""
	if cfg.ControlCPU == "loadgen" {
		auxCPU = loadCPU
	}
	roles := Roles{os.Getpid(): "loadgen", backend.PID(): "backend"}
	env := &Env{
		AuxCPU:          auxCPU,
		Starter:         st,
		Dir:             workdir,
		BackendAddr:     backendAddr,
		GRPCBackendAddr: grpcBackendAddr,
		ProxyCPU:        proxyCPU,
		GCTrace:         cfg.GCTrace,
		WeftBin:         cfg.WeftBin,
		HAProxyBin:      cfg.HAProxyBin,
		NginxBin:        cfg.NginxBin,
		ReadyWait:       cfg.ReadyWait,
	}

	for round := 1; round <= cfg.Rounds; round++ {
		for _, path := range cfg.Paths {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			runs, err := runPath(ctx, cfg, env, path, round, roles, backend)
			rep.Runs = append(rep.Runs, runs...)
			if err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				fmt.Fprintf(cfg.Log, "round %d %-8s FAILED: %v\n", round, path, err)
				rep.Failures = append(rep.Failures, PathFailure{Round: round, Path: path, Error: err.Error()})
			}
			if round == 1 && len(cfg.IdleConns) > 0 && path != PathDirect && protoOf(path) == ProtoHTTP1 {
				rows, err := idlePath(ctx, cfg, env, path)
				rep.Idle = append(rep.Idle, rows...)
				if err != nil {
					if ctx.Err() != nil {
						return rep, ctx.Err()
					}
					fmt.Fprintf(cfg.Log, "idle     %-8s FAILED: %v\n", path, err)
					rep.Failures = append(rep.Failures, PathFailure{Round: round, Path: path + " (idle connections)", Error: err.Error()})
				}
			}
			if done, err := backend.Exited(); done {
				return rep, fmt.Errorf("backend exited (%v): %s", err, backend.LogTail(6))
			}
			if grpcBackend != nil {
				if done, err := grpcBackend.Exited(); done {
					return rep, fmt.Errorf("grpc backend exited (%v): %s", err, grpcBackend.LogTail(6))
				}
			}
		}
	}
	Finish(rep)
	return rep, nil
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

// runPath starts a path, runs every rate and the max run, and stops it.
func runPath(ctx context.Context, cfg Config, env *Env, path string, round int, baseRoles Roles, backend *Proc) ([]*RunResult, error) {
	t0 := time.Now()
	topo, err := StartPath(ctx, path, env, round)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	defer topo.Stop(env.Starter)
	fmt.Fprintf(cfg.Log, "round %d %-8s up in %v\n", round, path, time.Since(t0).Round(time.Millisecond))

	var out []*RunResult
	maxInflight := 1024
	var client Requester = NewClient(topo.Target, maxInflight, 10*time.Second, BodySize)
	if topo.Target.Proto != ProtoHTTP1 {
		if client, err = NewGRPCClient(topo.Target, 10*time.Second); err != nil {
			return nil, err
		}
	}
	defer client.Close()

	measure := func(kind string, rate int) (*RunResult, error) {
		var trace *SchedTrace
		if cfg.Timeline {
			// Started before the warm-up, which covers perf's own start
			// (opening its events on every CPU takes a few hundred ms).
			var terr error
			trace, terr = StartSchedTrace(filepath.Join(env.Dir, fmt.Sprintf("sched-%s-r%d-%s.data", path, round, rateLabel(kind, rate))), cfg.LoadCPU, env.Starter.Taskset)
			if terr != nil {
				fmt.Fprintf(cfg.Log, "timeline: %v\n", terr)
			}
		}
		if cfg.Warmup > 0 {
			var err error
			if kind == KindOpen {
				_, err = OpenLoop(ctx, client, float64(rate), cfg.Warmup, maxInflight)
			} else {
				_, err = ClosedLoop(ctx, client, cfg.MaxConns, cfg.Warmup, closedLoopCap(cfg.Warmup))
			}
			if err != nil {
				trace.Stop()
				trace.Remove()
				return nil, err
			}
		}
		roots := pids(topo.Hops)
		aux := pids(topo.Aux)
		var hopPIDs []int
		for _, r := range roots {
			hopPIDs = append(hopPIDs, Descendants(r)...)
		}
		sampler := SampleMem(hopPIDs, memSampleInterval)
		var perf *PerfStat
		if cfg.Perf {
			perf = StartPerfStat(hopPIDs)
		}
		stealBefore := ReadSteal()
		socketsBefore := hopSockets(topo.Hops)
		switchesBefore := SnapshotSwitches(roots)
		before, auxBefore := SnapshotCPU(roots), SnapshotCPU(aux)
		var res *LoadResult
		var err error
		if kind == KindOpen {
			res, err = OpenLoopKeep(ctx, client, float64(rate), cfg.Duration, maxInflight, max(cfg.Slowest, 0), cfg.Timeline)
		} else {
			res, err = ClosedLoop(ctx, client, cfg.MaxConns, cfg.Duration, closedLoopCap(cfg.Duration))
		}
		after, auxAfter := SnapshotCPU(roots), SnapshotCPU(aux)
		switchesAfter := SnapshotSwitches(roots)
		stealAfter := ReadSteal()
		socketsAfter := hopSockets(topo.Hops)
		switches := SwitchDelta(switchesBefore, switchesAfter)
		syscalls := perf.Stop()
		peaks := sampler.Stop()
		if terr := trace.Stop(); terr != nil {
			fmt.Fprintf(cfg.Log, "timeline: %v\n", terr)
			trace = nil
		}
		if err != nil {
			trace.Remove()
			return nil, err
		}
		r := &RunResult{
			Round: round, Path: path, Kind: kind, Rate: rate,
			Latency: Summarize(res.Hist), Sent: res.Sent, OK: res.OK, Errors: res.Errors,
			ErrorMsg: res.ErrorSummary(), Achieved: res.Achieved(), Elapsed: res.Elapsed.Seconds(),
			ProxyCPUPerReq: NaN(), ProxyCPUUtil: NaN(), AuxCPUPerReq: NaN(),
			SwitchesPerReq: NaN(), SyscallsPerReq: NaN(),
			AddedP50: NaN(), AddedP99: NaN(),
		}
		if kind == KindClosed {
			r.Conns = cfg.MaxConns
		}
		if len(roots) > 0 {
			cpu := CPUDelta(before, after)
			r.ProxyCPUSeconds = cpu
			r.ProxyCPUPerReq = Num(PerRequestMicros(cpu, res.Completed()))
			if res.Elapsed > 0 {
				r.ProxyCPUUtil = Num(cpu / res.Elapsed.Seconds())
			}
			r.recordMem(topo.Hops, peaks)
			if n := res.Completed(); n > 0 {
				r.SwitchesPerReq = Num(float64(switches) / float64(n))
				for _, t := range BusiestThreads(switchesBefore, switchesAfter, 4) {
					r.ThreadSwitchesPerReq = append(r.ThreadSwitchesPerReq, float64(t)/float64(n))
				}
				if syscalls != nil {
					var sum int64
					r.Syscalls = map[string]float64{}
					for k, v := range syscalls {
						sum += v
						r.Syscalls[k] = float64(v) / float64(n)
					}
					r.SyscallsPerReq = Num(float64(sum) / float64(n))
				}
			}
		}
		if len(aux) > 0 {
			r.AuxCPUPerReq = Num(PerRequestMicros(CPUDelta(auxBefore, auxAfter), res.Completed()))
			r.AuxRSS, r.AuxPSS = map[string]int64{}, map[string]int64{}
			for _, p := range topo.Aux {
				if m, err := ReadMem(p.PID()); err == nil {
					r.AuxRSS[p.Name] = m.RSS
					if m.PSS >= 0 {
						r.AuxPSS[p.Name] = m.PSS
					}
				}
			}
		}
		r.StartMono = res.StartMono
		r.StealMs = stealDelta(stealBefore, stealAfter)
		for i := range socketsBefore {
			r.HopSockets = append(r.HopSockets, [2]int{socketsBefore[i], socketsAfter[i]})
		}
		if cfg.Slowest > 0 {
			r.explainSlowest(cfg, res, trace, topo, baseRoles, backend)
		}
		trace.Remove()
		if err := topo.Dead(); err != nil {
			return r, err
		}
		return r, nil
	}

	steps := make([]struct {
		kind string
		rate int
	}, 0, len(cfg.Rates)+1)
	for _, r := range cfg.Rates {
		steps = append(steps, struct {
			kind string
			rate int
		}{KindOpen, r})
	}
	if cfg.Max {
		steps = append(steps, struct {
			kind string
			rate int
		}{KindClosed, 0})
	}
	for _, s := range steps {
		r, err := measure(s.kind, s.rate)
		if r != nil {
			out = append(out, r)
			fmt.Fprintf(cfg.Log, "round %d %-8s %-6s %s\n", round, path, rateLabel(r.Kind, r.Rate), progressLine(r))
			if cfg.Timeline || cfg.GCTrace {
				fmt.Fprint(cfg.Log, timelineLines(r, 5))
			}
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// closedLoopCap bounds a closed-loop run's request count as well as its
// time: 200k req/s is far beyond what one loopback core reaches.
func closedLoopCap(d time.Duration) int64 { return int64(d.Seconds()*200_000) + 1000 }

func progressLine(r *RunResult) string {
	s := fmt.Sprintf("achieved %7.0f/s  p50 %.3f  p99 %.3f  p99.9 %.3f ms", r.Achieved, r.Latency.P50, r.Latency.P99, r.Latency.P999)
	if !math.IsNaN(float64(r.ProxyCPUPerReq)) {
		s += fmt.Sprintf("  proxy CPU %.0f µs/req (%.2f cores)", float64(r.ProxyCPUPerReq), float64(r.ProxyCPUUtil))
	}
	if !math.IsNaN(float64(r.SwitchesPerReq)) {
		s += fmt.Sprintf("  ctx sw %.2f/req (busiest threads %.2f)", float64(r.SwitchesPerReq), r.ThreadSwitchesPerReq)
	}
	if !math.IsNaN(float64(r.SyscallsPerReq)) {
		s += fmt.Sprintf("  syscalls %.2f/req (%s)", float64(r.SyscallsPerReq), topSyscalls(r.Syscalls, 6))
	}
	s += fmt.Sprintf("  errors %d", r.Errors)
	if r.Errors > 0 {
		s += " [" + truncate(r.ErrorMsg, 160) + "]"
	}
	return s
}

func rateLabel(kind string, rate int) string {
	if kind == KindClosed {
		return "max"
	}
	return strconv.Itoa(rate)
}

func pids(ps []*Proc) []int {
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.PID())
	}
	return out
}

func numOnlineCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		if !ok {
			if err1 == nil {
				n++
			}
			continue
		}
		b, err2 := strconv.Atoi(hi)
		if err1 == nil && err2 == nil && b >= a {
			n += b - a + 1
		}
	}
	return n
}

func machineMeta(cfg Config, placement string) Meta {
	m := Meta{
		Date:       time.Now().UTC().Format(time.RFC3339),
		Command:    cfg.Command,
		NProc:      numOnlineCPUs(),
		GoVersion:  runtime.Version(),
		WeftBin:    cfg.WeftBin,
		Placement:  placement,
		Paths:      cfg.Paths,
		Rates:      cfg.Rates,
		Duration:   cfg.Duration.String(),
		Warmup:     cfg.Warmup.String(),
		Rounds:     cfg.Rounds,
		ClockTicks: ClockTicks(),
		BodyBytes:  BodySize,

		LoadAvgStart: loadAvg(),
	}
	if cfg.Max {
		m.MaxConns = cfg.MaxConns
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if cfg.HAProxyBin != "" {
		if out, err := exec.Command(cfg.HAProxyBin, "-v").CombinedOutput(); err == nil {
			m.HAProxy = firstLine(string(out))
		}
	}
	if cfg.NginxBin != "" {
		if out, err := exec.Command(cfg.NginxBin, "-v").CombinedOutput(); err == nil {
			m.Nginx = firstLine(string(out))
		}
	}
	return m
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

// topSyscalls names the n most frequent syscalls per request.
func topSyscalls(m map[string]float64, n int) string { return topN(m, n) }

// hopSockets counts each hop's socket descriptors (its process tree's).
func hopSockets(hops []*Proc) []int {
	out := make([]int, len(hops))
	for i, h := range hops {
		for _, p := range Descendants(h.PID()) {
			fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
			for _, fd := range fds {
				if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
					out[i]++
				}
			}
		}
	}
	return out
}
