package inject

import (
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var cfg = Config{Image: "weft:t", Control: "cp:15010"}

func decode(t *testing.T, y string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPodErrors(t *testing.T) {
	for _, tc := range []struct {
		name, pod, word string
	}{
		{"no service", `{metadata: {}, spec: {containers: [{name: a}]}}`, "weft.dev/service"},
		{"bad app port", `{metadata: {labels: {app: x}, annotations: {weft.dev/app-port: "http"}}, spec: {serviceAccountName: x, containers: [{name: a}]}}`, `weft.dev/app-port: "http" is not a port`},
		{"app port is the sidecar's", `{metadata: {labels: {app: x}, annotations: {weft.dev/app-port: "15001"}}, spec: {serviceAccountName: x, containers: [{name: a}]}}`, "one of the sidecar's ports"},
		{"bad quantity", `{metadata: {labels: {app: x}, annotations: {weft.dev/proxy-memory-limit: "lots"}}, spec: {serviceAccountName: x, containers: [{name: a}]}}`, "weft.dev/proxy-memory-limit"},
		{"no containers", `{metadata: {labels: {app: x}}, spec: {containers: []}}`, "spec.containers is empty"},
		{"default service account", `{metadata: {labels: {app: shop}}, spec: {containers: [{name: a}]}}`, `its ServiceAccount is "default": a sidecar proves its service with its ServiceAccount's token`},
		{"other service account", `{metadata: {labels: {app: shop}}, spec: {serviceAccountName: web, containers: [{name: a}]}}`, "set spec.serviceAccountName: shop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := decode(t, tc.pod)
			_, err := Pod(cfg, p["metadata"].(map[string]any), p["spec"].(map[string]any))
			if err == nil || !strings.Contains(err.Error(), tc.word) {
				t.Fatalf("err = %v, want one with %q", err, tc.word)
			}
		})
	}
	if _, err := Pod(Config{}, map[string]any{}, map[string]any{}); err == nil {
		t.Error("a config with no image was accepted")
	}
}

func TestPodInjectsOnce(t *testing.T) {
	p := decode(t, `{metadata: {labels: {app.kubernetes.io/name: shop, app: other}}, spec: {serviceAccountName: shop, initContainers: [{name: migrate}], containers: [{name: a, ports: [{containerPort: 53, protocol: UDP}, {containerPort: 9000}], env: [{name: HTTP_PROXY, value: mine}]}]}}`)
	meta, spec := p["metadata"].(map[string]any), p["spec"].(map[string]any)
	changed, err := Pod(cfg, meta, spec)
	if err != nil || !changed {
		t.Fatalf("Pod = %v, %v", changed, err)
	}
	inits := spec["initContainers"].([]any)
	if len(inits) != 2 || inits[0].(map[string]any)["name"] != ContainerName || inits[1].(map[string]any)["name"] != "migrate" {
		t.Fatalf("init containers: %v", inits)
	}
	args, _ := json.Marshal(inits[0].(map[string]any)["args"])
	if !strings.Contains(string(args), `"--service","shop"`) || !strings.Contains(string(args), `"--app-port","9000"`) {
		t.Errorf("args %s: want service shop (app.kubernetes.io/name first) and the first TCP port 9000", args)
	}
	for _, want := range []string{`"--token-file","` + TokenFile + `"`, `"--namespace","$(WEFT_POD_NAMESPACE)"`} {
		if !strings.Contains(string(args), want) {
			t.Errorf("args %s lack %s", args, want)
		}
	}
	sc, _ := json.Marshal(inits[0])
	if !strings.Contains(string(sc), `"volumeMounts":[{"mountPath":"`+TokenDir+`","name":"weft-token","readOnly":true}]`) ||
		!strings.Contains(string(sc), `{"name":"WEFT_POD_NAMESPACE","valueFrom":{"fieldRef":{"fieldPath":"metadata.namespace"}}}`) {
		t.Errorf("the sidecar lacks the token mount or the namespace from the downward API: %s", sc)
	}
	vols, _ := json.Marshal(spec["volumes"])
	if string(vols) != `[{"name":"weft-token","projected":{"sources":[{"serviceAccountToken":{"audience":"weft","expirationSeconds":3600,"path":"token"}}]}}]` {
		t.Errorf("volumes %s: want the projected ServiceAccount token for audience weft", vols)
	}
	if strings.Contains(string(sc), "WEFT_TOKEN") {
		t.Errorf("a literal token is in the pod spec: %s", sc)
	}
	env, _ := json.Marshal(spec["containers"].([]any)[0].(map[string]any)["env"])
	if string(env) != `[{"name":"HTTP_PROXY","value":"mine"}]` {
		t.Errorf("the app's own HTTP_PROXY was changed: %s", env)
	}
	if changed, _ := Pod(cfg, meta, spec); changed {
		t.Error("a pod with the sidecar was injected again")
	}
}

func TestQuantity(t *testing.T) {
	for s, want := range map[string]bool{"100m": true, "1": true, "0.5": true, "64Mi": true, "1G": true, "": false, "m": false, "64MB": false, "-1": false} {
		if quantity(s) != want {
			t.Errorf("quantity(%q) = %v", s, !want)
		}
	}
}

func TestManifest(t *testing.T) {
	in := `# a comment
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: nightly}}
        spec: {serviceAccountName: nightly, restartPolicy: Never, containers: [{name: job, image: j}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data: {k: v}
---
apiVersion: v1
kind: Pod
metadata: {name: p, labels: {app: p, weft.dev/inject: disabled}}
spec: {containers: [{name: a}]}
`
	out, err := Manifest(cfg, []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	docs := split(out)
	if len(docs) != 3 {
		t.Fatalf("%d documents out, want 3:\n%s", len(docs), out)
	}
	if !strings.Contains(string(docs[0]), "name: weft-sidecar") || !strings.Contains(string(docs[0]), "restartPolicy: Always") {
		t.Errorf("the CronJob's pod was not injected:\n%s", docs[0])
	}
	if strings.Contains(string(docs[1]), "weft") || strings.Contains(string(docs[2]), "weft-sidecar") {
		t.Errorf("a ConfigMap or an opted-out pod was changed:\n%s", out)
	}
	_, err = Manifest(cfg, []byte("kind: Deployment\nmetadata: {name: d}\nspec: {template: {metadata: {}, spec: {containers: [{name: a}]}}}\n"))
	if err == nil || !strings.Contains(err.Error(), "document 1 (Deployment/d)") {
		t.Errorf("err = %v, want one naming document 1 (Deployment/d)", err)
	}
}

func TestReview(t *testing.T) {
	pod := `{"metadata":{"name":"p","labels":{"app":"p"}},"spec":{"serviceAccountName":"p","containers":[{"name":"a"}]}}`
	resp := review(cfg, &admissionRequest{UID: "u1", Operation: "CREATE", Object: json.RawMessage(pod), Kind: gvk("Pod")})
	if !resp.Allowed || resp.UID != "u1" || resp.PatchType != "JSONPatch" || !strings.Contains(string(resp.Patch), ContainerName) {
		t.Errorf("pod review: %+v", resp)
	}
	resp = review(cfg, &admissionRequest{UID: "u2", Operation: "CREATE", Object: json.RawMessage(`{"metadata":{},"spec":{"containers":[{"name":"a"}]}}`), Kind: gvk("Pod")})
	if !resp.Allowed || resp.Patch != nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "weft.dev/service") {
		t.Errorf("a pod without a service name: %+v, want admitted with a warning naming weft.dev/service", resp)
	}
}

func FuzzManifest(f *testing.F) {
	f.Add([]byte("kind: Pod\nmetadata: {labels: {app: a}}\nspec: {containers: [{name: a, ports: [{containerPort: 1}]}]}\n"))
	f.Add([]byte("kind: Deployment\nspec: {template: 3}\n---\n---\nkind: CronJob\nspec: {jobTemplate: {spec: {template: {spec: {}}}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		out, err := Manifest(cfg, data)
		if err == nil {
			if _, err := Manifest(cfg, out); err != nil {
				t.Fatalf("injecting the output again failed: %v\n%s", err, out)
			}
		}
	})
}

func gvk(kind string) groupVersionKind {
	return groupVersionKind{Version: "v1", Kind: kind}
}
