package kube

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/kube/inject"
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
			VolumeMounts []struct {
				Name      string `json:"name"`
				MountPath string `json:"mountPath"`
			} `json:"volumeMounts"`
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
		Volumes []struct {
			Name      string `json:"name"`
			Projected struct {
				Sources []struct {
					ServiceAccountToken *struct {
						Audience          string `json:"audience"`
						ExpirationSeconds int64  `json:"expirationSeconds"`
						Path              string `json:"path"`
					} `json:"serviceAccountToken"`
				} `json:"sources"`
			} `json:"projected"`
		} `json:"volumes"`
	} `json:"spec"`
}

// podYAML is a pod running as ServiceAccount sa.
func podYAML(ns, name, sa, labels, annotations string) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {%s}, annotations: {%s}}
spec:
  serviceAccountName: %s
  containers: [{name: app, image: shop:1, ports: [{containerPort: 8080}]}]
`, name, ns, labels, annotations, sa)
}

// createPod creates a pod whose ServiceAccount is named for its service
// (the app label's value) and returns it as the API server stored it.
func createPod(t *testing.T, c *kubetest.Cluster, ns, name, labels, annotations string) podJSON {
	t.Helper()
	_, app, _ := strings.Cut(strings.Split(labels, ",")[0], "app: ")
	out := c.MustKubectl(t, podYAML(ns, name, app, labels, annotations), "create", "-o", "json", "-f", "-")
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

	if len(sc.VolumeMounts) != 1 || sc.VolumeMounts[0].MountPath != inject.TokenDir || sc.VolumeMounts[0].Name != inject.TokenVolume {
		t.Errorf("sidecar volume mounts %+v, want the projected token at %s", sc.VolumeMounts, inject.TokenDir)
	}
	var projected bool
	for _, v := range p.Spec.Volumes {
		for _, src := range v.Projected.Sources {
			if v.Name == inject.TokenVolume && src.ServiceAccountToken != nil {
				tok := src.ServiceAccountToken
				projected = tok.Audience == "weft" && tok.ExpirationSeconds == 3600 && tok.Path == "token"
			}
		}
	}
	if !projected {
		t.Errorf("pod volumes %+v lack a projected ServiceAccount token for audience weft, 3600 s", p.Spec.Volumes)
	}
	for _, e := range sc.Env {
		if e.Name == "WEFT_TOKEN" {
			t.Errorf("a literal token is in the pod spec: %+v", e)
		}
	}

	// A pod whose ServiceAccount is not named for its service is admitted
	// without the sidecar (which could never get its certificate), with a
	// warning saying why.
	out, err := c.Kubectl(podYAML("meshed", "shop-sa", "other", "app: shop", ""), "create", "-o", "json", "-f", "-")
	if err != nil || !strings.Contains(out, `its ServiceAccount is "other"`) || strings.Contains(out, "weft-sidecar") {
		t.Errorf("a pod of service shop running as ServiceAccount other: %v\n%s\nwant it admitted uninjected with a warning naming the ServiceAccount", err, out)
	}

	runInjected(t, c, p, cp, cl)

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
func runInjected(t *testing.T, c *kubetest.Cluster, p podJSON, cp *harness.Control, cl *client) {
	if !inNetns {
		t.Log("not running the injected sidecar: no network namespace of its own for its fixed ports")
		return
	}
	// The kubelet would mount the projected token at the path the args
	// name; here it is a file of the test's.
	tokenFile := filepath.Join(t.TempDir(), "token")
	var args []string
	sc := p.Spec.InitContainers[0].Args
	for i := 0; i < len(sc); i++ {
		a := strings.NewReplacer("$(WEFT_POD_IP)", podIPs[0], "$(WEFT_POD_NAME)", "shop-1", "$(WEFT_POD_NAMESPACE)", "meshed").Replace(sc[i])
		if (a == "--control" || a == "--token-file") && i+1 < len(sc) {
			if a == "--token-file" && sc[i+1] != inject.TokenFile {
				t.Errorf("--token-file %s, want the projected token %s", sc[i+1], inject.TokenFile)
			}
			args = append(args, a, map[string]string{"--control": cp.GRPCAddr, "--token-file": tokenFile}[a])
			i++
			continue
		}
		args = append(args, a)
	}
	if !slices.Contains(args, "--token-file") || !slices.Contains(args, "meshed") {
		t.Fatalf("the injected sidecar's args %q lack --token-file, or --namespace from the pod", sc)
	}
	// The kubelet would ask for the token with the TokenRequest API, for
	// the pod's ServiceAccount and the volume's audience: so does the test
	// (kubectl create token).
	c.MustKubectl(t, nil, "create", "serviceaccount", "-n", "meshed", "shop")
	c.MustKubectl(t, nil, "create", "serviceaccount", "-n", "meshed", "other")
	saToken := func(sa, audience string) string {
		return strings.TrimSpace(c.MustKubectl(t, nil, "create", "token", "-n", "meshed", sa, "--audience", audience, "--duration", "1h"))
	}
	var env []string
	for _, e := range p.Spec.InitContainers[0].Env {
		if e.Value != "" {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	env = append(env, "WEFT_TOKEN=") // none from the test's environment

	// Refused: a token of ServiceAccount other claiming shop, and shop's
	// token for another audience.
	for _, bad := range []struct{ sa, audience, why string }{
		{"other", "weft", "the Kubernetes token is for ServiceAccount meshed/other, which may register only service"},
		{"shop", "https://kubernetes.default.svc", "kubernetes token refused by the API server"},
	} {
		if err := os.WriteFile(tokenFile, []byte(saToken(bad.sa, bad.audience)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		sidecar := harness.StartEnv(t, "sidecar-shop-1-"+bad.sa, bins.Weft, env, args...)
		if !harness.Poll(eventually, func() bool { return strings.Contains(sidecar.ReadOutput(), bad.why) }) {
			t.Errorf("a sidecar with a token of ServiceAccount %s, audience %s: no refusal saying %q:\n%s", bad.sa, bad.audience, bad.why, sidecar.Tail(20))
		}
		if _, err := cl.get("shop"); err == nil {
			t.Errorf("shop is reachable through a sidecar with a token of ServiceAccount %s, audience %s", bad.sa, bad.audience)
		}
		sidecar.Stop(10 * time.Second)
	}

	if err := os.WriteFile(tokenFile, []byte(saToken("shop", "weft")+"\n"), 0o600); err != nil {
		t.Fatal(err)
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
	var id struct {
		SPIFFEID string `json:"spiffeId"`
	}
	if code, body, _ := harness.Get("http://" + podIPs[0] + ":15020/identity"); code != 200 || json.Unmarshal([]byte(body), &id) != nil || id.SPIFFEID != "spiffe://weft.local/ns/meshed/sa/shop" {
		t.Errorf("the injected sidecar's identity %+v (%d %s), want spiffe://weft.local/ns/meshed/sa/shop", id, code, body)
	}
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
