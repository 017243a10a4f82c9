// Command idleconns measures what weft's sidecar pair holds in memory per
// idle kept-alive client connection (issue #14 item 3).
//
// It starts a real path (by default weft: control plane, client sidecar,
// server sidecar; with -path haproxy or nginx their two-hop chains) in
// front of the 1 KiB bench backend, opens client connections to the client
// hop in steps (-conns 10,1000,2000), sends one GET on each and reads the
// answer, leaves them idle for -settle, and prints each hop's VmRSS (and,
// for weft, Go heap and stack in use from /metrics) at every step.
//
//	go run ./bench/idleconns                  # bin/weft, 10,1000,2000
//	go run ./bench/idleconns -conns 10,2000 -settle 2s
//
// The run is bounded by -timeout (30 s by default): it is meant to be run
// briefly, and not while someone else benchmarks on the machine.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftmesh/weft/bench/harness"
)

func main() {
	weft := flag.String("weft", "bin/weft", "the weft binary")
	path := flag.String("path", harness.PathWeft, "path to measure: weft, haproxy or nginx")
	conns := flag.String("conns", "10,1000,2000", "connection counts, ascending")
	settle := flag.Duration("settle", 2*time.Second, "idle time before each reading (over the engine's 1 s parkAfter)")
	timeout := flag.Duration("timeout", 30*time.Second, "bound on the whole run")
	profile := flag.String("profile", "", "directory for each weft hop's heap profile at the last count")
	flag.Parse()
	var counts []int
	for _, f := range strings.Split(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || (len(counts) > 0 && n <= counts[len(counts)-1]) {
			fmt.Fprintf(os.Stderr, "idleconns: -conns %q: want ascending positive counts\n", *conns)
			os.Exit(2)
		}
		counts = append(counts, n)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, *timeout)
	defer cancelT()
	if err := run(ctx, *weft, *path, counts, *settle, *profile); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, weft, path string, counts []int, settle time.Duration, profile string) error {
	dir, err := os.MkdirTemp("", "idleconns-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if weft != "" && !filepath.IsAbs(weft) && strings.Contains(weft, "/") {
		if abs, err := filepath.Abs(weft); err == nil {
			weft = abs
		}
	}
	// The backend runs in this process: it is not measured.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bs := &http.Server{Handler: harness.BackendHandler(), ReadHeaderTimeout: 10 * time.Second}
	go bs.Serve(ln)
	defer bs.Close()

	st := &harness.Starter{LogDir: dir}
	defer st.StopAll()
	env := &harness.Env{
		Starter: st, Dir: dir, BackendAddr: ln.Addr().String(), WeftBin: weft,
		HAProxyBin: harness.LookBinary("haproxy"), NginxBin: harness.LookBinary("nginx"),
		ReadyWait: 20 * time.Second,
	}
	t, err := harness.StartPath(ctx, path, env, 1)
	if err != nil {
		return err
	}
	defer t.Stop(st)
	res, err := harness.IdleConns(ctx, t.Target, t.Hops, t.Metrics, counts, settle, profile)
	if err != nil {
		return err
	}
	fmt.Printf("%s path, idle kept-alive client connections (one GET each, then %v idle)\n\n", path, settle)
	fmt.Println("| conns | hop | VmRSS MiB | Δ vs first MiB | RssAnon MiB | Δ anon MiB | Go heap inuse MiB | Go stack inuse MiB |")
	fmt.Println("|---:|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range res {
		label := strconv.Itoa(r.Conns)
		if r.AfterGC {
			label += " (after 2 GCs)"
		}
		for i, h := range r.Hops {
			// Δ anon beside Δ RSS: the file-backed part of RSS (the
			// executable's pages) moves with what code ran and with
			// trimming (--trim-executable, --release-idle-memory), the
			// anonymous part with what the connections hold.
			fmt.Printf("| %s | %s | %.1f | %+.1f | %.1f | %+.1f | %s | %s |\n", label, t.Hops[i].Name, mib(h.RSS),
				mib(h.RSS-res[0].Hops[i].RSS), mib(h.Anon), mib(h.Anon-res[0].Hops[i].Anon), mibOrDash(r.HeapInuse[i]), mibOrDash(r.StackInuse[i]))
		}
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func mibOrDash(b int64) string {
	if b < 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", mib(b))
}
