// Command meshbench measures the latency and CPU cost of weft's two-sidecar
// data path against a direct connection and against HAProxy and nginx
// chains of the same shape. See bench/README.md.
//
//	meshbench [flags]               run the benchmark
//	meshbench backend -addr A:P     the 1 KiB backend alone (the harness
//	                                starts it itself)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftmesh/weft/bench/harness"
)

const envPinned = "MESHBENCH_PINNED"

func main() {
	harness.RunRoleIfRequested()
	if len(os.Args) > 1 && os.Args[1] == "backend" {
		fs := flag.NewFlagSet("backend", flag.ExitOnError)
		a := fs.String("addr", "127.0.0.1:8080", "listen address")
		_ = fs.Parse(os.Args[2:])
		if err := harness.ServeBackend(*a); err != nil {
			fmt.Fprintln(os.Stderr, "backend:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run())
}

func run() int {
	var (
		rates    = flag.String("rates", "500,1000,2000", "open-model rates in req/s, comma-separated (empty: none)")
		duration = flag.Duration("duration", 5*time.Second, "measured duration of each run")
		warmup   = flag.Duration("warmup", 500*time.Millisecond, "unrecorded load before each run, at the same rate")
		rounds   = flag.Int("rounds", 3, "interleaved rounds (direct, weft, haproxy, nginx, direct, ...)")
		maxRun   = flag.Bool("max", true, "closed-loop max-throughput run after the rates")
		maxConns = flag.Int("max-conns", 32, "connections of the closed-loop run")
		paths    = flag.String("paths", strings.Join(harness.AllPaths, ","), "paths to measure")
		weft     = flag.String("weft", "bin/weft", "weft binary")
		jsonOut  = flag.String("json", "bench/results/latest.json", "JSON report file (empty: none)")
		workdir  = flag.String("workdir", "", "scratch directory for configs and logs (default: a temporary one, removed)")
		pin      = flag.Bool("pin", true, "pin load generator+backend to CPU 0 and proxies to CPU 1 with taskset (needs >= 2 CPUs)")
		ready    = flag.Duration("ready-wait", 30*time.Second, "how long a path may take to answer 200 after starting")
		perf     = flag.Bool("perf", false, "count the proxies' syscalls per request with perf stat (linux-perf) during each measured run")
		idle     = flag.String("idle-conns", "10,1000,2000", "idle kept-alive connection counts at which each proxy path's RSS is read (round 1; empty: none)")
		slowest  = flag.Int("slowest", harness.DefaultSlowest, "slowest requests of each run kept in the JSON with their scheduled time (0: none)")
		timeline = flag.Bool("timeline", false, "trace the scheduler on every CPU during each measured run (perf record) and explain the slowest requests by what ran meanwhile")
		gctrace  = flag.Bool("gctrace", false, "run weft's processes and the backend with GODEBUG=gctrace=1 and line their collections up with the slowest requests")
		control  = flag.String("control-cpu", "proxies", "where weft's control plane runs: proxies (the proxies' CPU) or loadgen (the load generator's)")
	)
	flag.Parse()

	rateList, err := parseRates(*rates)
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		return 2
	}
	idleList, err := parseRates(*idle)
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshbench: -idle-conns:", err)
		return 2
	}
	weftBin := *weft
	if weftBin != "" {
		if abs, err := filepath.Abs(weftBin); err == nil {
			weftBin = abs
		}
	}
	if *workdir != "" {
		if abs, err := filepath.Abs(*workdir); err == nil {
			*workdir = abs
		}
	}

	// The load generator shares CPU 0 with the backend: re-exec under
	// taskset so that every thread of this process is pinned from birth.
	if *pin && os.Getenv(envPinned) == "" && runtime.NumCPU() >= 2 {
		if ts := harness.LookBinary("taskset"); ts != "" {
			self, err := os.Executable()
			if err == nil {
				env := append(os.Environ(), envPinned+"=1", "GOMAXPROCS=1")
				argv := append([]string{ts, "-c", "0", self}, os.Args[1:]...)
				err = syscall.Exec(ts, argv, env)
			}
			fmt.Fprintln(os.Stderr, "meshbench: could not re-exec under taskset, running unpinned:", err)
		}
	}

	// Fewer collections in the load generator: its pauses would show in
	// every path's tail (the backend gets the same setting).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(harness.HarnessGOGC)
	}

	command := os.Getenv("MESHBENCH_COMMAND")
	if command == "" {
		command = strings.Join(os.Args, " ")
	}
	cfg := harness.Config{
		Paths:      splitList(*paths),
		Rates:      rateList,
		Duration:   *duration,
		Warmup:     *warmup,
		Rounds:     *rounds,
		Max:        *maxRun,
		MaxConns:   *maxConns,
		IdleConns:  idleList,
		WeftBin:    weftBin,
		HAProxyBin: harness.LookBinary("haproxy"),
		NginxBin:   harness.LookBinary("nginx"),
		Workdir:    *workdir,
		Pin:        *pin,
		ReadyWait:  *ready,
		Perf:       *perf,
		Slowest:    slowestOrNone(*slowest),
		Timeline:   *timeline,
		GCTrace:    *gctrace,
		ControlCPU: *control,
		Log:        os.Stderr,
		Command:    command,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once; children die with us (Pdeathsig)
	}()

	rep, err := harness.Run(ctx, cfg)
	if rep != nil {
		if err != nil {
			harness.Finish(rep)
		}
		harness.WriteMarkdown(os.Stdout, rep)
		if *jsonOut != "" {
			if werr := harness.WriteJSON(rep, *jsonOut); werr != nil {
				fmt.Fprintln(os.Stderr, "meshbench: writing JSON:", werr)
			} else {
				fmt.Fprintln(os.Stderr, "meshbench: JSON report in", *jsonOut)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	if len(rep.Failures) > 0 {
		fmt.Fprintf(os.Stderr, "meshbench: %d path round(s) failed; the other paths are reported\n", len(rep.Failures))
		return 3
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseRates(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad rate %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// slowestOrNone maps the flag's 0 (none) to the config's negative.
func slowestOrNone(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}
