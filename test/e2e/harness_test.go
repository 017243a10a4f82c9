package e2e

// The suite's side of the harness: the mesh as these tests see it — control
// planes and their JSON API, sidecars and `weft run` units with the testapp,
// requests through the mesh, the CLI. Building, ports and processes are
// test/e2e/harness's.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// Contract bounds (from the issue) and the harness's patience. The box is a
// loaded 2-core machine: "eventually" waits are generous, but the bounds the
// issue states are asserted as stated (plus the slack the brief allows).
const (
	// propagation: "Changes take effect within a second on every sidecar."
	propagation = time.Second
	// leaseBound: default lease (≤ 5 s); removal after kill -9 is asserted
	// within leaseBound + leaseSlack.
	leaseBound = 5 * time.Second
	leaseSlack = 2 * time.Second
	// eventually is how long the harness waits for things the issue gives no
	// bound for (processes starting, reconnect with backoff).
	eventually = 20 * time.Second
	// settle is added to `propagation` before the tests rely on a change
	// having reached a sidecar (scheduling slack on a loaded box).
	settle = 500 * time.Millisecond
)

// bins are weft and the testapp, built once for the package's tests.
var bins harness.Binaries

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m, "./test/e2e/testapp", &bins))
}

// Short names for the harness's helpers, which the tests use on most lines.
var (
	freePort = harness.FreePort
	addr     = harness.Addr
	dialable = harness.Dialable
	poll     = harness.PollEvery
	httpGet  = harness.Get
	// plainClient makes requests straight to a listener, no proxy.
	plainClient = harness.Client
)

// ---------------------------------------------------------------- control plane

// Control is a running `weft control` and the view of its JSON API the
// tests read.
type Control struct {
	*harness.Control
	t testing.TB
}

// StartControl starts a control plane on fresh ports and waits for /healthz.
func StartControl(t testing.TB, extra ...string) *Control {
	t.Helper()
	return &Control{Control: harness.StartControl(t, bins.Weft, eventually, extra...), t: t}
}

// API wire types, as the issue gives them.
type InstanceJSON struct {
	ID      string            `json:"id"`
	Address string            `json:"address"`
	Ready   bool              `json:"ready"`
	Version string            `json:"version"`
	Labels  map[string]string `json:"labels"`
	Zone    string            `json:"zone"`
	Load    string            `json:"load"`
}

type ServiceJSON struct {
	Name      string         `json:"name"`
	Instances []InstanceJSON `json:"instances"`
}

type ObjectJSON struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
}

// Services returns GET /api/v1/services by service name.
func (c *Control) Services() (map[string][]InstanceJSON, error) {
	var out struct {
		Services []ServiceJSON `json:"services"`
	}
	code, body, err := httpGet(c.URL + "/api/v1/services")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET /api/v1/services: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		return nil, fmt.Errorf("GET /api/v1/services: %v in %q", err, body)
	}
	m := map[string][]InstanceJSON{}
	for _, s := range out.Services {
		m[s.Name] = append(m[s.Name], s.Instances...)
	}
	return m, nil
}

// ReadyInstances returns the ready instances of service.
func (c *Control) ReadyInstances(service string) ([]InstanceJSON, error) {
	m, err := c.Services()
	if err != nil {
		return nil, err
	}
	var out []InstanceJSON
	for _, in := range m[service] {
		if in.Ready {
			out = append(out, in)
		}
	}
	return out, nil
}

// WaitReady waits until service has exactly n ready instances.
func (c *Control) WaitReady(service string, n int, d time.Duration) []InstanceJSON {
	c.t.Helper()
	var got []InstanceJSON
	var lastErr error
	ok := poll(d, 50*time.Millisecond, func() bool {
		got, lastErr = c.ReadyInstances(service)
		return lastErr == nil && len(got) == n
	})
	if !ok {
		c.t.Fatalf("service %q: want %d ready instances within %s, have %d (%+v, err %v)", service, n, d, len(got), got, lastErr)
	}
	return got
}

// Resources returns GET /api/v1/resources.
func (c *Control) Resources() ([]ObjectJSON, error) {
	var out struct {
		Items []ObjectJSON `json:"items"`
	}
	code, body, err := httpGet(c.URL + "/api/v1/resources")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET /api/v1/resources: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		return nil, fmt.Errorf("GET /api/v1/resources: %v in %q", err, body)
	}
	return out.Items, nil
}

// MustResources is Resources, failing the test on error.
func (c *Control) MustResources() []ObjectJSON {
	c.t.Helper()
	items, err := c.Resources()
	if err != nil {
		c.t.Fatal(err)
	}
	return items
}

// ---------------------------------------------------------------- sidecars

// Sidecar is a running `weft sidecar` or `weft run`.
type Sidecar struct {
	t        testing.TB
	Service  string
	Name     string // the testapp's --name, when the harness chose the app
	AppPort  int    // 0: pure client
	Inbound  int
	Outbound int
	Admin    int
	Proc     *harness.Proc // the weft process (leader of its group)
	App      *harness.Proc // the app, when started separately (sidecar mode)
	AppLog   string        // the testapp's --log file (its "listening"/"first" lines)
}

// AppLogText returns the testapp's log so far.
func (s *Sidecar) AppLogText() string {
	if s.AppLog == "" {
		return ""
	}
	b, _ := os.ReadFile(s.AppLog)
	return string(b)
}

func (s *Sidecar) InboundAddr() string  { return addr(s.Inbound) }
func (s *Sidecar) OutboundAddr() string { return addr(s.Outbound) }
func (s *Sidecar) AdminURL() string     { return "http://" + addr(s.Admin) }

// RunOpts configures a `weft run` unit.
type RunOpts struct {
	Service string
	Name    string   // testapp --name (default: service-N)
	AppArgs []string // extra testapp flags
	Command []string // replaces the testapp command entirely
	Flags   []string // extra weft flags (--version, --label, --drain, …)
	NoWait  bool     // do not wait for /ready and registration
}

var nameSeq struct {
	sync.Mutex
	n map[string]int
}

func nextName(service string) string {
	nameSeq.Lock()
	defer nameSeq.Unlock()
	if nameSeq.n == nil {
		nameSeq.n = map[string]int{}
	}
	nameSeq.n[service]++
	return fmt.Sprintf("%s-%d", service, nameSeq.n[service])
}

// StartRun starts `weft run` with the testapp (or o.Command) as the app and,
// unless o.NoWait, waits until /ready is 200 and the control plane lists the
// instance as ready.
func StartRun(t testing.TB, cp *Control, o RunOpts) *Sidecar {
	t.Helper()
	s := &Sidecar{
		t: t, Service: o.Service, Name: o.Name,
		AppPort: freePort(t), Inbound: freePort(t), Outbound: freePort(t), Admin: freePort(t),
	}
	if s.Name == "" {
		s.Name = nextName(o.Service)
	}
	args := []string{"run",
		"--control", cp.GRPCAddr, "--service", o.Service, "--app-port", strconv.Itoa(s.AppPort),
		"--inbound", s.InboundAddr(), "--outbound", s.OutboundAddr(), "--admin", addr(s.Admin),
	}
	args = append(args, o.Flags...)
	args = append(args, "--")
	if o.Command != nil {
		args = append(args, o.Command...)
	} else {
		s.AppLog = filepath.Join(t.TempDir(), s.Name+".applog")
		args = append(args, bins.App, "--name", s.Name, "--log", s.AppLog)
		args = append(args, o.AppArgs...)
	}
	s.Proc = harness.Start(t, "run-"+s.Name, bins.Weft, args...)
	if s.AppLog != "" {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("----- %s app log -----\n%s", s.Name, harness.Tail(s.AppLogText(), 60, 8<<10))
			}
		})
	}
	if !o.NoWait {
		s.WaitReady(eventually)
		s.WaitRegistered(cp, eventually)
	}
	return s
}

// SidecarOpts configures a `weft sidecar`.
type SidecarOpts struct {
	Service   string
	AppPort   int            // 0: a pure client sidecar (no inbound)
	Upstreams map[string]int // --upstream NAME=127.0.0.1:PORT
	Flags     []string
	NoWait    bool
}

// StartSidecar starts `weft sidecar` and, unless o.NoWait, waits for /ready.
func StartSidecar(t testing.TB, cp *Control, o SidecarOpts) *Sidecar {
	t.Helper()
	s := &Sidecar{t: t, Service: o.Service, AppPort: o.AppPort, Outbound: freePort(t), Admin: freePort(t)}
	args := []string{"sidecar", "--control", cp.GRPCAddr, "--service", o.Service,
		"--outbound", s.OutboundAddr(), "--admin", addr(s.Admin)}
	if o.AppPort != 0 {
		s.Inbound = freePort(t)
		args = append(args, "--app-port", strconv.Itoa(o.AppPort), "--inbound", s.InboundAddr())
	}
	for name, port := range o.Upstreams {
		args = append(args, "--upstream", fmt.Sprintf("%s=%s", name, addr(port)))
	}
	args = append(args, o.Flags...)
	s.Proc = harness.Start(t, "sidecar-"+o.Service, bins.Weft, args...)
	if !o.NoWait {
		s.WaitReady(eventually)
	}
	return s
}

// StartClient starts a pure client sidecar (no app), the callers' way into
// the mesh.
func StartClient(t testing.TB, cp *Control, upstreams map[string]int) *Sidecar {
	t.Helper()
	return StartSidecar(t, cp, SidecarOpts{Service: "client", Upstreams: upstreams})
}

// StartApp starts the testapp directly (for `weft sidecar --app-port`) and
// waits until it accepts connections.
func StartApp(t testing.TB, name string, port int, args ...string) *harness.Proc {
	t.Helper()
	p := harness.Start(t, "app-"+name, bins.App, append([]string{"--port", strconv.Itoa(port), "--name", name}, args...)...)
	harness.WaitListening(t, p, addr(port), eventually)
	return p
}

// WaitReady waits for the admin GET /ready → 200.
func (s *Sidecar) WaitReady(d time.Duration) {
	s.t.Helper()
	harness.WaitUp(s.t, s.Proc, s.AdminURL()+"/ready", d)
}

// Registered reports whether the control plane lists this sidecar's instance
// (matched by its inbound address) and whether it is ready.
func (s *Sidecar) Registered(cp *Control) (found, ready bool, in InstanceJSON, err error) {
	m, err := cp.Services()
	if err != nil {
		return false, false, in, err
	}
	for _, in := range m[s.Service] {
		if sameAddr(in.Address, s.InboundAddr()) {
			return true, in.Ready, in, nil
		}
	}
	return false, false, in, nil
}

// WaitRegistered waits until the control plane lists the instance as ready.
func (s *Sidecar) WaitRegistered(cp *Control, d time.Duration) InstanceJSON {
	s.t.Helper()
	var in InstanceJSON
	var lastErr error
	ok := poll(d, 50*time.Millisecond, func() bool {
		var found, ready bool
		found, ready, in, lastErr = s.Registered(cp)
		return found && ready
	})
	if !ok {
		m, _ := cp.Services()
		s.t.Fatalf("%s (inbound %s) not listed ready in /api/v1/services within %s (err %v); services: %+v", s.Proc.Name, s.InboundAddr(), d, lastErr, m)
	}
	return in
}

// sameAddr compares host:port addresses by port, and by host unless one of
// them names no specific host.
func sameAddr(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" || h == "localhost" }
	return ha == hb || wild(ha) || wild(hb)
}

// Stats is the admin /stats view.
type Stats struct {
	InboundRequests  int64  `json:"inbound_requests"`
	OutboundRequests int64  `json:"outbound_requests"`
	Load             string `json:"load"` // the x-weft-load value the instance reports
}

func (s *Sidecar) Stats() (Stats, error) {
	var st Stats
	code, body, err := httpGet(s.AdminURL() + "/stats")
	if err != nil {
		return st, err
	}
	if code != 200 {
		return st, fmt.Errorf("GET /stats: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return st, fmt.Errorf("GET /stats: %v in %q", err, body)
	}
	return st, nil
}

// ---------------------------------------------------------------- HTTP through the mesh

// Reply is the testapp's JSON answer.
type Reply struct {
	Instance string `json:"instance"`
	Name     string `json:"name"`
	Path     string `json:"path"`
	Query    string `json:"query"`
	Host     string `json:"host"`
	Method   string `json:"method"`
	Peer     string `json:"peer"`
}

// MeshError is the body of a mesh-produced error.
type MeshError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Service string `json:"service"`
}

// Result is one request's outcome.
type Result struct {
	Status     int
	Header     http.Header
	Body       []byte
	Reply      Reply
	Err        error
	Start, End time.Time
	Key        string // the hash key sent, if any
}

func (r Result) OK() bool { return r.Err == nil && r.Status == 200 && r.Reply.Name != "" }

func (r Result) String() string {
	if r.Err != nil {
		return fmt.Sprintf("error after %s: %v", r.End.Sub(r.Start).Round(time.Millisecond), r.Err)
	}
	return fmt.Sprintf("%d x-weft-error=%q body=%q", r.Status, r.Header.Get("x-weft-error"), truncate(string(r.Body), 300))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// proxyClient sends absolute-form requests to the sidecar's outbound
// listener, as an app using HTTP_PROXY does.
func proxyClient(outbound string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyURL(&url.URL{Scheme: "http", Host: outbound}),
			MaxIdleConns:        100,
			MaxIdleConnsPerHost: 100,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
		Timeout: 15 * time.Second,
	}
}

// meshGet GETs http://<service><pathQuery> through the client's proxy.
func meshGet(c *http.Client, service, pathQuery string, hdr http.Header) Result {
	r := Result{Start: time.Now()}
	req, err := http.NewRequest("GET", "http://"+service+pathQuery, nil)
	if err != nil {
		r.Err = err
		r.End = time.Now()
		return r
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		r.Err = err
		r.End = time.Now()
		return r
	}
	r.Body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	r.End = time.Now()
	r.Status, r.Header = resp.StatusCode, resp.Header
	if err != nil {
		r.Err = fmt.Errorf("reading body: %w", err)
		return r
	}
	if r.Status == 200 {
		if err := json.Unmarshal(r.Body, &r.Reply); err != nil {
			r.Err = fmt.Errorf("200 with a body that is not the testapp's JSON: %v: %q", err, truncate(string(r.Body), 200))
		}
	}
	return r
}

// mustGet is meshGet that fails the test unless the reply is 200.
func mustGet(t testing.TB, c *http.Client, service, pathQuery string, hdr http.Header) Reply {
	t.Helper()
	r := meshGet(c, service, pathQuery, hdr)
	if !r.OK() {
		t.Fatalf("GET http://%s%s: %s", service, pathQuery, r)
	}
	return r.Reply
}

// waitAllServing sends requests until replies from every named instance have
// been seen (the client sidecar's view includes them all).
func waitAllServing(t testing.TB, c *http.Client, service string, names ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	seen := map[string]bool{}
	var last Result
	ok := poll(eventually, 0, func() bool {
		last = meshGet(c, service, "/warmup", nil)
		if last.OK() {
			seen[last.Reply.Name] = true
		}
		for n := range want {
			if !seen[n] {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("service %s: within %s saw only %v of %v; last reply: %s", service, eventually, keys(seen), names, last)
	}
}

// LoadOpts bounds a load run by count and time.
type LoadOpts struct {
	Workers      int
	MaxPerWorker int
	Duration     time.Duration
	Path         func(worker, i int) string      // default "/load"
	Header       func(worker, i int) http.Header // optional
	Key          func(worker, i int) string      // optional x-user-id
	Pause        time.Duration
}

// Load runs requests from concurrent workers until each has sent
// MaxPerWorker, Duration has passed, or stop is closed. Start it with go and
// read the results from the returned channel.
func Load(c *http.Client, service string, o LoadOpts, stop <-chan struct{}) <-chan []Result {
	out := make(chan []Result, 1)
	go func() {
		deadline := time.Now().Add(o.Duration)
		var mu sync.Mutex
		var all []Result
		var wg sync.WaitGroup
		for w := range o.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []Result
				for i := 0; i < o.MaxPerWorker && time.Now().Before(deadline); i++ {
					select {
					case <-stop:
						i = o.MaxPerWorker
						continue
					default:
					}
					path := "/load"
					if o.Path != nil {
						path = o.Path(w, i)
					}
					var hdr http.Header
					if o.Header != nil {
						hdr = o.Header(w, i)
					}
					key := ""
					if o.Key != nil {
						key = o.Key(w, i)
						if hdr == nil {
							hdr = http.Header{}
						}
						hdr.Set("x-user-id", key)
					}
					r := meshGet(c, service, path, hdr)
					r.Key = key
					mine = append(mine, r)
					if o.Pause > 0 {
						time.Sleep(o.Pause)
					}
				}
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		out <- all
	}()
	return out
}

// failures returns the results that are not OK.
func failures(rs []Result) []Result {
	var out []Result
	for _, r := range rs {
		if !r.OK() {
			out = append(out, r)
		}
	}
	return out
}

func countByName(rs []Result) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		if r.OK() {
			m[r.Reply.Name]++
		}
	}
	return m
}

func describe(rs []Result, n int) string {
	var b strings.Builder
	for i, r := range rs {
		if i == n {
			fmt.Fprintf(&b, "\n  … and %d more", len(rs)-n)
			break
		}
		fmt.Fprintf(&b, "\n  [%s] %s", r.Start.Format("15:04:05.000"), r)
	}
	return b.String()
}

// ---------------------------------------------------------------- CLI

// CLIResult is one finished `weft` command.
type CLIResult struct {
	Code   int
	Stdout string
	Stderr string
	Args   []string
}

func (r CLIResult) String() string {
	return fmt.Sprintf("weft %s → exit %d\nstdout: %s\nstderr: %s", strings.Join(r.Args, " "), r.Code, truncate(r.Stdout, 2000), truncate(r.Stderr, 2000))
}

// weft runs the binary to completion (bounded by d), with extra env.
func weft(t testing.TB, d time.Duration, env []string, args ...string) CLIResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.Weft, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	r := CLIResult{Stdout: so.String(), Stderr: se.String(), Args: args, Code: -1}
	if cmd.ProcessState != nil {
		r.Code = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		t.Errorf("weft %s did not finish within %s (killed)\n%s", strings.Join(args, " "), d, r)
	} else if err != nil && r.Code <= 0 {
		t.Errorf("weft %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// writeFile writes content to a new file in the test's temp dir.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// policyYAML renders a TrafficPolicy exactly in the shape.
func policyYAML(name, service, algorithm, hashKey string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata:\n  name: %s\nspec:\n  service: %s\n", name, service)
	if algorithm != "" || hashKey != "" {
		b.WriteString("  loadBalancer:\n")
		if algorithm != "" {
			fmt.Fprintf(&b, "    algorithm: %s\n", algorithm)
		}
		if hashKey != "" {
			fmt.Fprintf(&b, "    hashKey: %s\n", hashKey)
		}
	}
	return b.String()
}

// applyPolicy applies a TrafficPolicy with `weft apply -f --server` and fails
// the test unless it succeeds.
func applyPolicy(t testing.TB, cp *Control, service, algorithm, hashKey string) {
	t.Helper()
	f := writeFile(t, "policy.yaml", policyYAML(service, service, algorithm, hashKey))
	r := weft(t, 30*time.Second, nil, "apply", "-f", f, "--server", cp.URL)
	if r.Code != 0 {
		t.Fatalf("apply %s/%s failed:\n%s", algorithm, hashKey, r)
	}
}

// ---------------------------------------------------------------- small helpers

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// logTimes returns the unix-nano timestamps the testapp printed on lines
// "<word> <unixnano> [rest]" whose rest matches (or any rest when "").
func logTimes(out, word, rest string) []time.Time {
	var ts []time.Time
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != word {
			continue
		}
		if rest != "" && (len(f) < 3 || f[2] != rest) {
			continue
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err == nil {
			ts = append(ts, time.Unix(0, ns))
		}
	}
	return ts
}

// oneLine reports whether s is exactly one non-empty line (a trailing
// newline allowed).
func oneLine(s string) bool {
	s = strings.TrimRight(s, "\n")
	return s != "" && !strings.Contains(s, "\n")
}
