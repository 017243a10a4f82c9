// Package messaging holds the real-process tests of Weft messaging: real
// `weft` binaries (control plane with the embedded broker, or an external
// Debian nats-server; `weft run` subscriber units; a publishing sidecar) on
// loopback, and msgapp as the subscribing app. The harness is a small copy
// of test/e2e's, kept here so the two packages evolve independently.
package messaging

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// eventually bounds waits for things with no stated bound (processes
// starting, reconnecting) on a loaded 2-core machine.
const eventually = 30 * time.Second

var (
	weftBin string
	appBin  string
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		fmt.Fprintf(os.Stderr, "e2e: cannot find the module root (go env GOMOD: %q, %v)\n", gomod, err)
		return 1
	}
	root := filepath.Dir(gomod)
	tmp, err := os.MkdirTemp("", "weft-e2e-msg-")
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
	appBin = filepath.Join(tmp, "msgapp")
	weftBin = filepath.Join(tmp, "weft")
	if b := os.Getenv("WEFT_E2E_BIN"); b != "" {
		weftBin, _ = filepath.Abs(b)
	} else if err := build(weftBin, "./cmd/weft"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := build(appBin, "./test/e2e/messaging/msgapp"); err != nil {
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

// freePort hands out a loopback port below the ephemeral range, never the
// same twice in a run.
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	if portNext == 0 {
		portNext = 32000 - 8000 + rand.IntN(4000) // 24000–27999, apart from test/e2e's
	}
	for range 8000 {
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
	t      testing.TB
	name   string
	args   []string
	out    string
	cmd    *exec.Cmd
	done   chan struct{}
	killed bool
}

func start(t testing.TB, name, bin string, args ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{t: t, name: name, args: args, out: filepath.Join(dir, name+".log"), done: make(chan struct{})}
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
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.out)
			t.Logf("----- %s (%s) -----\n%s", p.name, strings.Join(p.args, " "), tail(string(b), 60))
		}
	})
	return p
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = append([]string{fmt.Sprintf("… (%d earlier lines)", len(ls)-n)}, ls[len(ls)-n:]...)
	}
	return strings.Join(ls, "\n")
}

// kill SIGKILLs the process group (sidecar and app) and waits.
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to d.
func (p *proc) stop(d time.Duration) {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Errorf("%s did not stop within %s of SIGTERM", p.name, d)
		p.kill()
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) log() string { b, _ := os.ReadFile(p.out); return string(b) }

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

// ---------------------------------------------------------------- control plane

type control struct {
	t                        testing.TB
	grpc, http, broker, data string
	extra                    []string
	p                        *proc
	n                        int
}

// startControl starts `weft control` (embedded broker on a fixed port, so a
// restart comes back where sidecars look for it).
func startControl(t testing.TB, extra ...string) *control {
	t.Helper()
	c := &control{t: t, grpc: addr(freePort(t)), http: addr(freePort(t)), broker: addr(freePort(t)),
		data: filepath.Join(t.TempDir(), "data"), extra: extra}
	c.start()
	return c
}

func (c *control) url() string { return "http://" + c.http }

func (c *control) start() {
	c.t.Helper()
	c.n++
	args := append([]string{"control", "--grpc-addr", c.grpc, "--http-addr", c.http, "--broker-addr", c.broker,
		"--data-dir", c.data, "--otlp-endpoint", "none", "--log-level", "debug"}, c.extra...)
	c.p = start(c.t, fmt.Sprintf("control-%d", c.n), weftBin, args...)
	if !poll(eventually, func() bool {
		code, _, err := httpDo("GET", c.url()+"/healthz", nil, nil)
		return (err == nil && code == 200) || c.p.exited()
	}) || c.p.exited() {
		c.t.Fatalf("control plane not healthy:\n%s", tail(c.p.log(), 30))
	}
}

// restart stops the control plane (and its embedded broker) gracefully and
// starts it again on the same ports and data.
func (c *control) restart() {
	c.t.Helper()
	c.p.stop(20 * time.Second)
	c.start()
}

// weft runs the CLI against this control plane.
func (c *control) weft(args ...string) (string, error) {
	cmd := exec.Command(weftBin, append(args, "--server", c.url())...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *control) apply(manifest string) {
	c.t.Helper()
	f := filepath.Join(c.t.TempDir(), "m.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if out, err := c.weft("apply", "-f", f); err != nil {
		c.t.Fatalf("weft apply: %v\n%s", err, out)
	}
}

func subscription(name, service, topic, path string, extra string) string {
	return fmt.Sprintf(`apiVersion: weft.dev/v1alpha1
kind: Subscription
metadata:
  name: %s
spec:
  service: %s
  topic: %s
  path: %s
%s`, name, service, topic, path, extra)
}

type topicsJSON struct {
	Broker    string `json:"broker"`
	Connected bool   `json:"connected"`
	Topics    []struct {
		Name          string `json:"name"`
		Messages      uint64 `json:"messages"`
		DeadLetters   uint64 `json:"deadLetters"`
		Subscriptions []struct {
			Service      string `json:"service"`
			Origin       string `json:"origin"`
			Lag          uint64 `json:"lag"`
			InFlight     int    `json:"inFlight"`
			Delivered    uint64 `json:"delivered"`
			DeadLettered int    `json:"deadLettered"`
		} `json:"subscriptions"`
	} `json:"topics"`
}

func (c *control) topics() (topicsJSON, error) {
	var out topicsJSON
	code, body, err := httpDo("GET", c.url()+"/api/v1/topics", nil, nil)
	if err != nil {
		return out, err
	}
	if code != 200 {
		return out, fmt.Errorf("GET /api/v1/topics: %d %s", code, body)
	}
	return out, json.Unmarshal(body, &out)
}

// subscriptionState returns (exists, lag, inFlight) of service's
// subscription to topic.
func (c *control) subscriptionState(topic, service string) (bool, uint64, int) {
	ts, err := c.topics()
	if err != nil {
		return false, 0, 0
	}
	for _, t := range ts.Topics {
		if t.Name != topic {
			continue
		}
		for _, s := range t.Subscriptions {
			if s.Service == service {
				return true, s.Lag, s.InFlight
			}
		}
	}
	return false, 0, 0
}

func (c *control) waitSubscription(topic, service string) {
	c.t.Helper()
	if !poll(eventually, func() bool { ok, _, _ := c.subscriptionState(topic, service); return ok }) {
		ts, err := c.topics()
		c.t.Fatalf("subscription of %s to %s never appeared: %+v %v", service, topic, ts, err)
	}
}

// ---------------------------------------------------------------- sidecars

type unit struct {
	name     string
	record   string
	outbound int
	admin    int
	p        *proc
}

// startSub starts `weft run` with msgapp as the app of service, recording
// deliveries into its own file, and waits until it is ready.
func startSub(t testing.TB, c *control, service, name string, weftFlags []string, appFlags ...string) *unit {
	t.Helper()
	u := &unit{name: name, record: filepath.Join(t.TempDir(), name+".jsonl"), outbound: freePort(t), admin: freePort(t)}
	args := []string{"run", "--control", c.grpc, "--service", service, "--id", name,
		"--app-port", strconv.Itoa(freePort(t)), "--inbound", addr(freePort(t)),
		"--outbound", addr(u.outbound), "--admin", addr(u.admin), "--otlp-endpoint", "none", "--drain", "3s"}
	args = append(args, weftFlags...)
	args = append(args, "--", appBin, "--record", u.record, "--name", name)
	args = append(args, appFlags...)
	u.p = start(t, "run-"+name, weftBin, args...)
	u.waitReady(t)
	return u
}

func (u *unit) waitReady(t testing.TB) {
	t.Helper()
	if !poll(eventually, func() bool {
		code, _, err := httpDo("GET", "http://"+addr(u.admin)+"/ready", nil, nil)
		return (err == nil && code == 200) || u.p.exited()
	}) || u.p.exited() {
		t.Fatalf("%s not ready:\n%s", u.name, tail(u.p.log(), 30))
	}
}

// startPub starts a pure client sidecar (no app): the publisher's way in.
func startPub(t testing.TB, c *control, service string) *unit {
	t.Helper()
	u := &unit{name: service, outbound: freePort(t), admin: freePort(t)}
	u.p = start(t, "sidecar-"+service, weftBin, "sidecar", "--control", c.grpc, "--service", service,
		"--outbound", addr(u.outbound), "--admin", addr(u.admin), "--otlp-endpoint", "none")
	u.waitReady(t)
	return u
}

func (u *unit) metrics() string {
	_, body, _ := httpDo("GET", "http://"+addr(u.admin)+"/metrics", nil, nil)
	return string(body)
}

// ---------------------------------------------------------------- HTTP

var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, Proxy: nil}}

func httpDo(method, url string, body []byte, h http.Header) (int, []byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

type pubResult struct {
	code  int
	error string
	body  []byte
}

// publish POSTs one message to a sidecar's publish endpoint.
func publish(outbound int, topic, id, key, body string, h http.Header) pubResult {
	if h == nil {
		h = http.Header{}
	}
	if id != "" {
		h.Set("X-Weft-Message-Id", id)
	}
	if key != "" {
		h.Set("X-Weft-Key", key)
	}
	code, b, err := httpDo("POST", "http://"+addr(outbound)+"/v1/publish/"+topic, []byte(body), h)
	if err != nil {
		return pubResult{error: err.Error()}
	}
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return pubResult{code: code, error: e.Error, body: b}
}

// publishRetrying publishes until the sidecar answers 200 (the same id
// each time, so a publish whose answer was lost is stored once), bounded
// by d. It returns how many tries failed.
func publishRetrying(outbound int, topic, id, key, body string, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	failed := 0
	for {
		r := publish(outbound, topic, id, key, body, nil)
		if r.code == 200 {
			return failed, nil
		}
		failed++
		if time.Now().After(deadline) {
			return failed, fmt.Errorf("publish %s: %d %s %s", id, r.code, r.error, r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- records

type record struct {
	ID      string `json:"id"`
	Key     string `json:"key"`
	Attempt int    `json:"attempt"`
	Body    string `json:"body"`
	Inst    string `json:"inst"`
	Overlap bool   `json:"overlap"`
	Trace   string `json:"traceparent"`
	Start   int64  `json:"start"`
	At      int64  `json:"at"`
	Path    string `json:"path"`
	Answer  string `json:"answer"`
}

// records reads every delivery recorded in files, in file order.
func records(t testing.TB, files ...string) []record {
	t.Helper()
	var out []record
	for _, f := range files {
		fh, err := os.Open(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r record
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				out = append(out, r)
			}
		}
		fh.Close()
	}
	return out
}

// acked returns the ids acked at least once and how many acks were
// duplicates.
func acked(rs []record) (map[string]int, int) {
	ids := map[string]int{}
	dups := 0
	for _, r := range rs {
		if r.Answer != "ack" {
			continue
		}
		if ids[r.ID] > 0 {
			dups++
		}
		ids[r.ID]++
	}
	return ids, dups
}
