package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestFirstContactMessages: each bad input a new user hit (issue 16) now
// gets exactly this one-line answer.
func TestFirstContactMessages(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy := held.Addr().String()
	unknownField := writeFile(t, "retires.yaml", policyYAML("x", "x", "", "")+"  retires: 3\n")
	dead := addr(freePort(t))
	cases := []struct {
		name string
		args []string
		want string // the whole of stderr
	}{
		{"get without argument", []string{"get", "--server", cp.URL},
			`weft: get what? want one of: services, resources, certs, config INSTANCE`},
		{"get unknown object", []string{"get", "pods", "--server", cp.URL},
			`weft: unknown object "pods": want one of: services, resources, certs, config INSTANCE`},
		{"get config without instance", []string{"get", "config", "--server", cp.URL},
			`weft: get config: want one instance id (see weft get services)`},
		{"get config unknown instance", []string{"get", "config", "nope", "--server", cp.URL},
			`weft: instance "nope" not found: no instance is registered`},
		{"proxy-config without instance", []string{"proxy-config", "--server", cp.URL},
			`weft: proxy-config: want one instance id (see weft get services), got 0 arguments`},
		{"get services -o yml", []string{"get", "services", "-o", "yml", "--server", cp.URL},
			`weft: -o "yml": want table, wide, json or yaml`},
		{"log level loud", []string{"get", "services", "--log-level", "loud", "--server", cp.URL},
			`weft: --log-level "loud": want debug, info, warn or error`},
		{"otlp endpoint ftp", []string{"control", "--otlp-endpoint", "ftp://x", "--data-dir", filepath.Join(t.TempDir(), "d"),
			"--http-addr", addr(freePort(t)), "--grpc-addr", addr(freePort(t))},
			`weft: --otlp-endpoint: "ftp://x": scheme "ftp": want http, https, grpc or grpcs`},
		{"sidecar otlp endpoint ftp", []string{"sidecar", "--service", "s", "--otlp-endpoint", "ftp://x", "--control", dead,
			"--outbound", addr(freePort(t)), "--admin", addr(freePort(t))},
			`weft: --otlp-endpoint: "ftp://x": scheme "ftp": want http, https, grpc or grpcs`},
		{"unknown field", []string{"apply", "-f", unknownField, "--server", cp.URL},
			`weft: ` + unknownField + `: document 1 (TrafficPolicy/x): spec: unknown field "retires"`},
		{"second instance on the default outbound", []string{"run", "--service", "s", "--control", dead, "--outbound", busy,
			"--admin", addr(freePort(t)), "--", "true"},
			`weft: --outbound ` + busy + `: port already in use (is another weft running?); a further instance on this host needs its own ports: --outbound 127.0.0.1:0 --admin 127.0.0.1:0 (any free port; weft get services -o wide shows which)`},
		{"second instance on the default admin", []string{"run", "--service", "s", "--control", dead, "--outbound", addr(freePort(t)),
			"--admin", busy, "--", "true"},
			`weft: --admin ` + busy + `: port already in use (is another weft running?); a further instance on this host needs its own ports: --outbound 127.0.0.1:0 --admin 127.0.0.1:0 (any free port; weft get services -o wide shows which)`},
		{"second control plane", []string{"control", "--http-addr", busy, "--grpc-addr", addr(freePort(t)), "--data-dir", filepath.Join(t.TempDir(), "d")},
			`weft: --http-addr ` + busy + `: port already in use (is another weft running?); is a control plane already running here (weft check)? Another one needs --http-addr and --grpc-addr of its own and its own --data-dir`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := weft(t, 30*time.Second, nil, tc.args...)
			if r.Code == 0 {
				t.Errorf("want a non-zero exit:\n%s", r)
			}
			if got := strings.TrimRight(r.Stderr, "\n"); got != tc.want {
				t.Errorf("stderr:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestVersion: `weft version` and `weft --version` print the same line:
// version, commit, Go version, build date (here a plain go build, so the
// fallbacks; the README walk-through checks what make build stamps).
func TestVersion(t *testing.T) {
	t.Parallel()
	a := weft(t, 30*time.Second, nil, "version")
	b := weft(t, 30*time.Second, nil, "--version")
	re := regexp.MustCompile(`^weft \S+ \(commit \S+, go1\.\d+\S*, built \S+\)\n$`)
	if a.Code != 0 || !re.MatchString(a.Stdout) {
		t.Errorf("weft version: want a line matching %s:\n%s", re, a)
	}
	if b.Code != 0 || b.Stdout != a.Stdout {
		t.Errorf("weft --version printed %q, weft version %q; want the same", b.Stdout, a.Stdout)
	}
	j := weft(t, 30*time.Second, nil, "version", "-o", "json")
	for _, k := range []string{`"version"`, `"commit"`, `"goVersion"`, `"date"`} {
		if !strings.Contains(j.Stdout, k) {
			t.Errorf("weft version -o json lacks %s:\n%s", k, j)
		}
	}
}

// TestRunSaysWhatItWaitsFor: an app that never opens PORT is warned about
// (naming PORT and the port) while the unit keeps waiting; an app that
// exits non-zero is logged at WARN; a sidecar that never reached its
// control plane does not claim to serve a last known view.
func TestRunSaysWhatItWaitsFor(t *testing.T) {
	t.Parallel()
	dead := addr(freePort(t))
	p := harness.Start(t, "run-silent", bins.Weft, "run", "--service", "silent", "--control", dead,
		"--outbound", addr(freePort(t)), "--admin", addr(freePort(t)), "--", "sleep", "60")
	re := regexp.MustCompile(`level=WARN msg="app not accepting connections on 127\.0\.0\.1:(\d+) yet; the instance registers once it does, still waiting: the app must listen on the port in its PORT environment variable \(PORT=(\d+)\), or pass --app-port N with the port it listens on"`)
	if !poll(eventually, 100*time.Millisecond, func() bool { return re.MatchString(p.ReadOutput()) }) {
		t.Fatalf("no warning about the app's port within %s:\n%s", eventually, p.Tail(20))
	}
	if m := re.FindStringSubmatch(p.ReadOutput()); m[1] != m[2] {
		t.Errorf("the warning names port %s and PORT=%s; want the same", m[1], m[2])
	}
	if p.Exited() {
		t.Errorf("weft run gave up instead of waiting:\n%s", p.Tail(20))
	}
	out := p.ReadOutput()
	if !strings.Contains(out, "control plane not reachable yet") || strings.Contains(out, "last known view") {
		t.Errorf("a sidecar that never connected should say the control plane is not reachable yet, not serve a last known view:\n%s", p.Tail(20))
	}
	p.Stop(20 * time.Second)

	r := weft(t, 30*time.Second, nil, "run", "--service", "failing", "--control", dead,
		"--outbound", addr(freePort(t)), "--admin", addr(freePort(t)), "--", "sh", "-c", "sleep 0.2; exit 3")
	if r.Code != 3 {
		t.Errorf("weft run of an app exiting 3: want exit 3:\n%s", r)
	}
	if !strings.Contains(r.Stderr, `level=WARN msg="app exited with code 3; deregistering"`) {
		t.Errorf("an app exiting 3 should be logged at WARN:\n%s", r)
	}
}

// TestControlStopsPromptly: SIGTERM ends the control plane quickly, idle
// or with sidecars connected (their streams are cut, they reconnect on
// their own), so a restart on the same data dir does not find the store
// locked. Goal 1 s; the bound is generous for a loaded machine.
func TestControlStopsPromptly(t *testing.T) {
	t.Parallel()
	const bound = 3 * time.Second
	for _, withSidecar := range []bool{false, true} {
		t.Run(fmt.Sprintf("sidecar=%v", withSidecar), func(t *testing.T) {
			cp := StartControl(t)
			if withSidecar {
				StartRun(t, cp, RunOpts{Service: "held"})
			}
			start := time.Now()
			cp.Proc.Signal(syscall.SIGTERM)
			if !cp.Proc.WaitExit(20 * time.Second) {
				t.Fatalf("control plane still running 20s after SIGTERM:\n%s", cp.Proc.Tail(20))
			}
			if d := time.Since(start); d > bound {
				t.Errorf("control plane took %s to exit after SIGTERM, want < %s (goal 1s):\n%s", d, bound, cp.Proc.Tail(20))
			}
			if code := cp.Proc.ExitCode(); code != 0 {
				t.Errorf("exit code %d after SIGTERM", code)
			}
			cp.Restart() // fails the test if the store is still locked
		})
	}
}

// TestInspectInstances: -o yaml is YAML, -o wide shows each sidecar's
// addresses, proxy-config shows one sidecar's view, and shell completion
// offers the live ids.
func TestInspectInstances(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	s := StartRun(t, cp, RunOpts{Service: "shop"})
	in := s.WaitRegistered(cp, eventually)

	y := weft(t, 30*time.Second, nil, "get", "services", "-o", "yaml", "--server", cp.URL)
	if y.Code != 0 || !strings.HasPrefix(y.Stdout, "services:\n- instances:\n") || !strings.Contains(y.Stdout, "\n  name: shop\n") {
		t.Errorf("get services -o yaml: want YAML:\n%s", y)
	}
	w := weft(t, 30*time.Second, nil, "get", "services", "-o", "wide", "--server", cp.URL)
	if w.Code != 0 || !regexp.MustCompile(`(?m)^shop\s+`+regexp.QuoteMeta(in.ID)+`\s+\S+\s+true\s+-\s+-\s+`+
		regexp.QuoteMeta(s.OutboundAddr())+`\s+`+regexp.QuoteMeta(addr(s.Admin))+`\s+\S+$`).MatchString(w.Stdout) {
		t.Errorf("get services -o wide: want the instance's outbound %s and admin %s:\n%s", s.OutboundAddr(), addr(s.Admin), w)
	}

	// The sidecar learns of a destination when its app calls one.
	c := proxyClient(s.OutboundAddr())
	mustGet(t, c, "shop", "/", nil)
	pc := weft(t, 30*time.Second, nil, "proxy-config", in.ID, "-o", "json", "--server", cp.URL)
	for _, want := range []string{`"service": "shop"`, `"state": "ready"`, `"id": "` + in.ID + `"`, `"weftVersion"`, `"connected": true`} {
		if !strings.Contains(pc.Stdout, want) {
			t.Errorf("proxy-config -o json lacks %s:\n%s", want, pc)
		}
	}

	comp := weft(t, 30*time.Second, nil, "__complete", "get", "config", "--server", cp.URL, "")
	if !strings.Contains(comp.Stdout, in.ID+"\tshop") {
		t.Errorf("completion of get config: want %s:\n%s", in.ID, comp)
	}
	comp = weft(t, 30*time.Second, nil, "__complete", "stat", "--server", cp.URL, "")
	if !regexp.MustCompile(`(?m)^shop$`).MatchString(comp.Stdout) {
		t.Errorf("completion of stat: want service shop:\n%s", comp)
	}
}

// TestExamples: each example app (no Weft code) serves under weft run on
// the PORT it is given and calls another service through its sidecar by
// plain http_proxy / HTTP_PROXY: python → go → node → python.
func TestExamples(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	goApp := filepath.Join(t.TempDir(), "hello-go")
	if out, err := exec.Command("go", "build", "-o", goApp, filepath.Join(root, "examples", "go")).CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/go: %v\n%s", err, out)
	}
	apps := []struct {
		service, lang string
		cmd           []string
	}{
		{"py", "python", []string{"python3", filepath.Join(root, "examples", "python", "app.py")}},
		{"gosvc", "go", []string{goApp}},
		{"js", "node", []string{"node", filepath.Join(root, "examples", "node", "app.js")}},
	}
	cp := StartControl(t)
	var started []string
	units := map[string]*Sidecar{}
	for _, a := range apps {
		if _, err := exec.LookPath(a.cmd[0]); err != nil {
			t.Logf("%s not installed: the %s example is not run", a.cmd[0], a.lang)
			continue
		}
		// No --app-port: PORT is chosen by weft run, as the README shows.
		units[a.service] = StartRun(t, cp, RunOpts{Service: a.service, Command: a.cmd, NoWait: true, Flags: []string{"--app-port", "0"}})
		started = append(started, a.service)
	}
	for _, s := range started {
		if !poll(eventually, 50*time.Millisecond, func() bool { r, _ := cp.ReadyInstances(s); return len(r) == 1 }) {
			t.Fatalf("%s did not register ready; its output ends:\n%s", s, units[s].Proc.Tail(30))
		}
	}
	for i, from := range started {
		to := started[(i+1)%len(started)]
		c := proxyClient(units[from].OutboundAddr())
		resp, err := c.Get("http://" + from + "/call/" + to)
		if err != nil {
			t.Fatalf("%s → %s: %v", from, to, err)
		}
		var v struct {
			From   struct{ Service, Lang string }
			Answer struct{ Service, Lang string }
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || v.From.Service != from || v.Answer.Service != to {
			t.Errorf("GET http://%s/call/%s: status %d, %+v, %v; want %s's answer relayed by %s", from, to, resp.StatusCode, v, err, to, from)
		}
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// TestCheckSaysWhatToFix: with no control plane behind --server, weft
// check fails that line, says how to fix it, and exits 1.
func TestCheckSaysWhatToFix(t *testing.T) {
	t.Parallel()
	dead := "http://" + addr(freePort(t))
	r := weft(t, 30*time.Second, nil, "check", "--server", dead, "--data-dir", filepath.Join(t.TempDir(), "data"))
	if r.Code != 1 {
		t.Errorf("want exit 1:\n%s", r)
	}
	re := regexp.MustCompile(`(?m)^FAIL\s+control plane\s+` + regexp.QuoteMeta(dead) + ` does not answer: .*→ start it: weft control & \(or pass --server / set WEFT_SERVER\)$`)
	if !re.MatchString(r.Stdout) {
		t.Errorf("want a FAIL line for the control plane with its fix (%s):\n%s", re, r)
	}
	if !regexp.MustCompile(`(?m)^OK\s+loopback\s`).MatchString(r.Stdout) {
		t.Errorf("the machine's checks should still run:\n%s", r)
	}
}
