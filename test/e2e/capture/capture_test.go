//go:build linux

// Package capture tests transparent capture end to end: in a network
// namespace the test creates (loopback only), a control plane, service
// orders (testapp behind a sidecar) and a client sidecar with --capture,
// all real processes. An app with no proxy settings — curl, run as
// another uid, with `orders` in the namespace's /etc/hosts — calls
// http://orders/ and is meshed; a call to a host that is not a service
// goes to its original destination; the sidecar's own uid is not
// captured; the rules go away with the sidecar. Skipped, saying why,
// when not root or network namespaces cannot be made.
package capture

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

var bins harness.Binaries

func TestMain(m *testing.M) { os.Exit(harness.Main(m, "./test/e2e/testapp", &bins)) }

// appUID is the uid the "app" runs as; the sidecars run as root (0),
// which the capture rules exclude.
const appUID = "65534"

// netns is a network namespace of the test's own, with its /etc/hosts
// (ip netns exec bind-mounts /etc/netns/NAME/hosts over /etc/hosts).
type netns struct {
	t    *testing.T
	name string
}

func newNetns(t *testing.T, hosts string) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: creating a network namespace and nftables rules needs root")
	}
	for _, bin := range []string{"ip", "curl", "setpriv"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipped: %s not installed (scripts/deps.sh installs it)", bin)
		}
	}
	n := &netns{t: t, name: fmt.Sprintf("weft-e2e-%d", os.Getpid())}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Skipf("skipped: no network namespaces here (ip netns add: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	etc := filepath.Join("/etc/netns", n.name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", n.name).Run()
		_ = os.RemoveAll(etc)
	})
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *netns) cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
}

func (n *netns) must(args ...string) string {
	n.t.Helper()
	out, err := n.cmd(args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("in %s: %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start runs bin in the namespace as a harness process (killed at cleanup).
func (n *netns) start(name, bin string, args ...string) *harness.Proc {
	return harness.Start(n.t, name, "ip", append([]string{"netns", "exec", n.name, bin}, args...)...)
}

// curlAs runs curl in the namespace as uid, with an empty environment (no
// proxy settings), and returns its output and exit code.
func (n *netns) curlAs(uid string, args ...string) (string, int) {
	argv := append([]string{"setpriv", "--reuid=" + uid, "--regid=" + uid, "--clear-groups", "env", "-i", "curl", "-sS", "-m", "10"}, args...)
	out, err := n.cmd(argv...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("curl: %v", err)
	}
	return string(out), code
}

// metric is the value of the series of name whose labels include every
// label in want, from a sidecar's /metrics inside the namespace.
func (n *netns) metric(admin, name string, want ...string) float64 {
	n.t.Helper()
	out, _ := n.curlAs("0", "http://"+admin+"/metrics")
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			return v
		}
	}
	return 0
}

func (n *netns) tables() string {
	if _, err := exec.LookPath("nft"); err != nil {
		return "(nft not installed)"
	}
	return n.must("nft", "list", "tables")
}

func TestCaptureInNetns(t *testing.T) {
	// orders and plain.example are addresses on the namespace's loopback
	// device outside 127.0.0.0/8 (which capture leaves alone): orders'
	// port 80 has no listener — only the mesh can answer a call to it;
	// plain.example:80 is the control plane's API, a server that is not a
	// service of the mesh.
	n := newNetns(t, "127.0.0.1 localhost\n10.200.0.1 orders\n10.200.0.2 plain.example\n")
	n.must("ip", "link", "set", "lo", "up")
	n.must("ip", "addr", "add", "10.200.0.1/32", "dev", "lo")
	n.must("ip", "addr", "add", "10.200.0.2/32", "dev", "lo")

	// Fixed ports: the namespace is the test's own, nothing else binds in it.
	data := t.TempDir()
	// Its API stands in for a plain HTTP server outside the mesh, so it
	// opts out of TLS and tokens (on by default off loopback).
	ctl := n.start("control", bins.Weft, "control", "--grpc-addr", "127.0.0.1:15010", "--http-addr", "10.200.0.2:80",
		"--data-dir", data, "--broker", "off", "--api-tls", "off", "--api-auth=false")
	ready := func(p *harness.Proc, u string) {
		t.Helper()
		if !harness.Poll(30*time.Second, func() bool {
			out, code := n.curlAs("0", "-o", "/dev/null", "-w", "%{http_code}", u)
			return code == 0 && out == "200" || p.Exited()
		}) || p.Exited() {
			p.Dump()
			t.Fatalf("%s not up at %s", p.Name, u)
		}
	}
	ready(ctl, "http://10.200.0.2:80/healthz")
	orders := n.start("orders-sidecar", bins.Weft, "sidecar", "--service", "orders", "--app-port", "8080", "--control", "127.0.0.1:15010",
		"--inbound", "127.0.0.1:15106", "--outbound", "", "--admin", "127.0.0.1:15120")
	n.start("orders-app", bins.App, "--port", "8080", "--name", "orders-a")
	ready(orders, "http://127.0.0.1:15120/ready")
	web := n.start("web-sidecar", bins.Weft, "sidecar", "--service", "web", "--control", "127.0.0.1:15010", "--outbound", "",
		"--admin", "127.0.0.1:15020", "--capture", "--capture-addr", "127.0.0.1:15002")
	ready(web, "http://127.0.0.1:15020/metrics")
	if got := n.tables(); !strings.Contains(got, "table ip weft") && !strings.Contains(got, "not installed") {
		t.Fatalf("after the sidecar started with --capture, no table ip weft in the namespace: %q", got)
	}

	// The app: no HTTP_PROXY, no environment at all, another uid.
	out, code := n.curlAs(appUID, "-i", "http://orders/hello")
	if code != 0 || !strings.Contains(out, "200 OK") || !strings.Contains(out, `"instance":"orders-a"`) || !strings.Contains(out, `"host":"orders"`) {
		web.Dump()
		t.Fatalf("app calling http://orders/hello with no proxy settings: curl exit %d:\n%s", code, out)
	}
	// Meshed: the client sidecar recorded the call to orders, and orders'
	// sidecar received it from web's — sidecar to sidecar.
	if v := n.metric("127.0.0.1:15020", "weft_requests_total", `destination_service="orders"`, `reporter="client"`, `response_code="200"`, `source_service="web"`); v != 1 {
		t.Errorf("web sidecar: weft_requests_total client web→orders 200 = %v, want 1", v)
	}
	if v := n.metric("127.0.0.1:15120", "weft_requests_total", `reporter="server"`, `source_service="web"`, `response_code="200"`); v != 1 {
		t.Errorf("orders sidecar: weft_requests_total server from web 200 = %v, want 1", v)
	}

	// HTTP/2 with prior knowledge (h2c, what gRPC speaks): meshed by its
	// :authority.
	if out, code := n.curlAs(appUID, "--http2-prior-knowledge", "http://orders/h2"); code != 0 || !strings.Contains(out, `"path":"/h2"`) {
		t.Errorf("app calling http://orders/h2 over h2c: curl exit %d:\n%s", code, out)
	}

	// A host that is no service: passed through to the original
	// destination (by the sidecar, whose own connection is not captured
	// again — else this would loop).
	out, code = n.curlAs(appUID, "http://plain.example/api/v1/services")
	if code != 0 || !regexp.MustCompile(`"name":\s*"orders"`).MatchString(out) {
		t.Errorf("app calling http://plain.example/ (not a service): curl exit %d, want the control plane's answer:\n%s", code, out)
	}
	if m, p := n.metric("127.0.0.1:15020", "weft_capture_connections_total", `route="mesh"`),
		n.metric("127.0.0.1:15020", "weft_capture_connections_total", `route="passthrough"`); m != 2 || p != 1 {
		t.Errorf("weft_capture_connections_total: mesh %v, passthrough %v; want 2 (HTTP/1.1, h2c) and 1", m, p)
	}

	// The sidecar's uid (root here) is not captured: its call to orders:80
	// reaches the address itself, where nothing listens.
	if out, code := n.curlAs("0", "http://orders/"); code != 7 {
		t.Errorf("root (the excluded uid) calling http://orders/: curl exit %d, want 7 (connection refused, not captured):\n%s", code, out)
	}

	// The sidecar removes its rules when it stops.
	web.Stop(15 * time.Second)
	if code := web.ExitCode(); code != 0 {
		web.Dump()
		t.Errorf("sidecar with --capture exited %d on SIGTERM, want 0", code)
	}
	if got := n.tables(); strings.Contains(got, "table ip weft") {
		t.Errorf("after the sidecar stopped, the namespace still has: %s", got)
	}

	// The init-step variant: `weft capture` installs and exits, a sidecar
	// with --capture-no-rules only listens.
	if out := n.must(bins.Weft, "capture", "--port", "15003", "--exclude-uid", "0"); !strings.Contains(out, "127.0.0.1:15003") {
		t.Errorf("weft capture: %s", out)
	}
	web2 := n.start("web-sidecar-2", bins.Weft, "sidecar", "--service", "web", "--control", "127.0.0.1:15010", "--outbound", "",
		"--admin", "127.0.0.1:15021", "--capture", "--capture-no-rules", "--capture-addr", "127.0.0.1:15003")
	ready(web2, "http://127.0.0.1:15021/metrics")
	if out, code := n.curlAs(appUID, "http://orders/again"); code != 0 || !strings.Contains(out, `"path":"/again"`) {
		t.Errorf("with rules from `weft capture`: curl exit %d:\n%s", code, out)
	}
	web2.Stop(15 * time.Second)
	if got := n.tables(); !strings.Contains(got, "table ip weft") && !strings.Contains(got, "not installed") {
		t.Errorf("a --capture-no-rules sidecar removed rules it did not install: %q", got)
	}
	n.must(bins.Weft, "capture", "--remove")
	if got := n.tables(); strings.Contains(got, "table ip weft") {
		t.Errorf("after weft capture --remove: %s", got)
	}
}

// TestCaptureBadInput: every wrong use of the capture flags is refused
// with an error naming the flag and saying why (no root needed).
func TestCaptureBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sidecar", "--service", "web", "--capture", "--capture-addr", "10.0.0.1:15002", "--admin", "", "--outbound", ""},
			`--capture-addr "10.0.0.1:15002": want 127.0.0.1:PORT`},
		{[]string{"run", "--service", "web", "--capture", "--", "true"}, "--capture does not work with weft run"},
		{[]string{"capture"}, "--exclude-uid is required"},
		{[]string{"capture", "--port", "0", "--exclude-uid", "0"}, "--port 0: not a port number"},
	} {
		out, err := exec.Command(bins.Weft, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("weft %s: err %v, want an error with %q, got:\n%s", strings.Join(tc.args, " "), err, tc.want, out)
		}
	}
}
