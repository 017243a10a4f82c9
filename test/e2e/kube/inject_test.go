package kube

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/kube/kubetest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// injectFlags turn on the control plane's injector on a free port, which
// the API server reaches by URL.
func injectFlags(t testing.TB) []string {
	addr := harness.FreeAddr(t)
	return []string{"--inject", "--webhook-addr", addr, "--webhook-url", "https://" + addr,
		"--sidecar-image", "weft:e2e", "--sidecar-control", "weft-control.weft-system.svc:15010"}
}

type podJSON struct {
	Metadata struct {
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		InitContainers []struct {
			Name          string   `json:"name"`
			Image         string   `json:"image"`
			RestartPolicy string   `json:"restartPolicy"`
			Args          []string `json:"args"`
			Env           []struct {
				Name  string `json:"name"`
				Value string `json:"value"`
			} `json:"env"`
			ReadinessProbe map[string]any `json:"readinessProbe"`
			StartupProbe   map[string]any `json:"startupProbe"`
			Resources      struct {
				Requests map[string]string `json:"requests"`
				Limits   map[string]string `json:"limits"`
			} `json:"resources"`
		} `json:"initContainers"`
		Containers []struct {
			Env []struct{ Name, Value string } `json:"env"`
		} `json:"containers"`
	} `json:"spec"`
}

// createPod creates a pod and returns it as the API server stored it.
func createPod(t *testing.T, c *kubetest.Cluster, ns, name, labels, annotations string) podJSON {
	t.Helper()
	y := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {%s}, annotations: {%s}}
spec:
  containers: [{name: app, image: shop:1, ports: [{containerPort: 8080}]}]
`, name, ns, labels, annotations)
	out := c.MustKubectl(t, []byte(y), "create", "-o", "json", "-f", "-")
	var p podJSON
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("kubectl create -o json: %v: %s", err, out)
	}
	return p
}

func injected(p podJSON) bool {
	return len(p.Spec.InitContainers) > 0 && p.Spec.InitContainers[0].Name == "weft-sidecar"
}

// A pod created in a namespace labelled weft.dev/inject=enabled comes back
// from the API server with the native sidecar; one in another namespace
// does not, unless the pod itself is labelled; a pod may opt out.
func testInject(t *testing.T, c *kubetest.Cluster, cp *harness.Control, cl *client) {
	c.MustKubectl(t, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: meshed, labels: {weft.dev/inject: enabled}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n"), "apply", "-f", "-")
	// The control plane registers its webhook at start; wait until the
	// API server calls it.
	n := 0
	if !harness.Poll(eventually, func() bool {
		n++
		return injected(createPod(t, c, "meshed", fmt.Sprintf("probe-%d", n), "app: probe", ""))
	}) {
		out, _ := c.Kubectl(nil, "get", "mutatingwebhookconfigurations", "-o", "yaml")
		t.Fatalf("no pod in the labelled namespace was injected after %d tries; webhook configurations:\n%s", n, out)
	}

	p := createPod(t, c, "meshed", "shop-1", "app: shop, version: v3",
		"weft.dev/proxy-cpu-request: 50m, weft.dev/proxy-memory-limit: 128Mi")
	if !injected(p) {
		t.Fatalf("pod in the labelled namespace not injected: %+v", p.Spec)
	}
	sc := p.Spec.InitContainers[0]
	if sc.RestartPolicy != "Always" {
		t.Errorf("sidecar restartPolicy %q, want Always (a native sidecar)", sc.RestartPolicy)
	}
	if sc.Image != "weft:e2e" {
		t.Errorf("sidecar image %q, want weft:e2e", sc.Image)
	}
	args := strings.Join(sc.Args, " ")
	for _, want := range []string{"sidecar", "--service shop", "--app-port 8080", "--control weft-control.weft-system.svc:15010", "--version v3"} {
		if !strings.Contains(args, want) {
			t.Errorf("sidecar args %q lack %q", args, want)
		}
	}
	if sc.ReadinessProbe == nil || fmt.Sprint(sc.ReadinessProbe["httpGet"].(map[string]any)["path"]) != "/ready" {
		t.Errorf("sidecar readiness probe %v, want GET /ready (which follows the app)", sc.ReadinessProbe)
	}
	if sc.StartupProbe == nil {
		t.Error("sidecar has no startup probe: the app could start before the proxy listens")
	}
	if sc.Resources.Requests["cpu"] != "50m" || sc.Resources.Limits["memory"] != "128Mi" {
		t.Errorf("sidecar resources %+v, want cpu request 50m and memory limit 128Mi from the annotations", sc.Resources)
	}
	if p.Metadata.Annotations["weft.dev/injected"] != "true" {
		t.Errorf("annotations %v lack weft.dev/injected=true", p.Metadata.Annotations)
	}
	proxied := false
	for _, e := range p.Spec.Containers[0].Env {
		proxied = proxied || (e.Name == "HTTP_PROXY" && e.Value == "http://127.0.0.1:15001")
	}
	if !proxied {
		t.Errorf("the app container has no HTTP_PROXY to its sidecar: %+v", p.Spec.Containers[0].Env)
	}

	runInjected(t, p, cp, cl)

	if p := createPod(t, c, "plain", "shop-2", "app: shop", ""); injected(p) {
		t.Error("a pod in an unlabelled namespace was injected")
	}
	if p := createPod(t, c, "plain", "shop-3", "app: shop, weft.dev/inject: enabled", ""); !injected(p) {
		t.Error("a pod labelled weft.dev/inject=enabled in an unlabelled namespace was not injected")
	}
	if p := createPod(t, c, "meshed", "shop-4", "app: shop, weft.dev/inject: disabled", ""); injected(p) {
		t.Error("a pod labelled weft.dev/inject=disabled was injected")
	}
}

// runInjected runs the injected sidecar container's command as a process,
// as the kubelet would (the pod's address is the first pod IP, the
// control plane the test's), beside an app on the pod's port 8080: the
// mesh reaches the app through it, and its readiness follows the app.
// Fixed ports are safe: the test has its own network namespace.
func runInjected(t *testing.T, p podJSON, cp *harness.Control, cl *client) {
	if !inNetns {
		t.Log("not running the injected sidecar: no network namespace of its own for its fixed ports")
		return
	}
	var args []string
	sc := p.Spec.InitContainers[0].Args
	for i := 0; i < len(sc); i++ {
		a := strings.NewReplacer("$(WEFT_POD_IP)", podIPs[0], "$(WEFT_POD_NAME)", "shop-1").Replace(sc[i])
		if a == "--control" && i+1 < len(sc) {
			args = append(args, a, cp.GRPCAddr)
			i++
			continue
		}
		args = append(args, a)
	}
	// The kubelet would set the env the injector wrote with literal
	// values, the join token among them.
	var env []string
	for _, e := range p.Spec.InitContainers[0].Env {
		if e.Value != "" {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "WEFT_TOKEN=") }) {
		t.Errorf("the injected sidecar has no WEFT_TOKEN to prove its service with: %v", p.Spec.InitContainers[0].Env)
	}
	sidecar := harness.StartEnv(t, "sidecar-shop-1", bins.Weft, env, args...)
	ready := "http://" + podIPs[0] + ":15020/ready"
	harness.WaitUp(t, sidecar, "http://"+podIPs[0]+":15020/healthz", eventually)
	if code, body, _ := harness.Get(ready); code == 200 {
		t.Errorf("the sidecar is ready before its app listens: %s", body)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	app := startBackend(t, "shop-1", ln)
	harness.WaitUp(t, sidecar, ready, eventually)
	var name string
	if !harness.Poll(eventually, func() bool { name, err = cl.get("shop"); return err == nil }) {
		t.Fatalf("the client cannot reach shop through the injected sidecar: %v", err)
	}
	if name != "shop-1" {
		t.Errorf("shop answered as %q, want shop-1", name)
	}
	app.srv.Close()
	if !harness.Poll(eventually, func() bool { code, _, _ := harness.Get(ready); return code == 503 }) {
		t.Error("the sidecar stays ready after its app stopped")
	}
}
