// Package helm tests the Helm chart in ./weft with the Helm Go library
// (helm.sh/helm/v3): it lints the chart, renders it as `helm template`
// does, and applies the output to a real API server (kube/kubetest). It is
// a package of its own so that only this test binary links Helm.
package helm

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/kube/inject"
	"github.com/weftmesh/weft/kube/kubetest"
)

const (
	chartDir  = "weft"
	namespace = "weft-system"
)

func load(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// render is `helm template weft deploy/helm/weft -n weft-system` with vals:
// the templates' output, in file order, as one multi-document manifest.
func render(t *testing.T, c *chart.Chart, vals map[string]any) string {
	t.Helper()
	caps := chartutil.DefaultCapabilities.Copy()
	kv, err := chartutil.ParseKubeVersion("v1.37.2")
	if err != nil {
		t.Fatal(err)
	}
	caps.KubeVersion = *kv
	rv, err := chartutil.ToRenderValues(c, vals, chartutil.ReleaseOptions{Name: "weft", Namespace: namespace, IsInstall: true, Revision: 1}, caps)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(c, rv)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		if strings.HasSuffix(n, ".yaml") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		if strings.TrimSpace(files[n]) == "" {
			continue
		}
		b.WriteString("---\n# Source: " + n + "\n" + files[n] + "\n")
	}
	return b.String()
}

// docs decodes a manifest's documents by "Kind/name".
func docs(t *testing.T, manifest string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, d := range strings.Split(manifest, "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, d)
		}
		if m == nil {
			continue
		}
		name, _ := m["metadata"].(map[string]any)["name"].(string)
		out[m["kind"].(string)+"/"+name] = m
	}
	return out
}

func controlArgs(t *testing.T, d map[string]map[string]any) (string, float64) {
	t.Helper()
	dep, ok := d["Deployment/weft"]
	if !ok {
		t.Fatalf("no Deployment/weft in %v", keys(d))
	}
	spec := dep["spec"].(map[string]any)
	c := spec["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	return strings.Join(args, " "), spec["replicas"].(float64)
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestLint(t *testing.T) {
	l := lint.All(chartDir, nil, namespace, false)
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("helm lint: %s", m)
		} else {
			t.Logf("helm lint: %s", m)
		}
	}
}

// The chart's values change what it renders: replicas, and the injector
// with its certificate secret on or off.
func TestValues(t *testing.T) {
	c := load(t)
	d := docs(t, render(t, c, nil))
	args, replicas := controlArgs(t, d)
	for _, want := range []string{"control --kubernetes", "--inject", "--webhook-service=weft-system/weft", "--sidecar-image=weft:0.1.0", "--sidecar-control=weft.weft-system.svc:15010", "--webhook-cert-dir=/etc/weft/webhook"} {
		if !strings.Contains(args, want) {
			t.Errorf("default args %q lack %q", args, want)
		}
	}
	if replicas != 1 {
		t.Errorf("default replicas %v, want 1", replicas)
	}
	for _, want := range []string{"Secret/weft-webhook-tls", "MutatingWebhookConfiguration/weft-injector", "Service/weft", "ServiceAccount/weft", "ClusterRole/weft", "ClusterRoleBinding/weft"} {
		if _, ok := d[want]; !ok {
			t.Errorf("default render lacks %s (has %v)", want, keys(d))
		}
	}

	// The control plane reviews sidecars' ServiceAccount tokens.
	if !grants(d["ClusterRole/weft"], "authentication.k8s.io", "tokenreviews", "create") {
		t.Errorf("ClusterRole/weft does not grant create on tokenreviews.authentication.k8s.io:\n%s", fmtAny(d["ClusterRole/weft"]))
	}

	// The chart's webhooks select what the control plane's registration
	// selects (kube/inject keeps it up to date and must not change it).
	reg := inject.Registration{ServiceNamespace: namespace, ServiceName: "weft", ServicePort: 443, FailurePolicy: "Fail"}.Object()
	want, _ := json.Marshal(selectors(reg["webhooks"].([]any)))
	got, _ := json.Marshal(selectors(d["MutatingWebhookConfiguration/weft-injector"]["webhooks"].([]any)))
	if string(got) != string(want) {
		t.Errorf("the chart's webhooks\n%s\ndiffer from kube/inject's\n%s", got, want)
	}

	d = docs(t, render(t, c, map[string]any{
		"control":  map[string]any{"replicas": 2, "watchNamespace": "shop"},
		"injector": map[string]any{"enabled": false},
		"image":    map[string]any{"tag": "9.9.9"},
	}))
	args, replicas = controlArgs(t, d)
	if replicas != 2 || strings.Contains(args, "--inject") || !strings.Contains(args, "--kube-namespace=shop") {
		t.Errorf("with replicas 2, watchNamespace shop, no injector: replicas %v, args %q", replicas, args)
	}
	for _, k := range []string{"Secret/weft-webhook-tls", "MutatingWebhookConfiguration/weft-injector"} {
		if _, ok := d[k]; ok {
			t.Errorf("%s is rendered with the injector off", k)
		}
	}
	if !strings.Contains(fmtAny(d["Deployment/weft"]), "weft:9.9.9") {
		t.Error("image.tag 9.9.9 is not the control plane's image")
	}
}

// grants reports whether a ClusterRole has a rule allowing verb on
// resource of group.
func grants(role map[string]any, group, resource, verb string) bool {
	rules, _ := role["rules"].([]any)
	for _, r := range rules {
		m, _ := r.(map[string]any)
		has := func(k, v string) bool {
			l, _ := m[k].([]any)
			for _, x := range l {
				if x == v || x == "*" {
					return true
				}
			}
			return false
		}
		if has("apiGroups", group) && has("resources", resource) && has("verbs", verb) {
			return true
		}
	}
	return false
}

// selectors is what decides which pods a webhook sees, JSON-normalised.
func selectors(hooks []any) []any {
	var out []any
	for _, h := range hooks {
		m := h.(map[string]any)
		b, _ := json.Marshal([]any{m["name"], m["rules"], m["namespaceSelector"], m["objectSelector"], m["failurePolicy"], m["reinvocationPolicy"], m["clientConfig"].(map[string]any)["service"]})
		var v any
		_ = json.Unmarshal(b, &v)
		out = append(out, v)
	}
	return out
}

func fmtAny(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

// `helm template` output (with the CRDs, as --include-crds) applies to a
// real API server.
func TestTemplateApplies(t *testing.T) {
	c := load(t)
	var crds strings.Builder
	for _, f := range c.CRDObjects() {
		crds.WriteString("---\n" + string(f.File.Data) + "\n")
	}
	cl := kubetest.Start(t)
	cl.MustKubectl(t, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: "+namespace+"}\n"), "apply", "-f", "-")
	cl.MustKubectl(t, []byte(crds.String()), "apply", "-f", "-")
	out := cl.MustKubectl(t, []byte(render(t, c, nil)), "apply", "-f", "-")
	for _, want := range []string{"deployment.apps/weft created", "secret/weft-webhook-tls created", "mutatingwebhookconfiguration.admissionregistration.k8s.io/weft-injector created", "clusterrole.rbac.authorization.k8s.io/weft created", "service/weft created"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply said\n%s\nwithout %q", out, want)
		}
	}
	if len(c.CRDObjects()) < 2 {
		t.Errorf("the chart has %d CRDs, want one per Weft kind", len(c.CRDObjects()))
	}
}
