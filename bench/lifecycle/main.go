// Command lifecycle measures what the core issue's closing note reports,
// with real weft processes on loopback:
//
//   - ready→traffic: time from an app starting to listen to the first
//     request a caller's sidecar gets through to it (≥ 20 trials);
//   - rolling restart: requests failed while 3 instances are replaced one
//     by one under open-loop load (default 500 req/s);
//   - RSS of a calling sidecar and a serving unit, idle and under load.
//
// Usage: go run ./bench/lifecycle -weft bin/weft [-trials 20] [-rate 500]
// It re-executes itself as the backend app ("lifecycle app"), which logs the
// moment it starts listening.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "app" {
		runApp()
		return
	}
	weft := flag.String("weft", "bin/weft", "weft binary")
	trials := flag.Int("trials", 20, "ready→traffic trials")
	rate := flag.Int("rate", 500, "request rate during the rolling restart")
	loadRate := flag.Int("load-rate", 1000, "request rate for the RSS-under-load figure")
	flag.Parse()
	if err := run(*weft, *trials, *rate, *loadRate); err != nil {
		fmt.Fprintln(os.Stderr, "lifecycle:", err)
		os.Exit(1)
	}
}

// runApp is the backend: it waits -delay, then listens on $PORT and prints
// "listening <unixnano>" to the file in $READY_FILE.
func runApp() {
	if d, err := time.ParseDuration(os.Getenv("APP_DELAY")); err == nil {
		time.Sleep(d)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if f := os.Getenv("READY_FILE"); f != "" {
		_ = os.WriteFile(f, []byte(strconv.FormatInt(time.Now().UnixNano(), 10)), 0o644)
	}
	body := []byte(strings.Repeat("x", 1024))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-instance", os.Getenv("WEFT_INSTANCE_ID"))
		w.Write(body)
	})}
	go func() {
		ch := make(chan os.Signal, 1)
		signalNotify(ch)
		<-ch
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	_ = srv.Serve(ln)
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func start(dir, name string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func addr(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }

func run(weft string, trials, rate, loadRate int) error {
	weft, _ = filepath.Abs(weft)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "weft-lifecycle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	grpcP, httpP := freePort(), freePort()
	cp, err := start(dir, "control", nil, weft, "control", "--grpc-addr", addr(grpcP), "--http-addr", addr(httpP), "--data-dir", filepath.Join(dir, "data"))
	if err != nil {
		return err
	}
	procs = append(procs, cp)
	outP, adminP := freePort(), freePort()
	client, err := start(dir, "client", nil, weft, "sidecar", "--control", addr(grpcP), "--service", "caller", "--outbound", addr(outP), "--admin", addr(adminP))
	if err != nil {
		return err
	}
	procs = append(procs, client)
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	if err := waitOK(hc, "http://"+addr(adminP)+"/ready", 15*time.Second); err != nil {
		return fmt.Errorf("client sidecar: %w", err)
	}
	get := func(service string) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr(outP)+"/", nil)
		req.Host = service
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	unit := func(service, delay, readyFile string) (*proc, error) {
		p, err := start(dir, fmt.Sprintf("%s-%d", service, time.Now().UnixNano()),
			[]string{"APP_DELAY=" + delay, "READY_FILE=" + readyFile},
			weft, "run", "--control", addr(grpcP), "--service", service, "--outbound", "", "--admin", "",
			"--drain", "5s", "--", self, "app")
		return p, err
	}

	// 1. ready → first proxied request.
	fmt.Printf("ready→traffic: %d trials (app listens 300 ms after its sidecar starts)\n", trials)
	var lat []time.Duration
	for i := range trials {
		rf := filepath.Join(dir, fmt.Sprintf("ready-%d", i))
		service := "ready" + strconv.Itoa(i)
		get(service) // the caller subscribes before the instance exists, as a live caller would have
		p, err := unit(service, "300ms", rf)
		if err != nil {
			return err
		}
		deadline := time.Now().Add(10 * time.Second)
		var first time.Time
		for time.Now().Before(deadline) {
			if code, err := get(service); err == nil && code == 200 {
				first = time.Now()
				break
			}
			time.Sleep(time.Millisecond)
		}
		b, _ := os.ReadFile(rf)
		listened, _ := strconv.ParseInt(string(b), 10, 64)
		if first.IsZero() || listened == 0 {
			p.stop()
			return fmt.Errorf("trial %d: no traffic within 10 s", i)
		}
		lat = append(lat, first.Sub(time.Unix(0, listened)))
		p.stop()
	}
	slices.Sort(lat)
	fmt.Printf("  p50 %v  p99 %v  min %v  max %v\n", pct(lat, 50), pct(lat, 99), lat[0], lat[len(lat)-1])

	// 2. rolling restart of 3 instances under load.
	var units []*proc
	for range 3 {
		p, err := unit("orders", "0s", "")
		if err != nil {
			return err
		}
		units = append(units, p)
	}
	procs = append(procs, units...)
	if err := waitOK(hc, "", 0); err != nil {
		return err
	}
	for time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if n := readyInstances(hc, addr(httpP), "orders"); n == 3 {
			break
		}
	}
	idleClient, idleUnit := rss(client.cmd.Process.Pid), rss(units[0].cmd.Process.Pid)
	fmt.Printf("rolling restart of 3 instances at %d req/s (GET through a caller sidecar)\n", rate)
	ctx, cancel := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var failures sync.Map
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		load(ctx, rate, func() {
			sent.Add(1)
			code, err := get("orders")
			if err != nil || code != 200 {
				failed.Add(1)
				k := strconv.Itoa(code)
				if err != nil {
					k = err.Error()
				}
				v, _ := failures.LoadOrStore(k, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
		})
	}()
	time.Sleep(time.Second)
	for i := range 3 {
		p, err := unit("orders", "0s", "")
		if err != nil {
			cancel()
			return err
		}
		procs = append(procs, p)
		for readyInstances(hc, addr(httpP), "orders") < 4 {
			time.Sleep(20 * time.Millisecond)
		}
		units[i].stop()
		units[i] = p
	}
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	fmt.Printf("  sent %d, failed %d\n", sent.Load(), failed.Load())
	failures.Range(func(k, v any) bool { fmt.Printf("    %s: %d\n", k, v.(*atomic.Int64).Load()); return true })

	// 3. RSS idle and under load.
	ctx, cancel = context.WithCancel(context.Background())
	wg.Add(1)
	go func() { defer wg.Done(); load(ctx, loadRate, func() { get("orders") }) }()
	time.Sleep(5 * time.Second)
	loadClient, loadUnit := rss(client.cmd.Process.Pid), rss(units[0].cmd.Process.Pid)
	cancel()
	wg.Wait()
	fmt.Printf("RSS (VmRSS): calling sidecar idle %s, at %d req/s %s; serving unit's sidecar idle %s, under its share of the load %s\n",
		idleClient, loadRate, loadClient, idleUnit, loadUnit)
	return nil
}

// load runs f at rate per second, open loop, each call in its own goroutine
// (bounded), until ctx ends.
func load(ctx context.Context, rate int, f func()) {
	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() { defer wg.Done(); defer func() { <-sem }(); f() }()
	}
}

func pct(s []time.Duration, p int) time.Duration {
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func waitOK(hc *http.Client, url string, d time.Duration) error {
	if url == "" {
		return nil
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if resp, err := hc.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v", url, d)
}

func readyInstances(hc *http.Client, api, service string) int {
	resp, err := hc.Get("http://" + api + "/api/v1/services")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s := string(b)
	i := strings.Index(s, `"name": "`+service+`"`)
	if i < 0 {
		return 0
	}
	s = s[i:]
	if j := strings.Index(s[1:], `"name": "`); j >= 0 {
		s = s[:j+1]
	}
	return strings.Count(s, `"ready": true`)
}

func rss(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	defer f.Close()
	// RssFile is the binary's pages, shared by every weft on the host;
	// RssAnon is what this process alone costs.
	var total, anon string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			total = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			anon = strings.TrimSpace(v)
		}
	}
	return total + " (anon " + anon + ")"
}
