// Package telemetry_test checks the mesh's telemetry from the outside, with
// real processes on loopback: the weft binary (control plane, `weft run`
// units, pure-client sidecars), the demo apps as backends (frontend → orders
// → inventory, forwarding the trace headers), the e2e testapp for gRPC, and
// a real Prometheus server. No mocks.
//
// Run: go test -count=1 -v ./test/e2e/telemetry/
package telemetry_test

// The harness is a small copy of test/e2e's: build once, free loopback
// ports, processes in their own groups killed at cleanup, output dumped
// when a test fails.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const eventually = 20 * time.Second

var (
	weftBin string
	appBin  string
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		fmt.Fprintln(os.Stderr, "telemetry e2e: cannot find the module root")
		return 1
	}
	root := filepath.Dir(gomod)
	tmp, err := os.MkdirTemp("", "weft-telemetry-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	build := func(out, pkg string) error {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		return nil
	}
	weftBin, appBin = filepath.Join(tmp, "weft"), filepath.Join(tmp, "testapp")
	if b := os.Getenv("WEFT_E2E_BIN"); b != "" {
		weftBin, _ = filepath.Abs(b)
	} else if err := build(weftBin, "./cmd/weft"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := build(appBin, "./test/e2e/testapp"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// ---------------------------------------------------------------- ports

var (
	portMu   sync.Mutex
	portNext int
	used     = map[int]bool{}
)

// freePort hands out loopback ports below the ephemeral range, never twice.
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	if portNext == 0 {
		portNext = 20000 + rand.IntN(10000)
	}
	for range 12000 {
		p := portNext
		portNext++
		if portNext >= 32000 {
			portNext = 20000
		}
		if used[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		used[p] = true
		return p
	}
	t.Fatal("no free loopback port")
	return 0
}

func addr(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }

// ---------------------------------------------------------------- processes

type proc struct {
	name     string
	args     []string
	out      string
	cmd      *exec.Cmd
	done     chan struct{}
	exitedMu sync.Mutex
}

func start(t testing.TB, name string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, args: args, out: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not die", name)
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.out)
			t.Logf("----- %s (%s) -----\n%s", name, strings.Join(args, " "), tail(string(b), 60))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits (a graceful stop flushes spans and logs).
func (p *proc) stop(t testing.TB) {
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not stop on SIGTERM", p.name)
	}
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

func poll(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- mesh

type control struct {
	http, grpc string
	url        string
	p          *proc
}

func startControl(t testing.TB, extra ...string) *control {
	t.Helper()
	c := &control{http: addr(freePort(t)), grpc: addr(freePort(t))}
	c.url = "http://" + c.http
	// No messaging: its embedded broker would want a port per control plane.
	args := append([]string{"control", "--http-addr", c.http, "--grpc-addr", c.grpc, "--data-dir", t.TempDir(), "--scrape-interval", "1s", "--broker", "off"}, extra...)
	c.p = start(t, "control", weftBin, args...)
	if !poll(eventually, func() bool { code, _, _ := get(c.url + "/healthz"); return code == 200 || c.p.exited() }) || c.p.exited() {
		t.Fatal("control plane not healthy")
	}
	return c
}

type unit struct {
	service       string
	admin, out    string
	p             *proc
	adminURL      string
	outboundProxy *url.URL
}

// startUnit runs `weft run` for service with app as the app (nil: a pure
// client sidecar, `weft sidecar` without --app-port), and waits until it
// is ready (and registered, for an instance).
func startUnit(t testing.TB, c *control, service string, flags []string, app ...string) *unit {
	t.Helper()
	u := &unit{service: service, admin: addr(freePort(t)), out: addr(freePort(t))}
	u.adminURL = "http://" + u.admin
	u.outboundProxy, _ = url.Parse("http://" + u.out)
	args := []string{"--control", c.grpc, "--service", service, "--admin", u.admin, "--outbound", u.out}
	args = append(args, flags...)
	name := service
	if len(app) == 0 {
		u.p = start(t, name+"-sidecar", weftBin, append([]string{"sidecar"}, args...)...)
	} else {
		args = append([]string{"run", "--inbound", "127.0.0.1:0"}, args...)
		u.p = start(t, name, weftBin, append(append(args, "--"), app...)...)
	}
	ok := poll(eventually, func() bool {
		code, _, _ := get(u.adminURL + "/ready")
		return code == 200 || u.p.exited()
	})
	if !ok || u.p.exited() {
		t.Fatalf("%s not ready", service)
	}
	return u
}

// demoUnit runs one demo app role under weft run.
func demoUnit(t testing.TB, c *control, role string, flags ...string) *unit {
	return startUnit(t, c, role, flags, weftBin, "demo-app", "--role", role)
}

func (u *unit) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u.outboundProxy), MaxIdleConnsPerHost: 64}}
}

func get(u string) (int, string, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func getJSON(t testing.TB, u string, out any) int {
	t.Helper()
	code, body, err := get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	if code == 200 {
		if err := json.Unmarshal([]byte(body), out); err != nil {
			t.Fatalf("GET %s: %v in %q", u, err, body)
		}
	}
	return code
}

// call sends one GET through u's outbound to http://host/path.
func call(hc *http.Client, host, path string, hdr http.Header) (int, error) {
	req, _ := http.NewRequest("GET", "http://"+host+path, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// ---------------------------------------------------------------- metrics

// scrape reads a sidecar's /metrics in the text format.
func scrape(t testing.TB, adminURL string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body, err := get(adminURL + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET %s/metrics: %d %v", adminURL, code, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatalf("%s/metrics is not the Prometheus text format: %v", adminURL, err)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

// edgeCount sums weft_requests_total for (reporter, src, dst) over codes.
func edgeCount(mfs map[string]*dto.MetricFamily, rep, src, dst string) float64 {
	n := 0.0
	for _, m := range mfs["weft_requests_total"].GetMetric() {
		l := labelsOf(m)
		if l["reporter"] == rep && l["source_service"] == src && l["destination_service"] == dst {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// edgeHist sums the duration histogram for (reporter, src, dst): count,
// sum and cumulative bucket counts by upper bound.
func edgeHist(mfs map[string]*dto.MetricFamily, rep, src, dst string) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = map[float64]uint64{}
	for _, m := range mfs["weft_request_duration_seconds"].GetMetric() {
		l := labelsOf(m)
		if l["reporter"] != rep || l["source_service"] != src || l["destination_service"] != dst {
			continue
		}
		h := m.GetHistogram()
		count += h.GetSampleCount()
		sum += h.GetSampleSum()
		for _, b := range h.GetBucket() {
			buckets[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	return count, sum, buckets
}

func seriesCount(mfs map[string]*dto.MetricFamily, name string) int {
	return len(mfs[name].GetMetric())
}

// ---------------------------------------------------------------- traces

type span struct {
	SpanID       string         `json:"spanId"`
	ParentSpanID string         `json:"parentSpanId"`
	Service      string         `json:"service"`
	Name         string         `json:"name"`
	Kind         string         `json:"kind"`
	Start        time.Time      `json:"start"`
	DurationMs   float64        `json:"durationMs"`
	Attributes   map[string]any `json:"attributes"`
}

type traceJSON struct {
	TraceID string `json:"traceId"`
	Spans   []span `json:"spans"`
}

type traceList struct {
	Traces []struct {
		TraceID string `json:"traceId"`
		Spans   int    `json:"spans"`
	} `json:"traces"`
}

func randomHex(n int) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hexd[rand.IntN(16)]
	}
	if strings.Trim(string(b), "0") == "" {
		b[0] = '1'
	}
	return string(b)
}

// ---------------------------------------------------------------- cli

func runCLI(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, weftBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("weft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
