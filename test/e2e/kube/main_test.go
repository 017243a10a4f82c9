// Package kube tests Weft on a real Kubernetes API server (kube/kubetest:
// the kube-apiserver built from the pinned k8s.io/kubernetes module, over
// Debian's etcd). There is no kubelet: the tests create Pods, Services,
// EndpointSlices and their status themselves, and run the control plane,
// sidecars and backends as processes on loopback.
package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/kube/kubetest"
	"github.com/weftmesh/weft/sidecar"
	"github.com/weftmesh/weft/test/e2e/harness"
)

var bins harness.Binaries

// The API server refuses loopback addresses in EndpointSlices, and the
// tests may send traffic only to addresses of their own. So TestMain runs
// the tests in a network namespace of their own (unshare --net), where the
// pod addresses below are on the loopback device. The binaries are built
// first, outside, where the module proxy is reachable.
const envNetns = "WEFT_KUBE_E2E_NETNS"

// Pod addresses, on lo inside the test's network namespace (198.18.0.0/15
// is the benchmarking range: nothing outside uses it).
var podIPs = []string{"198.18.0.1", "198.18.0.2"}

// inNetns is true once the tests run in their own network namespace.
var inNetns bool

func TestMain(m *testing.M) {
	if os.Getenv(envNetns) == "" {
		if code, ok := reexecInNetns(); ok {
			os.Exit(code)
		}
	} else {
		if err := podAddresses(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/kube:", err)
			os.Exit(1)
		}
		inNetns = true
	}
	os.Exit(harness.Main(m, "./test/e2e/testapp", &bins))
}

// reexecInNetns builds what the tests need, then runs this test binary
// again under unshare --net; ok is false when no namespace can be made
// (not root), and the tests then run here, skipping what needs one.
func reexecInNetns() (code int, ok bool) {
	if exec.Command("unshare", "--net", "true").Run() != nil {
		return 0, false
	}
	tmp, err := os.MkdirTemp("", "weft-kube-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/kube:", err)
		return 1, true
	}
	defer os.RemoveAll(tmp)
	env := append(os.Environ(), envNetns+"=1")
	if os.Getenv("WEFT_E2E_BIN") == "" {
		weft := filepath.Join(tmp, "weft")
		b := exec.Command("go", "build", "-o", weft, "./cmd/weft")
		b.Dir = repo(nil)
		b.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := b.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e/kube: go build ./cmd/weft: %v\n%s", err, out)
			return 1, true
		}
		env = append(env, "WEFT_E2E_BIN="+weft)
	}
	if os.Getenv("WEFT_KUBE_APISERVER") == "" {
		if bin, err := kubetest.APIServerBinary(); err == nil {
			env = append(env, "WEFT_KUBE_APISERVER="+bin)
		}
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--", os.Args[0]}, os.Args[1:]...)...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), true
		}
		fmt.Fprintln(os.Stderr, "e2e/kube: unshare:", err)
		return 1, true
	}
	return 0, true
}

// podAddresses brings up lo in the new namespace with the pod addresses.
func podAddresses() error {
	cmds := [][]string{{"ip", "link", "set", "lo", "up"}}
	for _, ip := range podIPs {
		cmds = append(cmds, []string{"ip", "addr", "add", ip + "/32", "dev", "lo"})
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// eventually bounds waits on a loaded 2-core machine.
const eventually = 30 * time.Second

// repo is the module root, for the committed manifests.
func repo(testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// installCRDs applies deploy/kubernetes/crds and waits until each is
// established.
func installCRDs(t testing.TB, c *kubetest.Cluster) {
	t.Helper()
	dir := filepath.Join(repo(t), "deploy", "kubernetes", "crds")
	c.MustKubectl(t, nil, "apply", "-f", dir)
	c.MustKubectl(t, nil, "wait", "--for=condition=Established", "--timeout=60s", "-f", dir)
}

// startControl starts weft control watching the cluster.
func startControl(t testing.TB, c *kubetest.Cluster, flags ...string) *harness.Control {
	t.Helper()
	return harness.StartControl(t, bins.Weft, eventually, append([]string{"--kubeconfig", c.Kubeconfig}, flags...)...)
}

// client is a pure client sidecar: the way into the mesh.
type client struct {
	proc     *harness.Proc
	outbound string
	admin    string
	http     *http.Client
}

func startClient(t testing.TB, cp *harness.Control) *client {
	t.Helper()
	c := &client{outbound: harness.FreeAddr(t), admin: harness.FreeAddr(t)}
	c.proc = harness.Start(t, "sidecar-client", bins.Weft, "sidecar", "--control", cp.GRPCAddr,
		"--service", "client", "--outbound", c.outbound, "--admin", c.admin)
	harness.WaitUp(t, c.proc, "http://"+c.admin+"/ready", eventually)
	c.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: c.outbound}), MaxIdleConnsPerHost: 16}}
	return c
}

// reply is what the testapp answers.
type reply struct {
	Name string `json:"name"`
}

// get calls http://service/ through the client sidecar and returns the
// answering instance's name, or an error saying what came back.
func (c *client) get(service string) (string, error) {
	resp, err := c.http.Get("http://" + service + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var r reply
	if err := json.Unmarshal(b, &r); err != nil || r.Name == "" {
		return "", fmt.Errorf("not the testapp's reply: %q", b)
	}
	return r.Name, nil
}

// destination is the client sidecar's view of one service (admin /config).
func (c *client) destination(service string) (sidecar.DestinationView, bool) {
	_, body, err := harness.Get("http://" + c.admin + "/config")
	if err != nil {
		return sidecar.DestinationView{}, false
	}
	var v sidecar.ConfigView
	if json.Unmarshal([]byte(body), &v) != nil {
		return sidecar.DestinationView{}, false
	}
	for _, d := range v.Destinations {
		if d.Service == service {
			return d, true
		}
	}
	return sidecar.DestinationView{}, false
}

// backend is an HTTP server in the test process standing for an unmeshed
// pod: it answers {"name": NAME}.
type backend struct {
	name string
	addr string
	srv  *http.Server
}

func startBackend(t testing.TB, name string, ln net.Listener) *backend {
	t.Helper()
	b := &backend{name: name, addr: ln.Addr().String()}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"name":%q}`, name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// twoBackends listens on both pod addresses on one port: two pods behind
// one EndpointSlice port.
func twoBackends(t testing.TB) (a, b *backend, port int) {
	t.Helper()
	if !inNetns {
		t.Skip("needs a network namespace of its own (unshare --net, as root) for pod addresses the API server accepts")
	}
	for range 20 {
		l1, err := net.Listen("tcp", net.JoinHostPort(podIPs[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port = l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort(podIPs[1], strconv.Itoa(port)))
		if err != nil {
			l1.Close()
			continue
		}
		return startBackend(t, "orders-a", l1), startBackend(t, "orders-b", l2), port
	}
	t.Fatalf("no port free on both %v", podIPs)
	return nil, nil, 0
}
