package client_test

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/kube/client"
	"github.com/weftmesh/weft/kube/kubetest"
)

// The weft binary links no k8s.io module: that is why this package exists
// (sigs.k8s.io/yaml, a small YAML-to-JSON library, is fine).
func TestNoK8sIOInWeft(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/weftmesh/weft/cmd/weft").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "k8s.io/") {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Errorf("cmd/weft links %d k8s.io packages (client-go or apimachinery cost megabytes of the image): %v", len(bad), bad)
	}
}

// On a real API server: the kubeconfig's token and CA work; create, get,
// update (with a stale version: conflict), merge patch, the status
// subresource, not found; an informer sees adds, changes and deletes.
func TestAgainstAPIServer(t *testing.T) {
	cl := kubetest.Start(t)
	cfg, err := client.FromKubeconfig(cl.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := client.Resource{Version: "v1", Resource: "namespaces"}
	cms := client.Resource{Version: "v1", Resource: "configmaps"}
	svcs := client.Resource{Version: "v1", Resource: "services"}
	if _, err := c.Create(ctx, ns, "", client.Object{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "shop"}}); err != nil {
		t.Fatal(err)
	}
	inf := client.NewInformer(c, cms, "shop", nil)
	changed := make(chan struct{}, 100)
	inf.OnChange = func() { changed <- struct{}{} }
	ictx, icancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { inf.Run(ictx); close(done) }()
	defer func() { icancel(); <-done }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatalf("informer: %s never seen", what)
			}
		}
	}
	waitFor("the first list", inf.HasSynced)

	cm := client.Object{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "a", "labels": map[string]any{"t": "1"}}, "data": map[string]any{"k": "v1"}}
	created, err := c.Create(ctx, cms, "shop", cm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, cms, "shop", cm); !client.IsConflict(err) || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("creating it twice: %v, want a conflict saying it already exists", err)
	}
	waitFor("the add", func() bool { return inf.Get("shop", "a") != nil })

	created["data"] = map[string]any{"k": "v2"}
	if _, err := c.Update(ctx, cms, "shop", created); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, cms, "shop", created); !client.IsConflict(err) {
		t.Errorf("update with a stale resourceVersion: %v, want a conflict", err)
	}
	if _, err := c.Patch(ctx, cms, "shop", "a", []byte(`{"data":{"k":"v3"}}`), ""); err != nil {
		t.Fatal(err)
	}
	waitFor("the patch", func() bool {
		o := inf.Get("shop", "a")
		return o != nil && client.NestedString(o, "data", "k") == "v3" && o.Labels()["t"] == "1"
	})
	got, err := c.Get(ctx, cms, "shop", "a")
	if err != nil || client.NestedString(got, "data", "k") != "v3" {
		t.Errorf("get: %v %v", got, err)
	}
	if _, err := c.Get(ctx, cms, "shop", "nope"); !client.IsNotFound(err) || !strings.Contains(err.Error(), `"nope" not found`) {
		t.Errorf("get of a missing object: %v, want not found naming it", err)
	}

	svc := client.Object{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "lb"},
		"spec": map[string]any{"type": "LoadBalancer", "ports": []any{map[string]any{"port": int64(80)}}}}
	if _, err := c.Create(ctx, svcs, "shop", svc); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Patch(ctx, svcs, "shop", "lb", []byte(`{"status":{"loadBalancer":{"ingress":[{"ip":"10.9.9.9"}]}}}`), "status"); err != nil {
		t.Fatal(err)
	}
	got, err = c.Get(ctx, svcs, "shop", "lb")
	if err != nil {
		t.Fatal(err)
	}
	ing := client.NestedSlice(got, "status", "loadBalancer", "ingress")
	if len(ing) != 1 || client.NestedString(ing[0].(map[string]any), "ip") != "10.9.9.9" {
		t.Errorf("status after the status patch: %v", got["status"])
	}
	if p, _ := client.NestedSlice(got, "spec", "ports")[0].(map[string]any)["port"].(int64); p != 80 {
		t.Errorf("port %#v, want int64 80", client.NestedSlice(got, "spec", "ports")[0])
	}

	cl.MustKubectl(t, nil, "-n", "shop", "delete", "configmap", "a")
	waitFor("the delete", func() bool { return inf.Get("shop", "a") == nil })

	// A pod's view: the service account's token and CA, the API server
	// from KUBERNETES_SERVICE_HOST and _PORT.
	sa := t.TempDir()
	os.WriteFile(filepath.Join(sa, "token"), []byte(cl.Token+"\n"), 0o600)
	os.WriteFile(filepath.Join(sa, "ca.crt"), cl.CA, 0o600)
	u, _ := url.Parse(cl.URL)
	t.Setenv("KUBERNETES_SERVICE_HOST", u.Hostname())
	t.Setenv("KUBERNETES_SERVICE_PORT", u.Port())
	icfg, err := client.InClusterFrom(sa)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := client.New(icfg)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := ic.List(ctx, svcs, "shop"); err != nil || len(l.Items) != 1 || l.Items[0].Name() != "lb" {
		t.Errorf("in-cluster list of services: %v, %v; want lb", l, err)
	}
}
