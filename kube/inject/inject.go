// Package inject adds Weft's sidecar to pods: as a Kubernetes native
// sidecar (an init container with restartPolicy: Always, Kubernetes ≥
// 1.29), so it starts before the app containers and stops after them, and
// a Job's pod completes when its app does. The same mutation serves the
// control plane's admission webhook (webhook.go) and `weft inject -f`.
//
// What the sidecar gets:
//   - a startup probe on its admin /healthz, so the kubelet starts the app
//     containers only once the proxy listens;
//   - a readiness probe on its admin /ready, which follows the app (ready
//     once the app accepts connections), so the pod is ready when its app is;
//   - resources from the pod's annotations (weft.dev/proxy-cpu-request, …);
//   - the app containers get HTTP_PROXY pointing at it;
//   - a projected ServiceAccount token (audience weft, an hour's life,
//     rotated by the kubelet) it proves its service with: the control plane
//     checks it with a TokenReview and lets ServiceAccount NS/SA register
//     only service SA in namespace NS, so the pod's ServiceAccount must be
//     named for its service (the pod is refused otherwise). Its SPIFFE
//     namespace is the pod's.
package inject

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/weftmesh/weft/kube/endpoints"
	"github.com/weftmesh/weft/kube/tokenreview"
)

// Labels and annotations.
const (
	// LabelInject on a namespace or pod: "enabled" injects; on a pod,
	// "disabled" opts out of its namespace's injection.
	LabelInject = "weft.dev/inject"
	// AnnotationService names the pod's service (default: the label
	// app.kubernetes.io/name, else app).
	AnnotationService = "weft.dev/service"
	// AnnotationAppPort is the app's port (default: the first containerPort
	// of the first app container; none: a pure client sidecar).
	AnnotationAppPort = "weft.dev/app-port"
	// AnnotationInjected is set on injected pods.
	AnnotationInjected = endpoints.AnnotationInjected
	// Resource annotations: each a Kubernetes quantity.
	AnnotationCPURequest    = "weft.dev/proxy-cpu-request"
	AnnotationMemoryRequest = "weft.dev/proxy-memory-request"
	AnnotationCPULimit      = "weft.dev/proxy-cpu-limit"
	AnnotationMemoryLimit   = "weft.dev/proxy-memory-limit"
)

// ContainerName is the sidecar's container.
const ContainerName = "weft-sidecar"

// The projected ServiceAccount token.
const (
	TokenVolume     = "weft-token"
	TokenDir        = "/var/run/secrets/weft.dev/serviceaccount"
	TokenFile       = TokenDir + "/token"
	TokenExpiration = 3600 // seconds; the kubelet renews it at 80% of that
)

// Ports inside the pod.
const (
	InboundPort  = 15006
	OutboundPort = 15001
	AdminPort    = 15020
)

// Config is what every injected sidecar shares.
type Config struct {
	// Image is the weft image, e.g. weft:0.1.0.
	Image string
	// Control is the control plane's gRPC address as pods reach it, e.g.
	// weft-control.weft-system.svc:15010.
	Control string
	// ImagePullPolicy, default IfNotPresent.
	ImagePullPolicy string
	// Requests and limits when the pod's annotations say nothing.
	CPURequest, MemoryRequest, CPULimit, MemoryLimit string
	// TokenAudience is the audience of the projected ServiceAccount token
	// the sidecar proves its service with (default tokenreview.DefaultAudience);
	// the control plane reviews it for the same audience.
	TokenAudience string
}

// Defaults for Config's resources.
const (
	DefaultCPURequest    = "10m"
	DefaultMemoryRequest = "32Mi"
	DefaultMemoryLimit   = "256Mi"
)

func (c Config) check() error {
	if c.Image == "" {
		return errors.New("sidecar image is not set")
	}
	if c.Control == "" {
		return errors.New("control plane address for sidecars is not set")
	}
	return nil
}

// Pod injects the sidecar into a pod: meta is its metadata and spec its
// spec (a Pod's, or a workload's pod template's), as decoded JSON,
// changed in place. It reports false when the pod has the sidecar
// already. The error says why a pod cannot be injected.
func Pod(c Config, meta, spec map[string]any) (bool, error) {
	if err := c.check(); err != nil {
		return false, err
	}
	labels := stringMap(meta["labels"])
	ann := stringMap(meta["annotations"])
	containers, _ := spec["containers"].([]any)
	inits, _ := spec["initContainers"].([]any)
	for _, x := range append(slices.Clone(inits), containers...) {
		if m, ok := x.(map[string]any); ok && m["name"] == ContainerName {
			return false, nil
		}
	}
	if len(containers) == 0 {
		return false, errors.New("spec.containers is empty")
	}
	service := ann[AnnotationService]
	if service == "" {
		service = labels["app.kubernetes.io/name"]
	}
	if service == "" {
		service = labels["app"]
	}
	if service == "" {
		return false, fmt.Errorf("cannot tell the pod's service: set the annotation %s (or the label app.kubernetes.io/name or app)", AnnotationService)
	}
	// The control plane's mapping rule (ServiceAccount SA may claim only
	// service SA): a pod whose ServiceAccount is named otherwise would get
	// a sidecar that can never have its certificate.
	sa, _ := spec["serviceAccountName"].(string)
	if sa == "" {
		sa, _ = spec["serviceAccount"].(string)
	}
	if sa == "" {
		sa = "default"
	}
	if sa != service {
		return false, fmt.Errorf("the pod's service is %q but its ServiceAccount is %q: a sidecar proves its service with its ServiceAccount's token, which may claim only the service named like it; set spec.serviceAccountName: %s (and create that ServiceAccount), or set the annotation %s: %s", service, sa, service, AnnotationService, sa)
	}
	appPort, err := appPort(ann, containers)
	if err != nil {
		return false, err
	}
	res, err := resources(c, ann)
	if err != nil {
		return false, err
	}

	args := []any{"sidecar",
		"--control", c.Control,
		"--service", service,
		"--id", "$(WEFT_POD_NAME)",
		"--namespace", "$(WEFT_POD_NAMESPACE)",
		"--token-file", TokenFile,
		"--outbound", "127.0.0.1:" + strconv.Itoa(OutboundPort),
		"--admin", "$(WEFT_POD_IP):" + strconv.Itoa(AdminPort),
	}
	if appPort != 0 {
		args = append(args, "--app-port", strconv.Itoa(appPort), "--inbound", "$(WEFT_POD_IP):"+strconv.Itoa(InboundPort))
	}
	if v := labels[endpoints.LabelVersion]; v != "" {
		args = append(args, "--version", v)
	}
	probe := func(path string, period, failures int) map[string]any {
		return map[string]any{
			"httpGet":          map[string]any{"path": path, "port": int64(AdminPort)},
			"periodSeconds":    int64(period),
			"failureThreshold": int64(failures),
			"timeoutSeconds":   int64(2),
		}
	}
	pull := c.ImagePullPolicy
	if pull == "" {
		pull = "IfNotPresent"
	}
	sidecar := map[string]any{
		"name":            ContainerName,
		"image":           c.Image,
		"imagePullPolicy": pull,
		// A native sidecar: started before the app containers, stopped after.
		"restartPolicy": "Always",
		"args":          args,
		"env": []any{
			fieldEnv("WEFT_POD_NAME", "metadata.name"),
			fieldEnv("WEFT_POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("WEFT_POD_IP", "status.podIP"),
		},
		"ports": []any{
			map[string]any{"name": "weft-inbound", "containerPort": int64(InboundPort), "protocol": "TCP"},
			map[string]any{"name": "weft-admin", "containerPort": int64(AdminPort), "protocol": "TCP"},
		},
		"startupProbe":   probe("/healthz", 1, 30),
		"readinessProbe": probe("/ready", 2, 2),
		"resources":      res,
		"volumeMounts": []any{
			map[string]any{"name": TokenVolume, "mountPath": TokenDir, "readOnly": true},
		},
		"securityContext": map[string]any{
			"runAsNonRoot":             true,
			"runAsUser":                int64(65532),
			"allowPrivilegeEscalation": false,
			"readOnlyRootFilesystem":   true,
			"capabilities":             map[string]any{"drop": []any{"ALL"}},
			"seccompProfile":           map[string]any{"type": "RuntimeDefault"},
		},
	}
	aud := or(c.TokenAudience, tokenreview.DefaultAudience)
	vols, _ := spec["volumes"].([]any)
	spec["volumes"] = append(vols, map[string]any{
		"name": TokenVolume,
		"projected": map[string]any{"sources": []any{map[string]any{
			"serviceAccountToken": map[string]any{"audience": aud, "expirationSeconds": int64(TokenExpiration), "path": "token"},
		}}},
	})
	// First, so it is up before any other init container that may call out.
	spec["initContainers"] = append([]any{sidecar}, inits...)
	proxy := "http://127.0.0.1:" + strconv.Itoa(OutboundPort)
	for _, x := range containers {
		if m, ok := x.(map[string]any); ok {
			addEnv(m, "HTTP_PROXY", proxy)
		}
	}
	ann[AnnotationInjected] = "true"
	meta["annotations"] = anyMap(ann)
	return true, nil
}

func appPort(ann map[string]string, containers []any) (int, error) {
	if v, ok := ann[AnnotationAppPort]; ok {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return 0, fmt.Errorf("annotation %s: %q is not a port (1-65535)", AnnotationAppPort, v)
		}
		if p == InboundPort || p == OutboundPort || p == AdminPort {
			return 0, fmt.Errorf("annotation %s: %d is one of the sidecar's ports (%d, %d, %d)", AnnotationAppPort, p, InboundPort, OutboundPort, AdminPort)
		}
		return p, nil
	}
	first, _ := containers[0].(map[string]any)
	ports, _ := first["ports"].([]any)
	for _, p := range ports {
		if pm, ok := p.(map[string]any); ok {
			if proto, _ := pm["protocol"].(string); proto != "" && proto != "TCP" {
				continue
			}
			if n := toInt(pm["containerPort"]); n > 0 {
				return n, nil
			}
		}
	}
	return 0, nil
}

func resources(c Config, ann map[string]string) (map[string]any, error) {
	pick := func(a, def string) (string, error) {
		v, ok := ann[a]
		if !ok {
			return def, nil
		}
		if !quantity(v) {
			return "", fmt.Errorf("annotation %s: %q is not a Kubernetes quantity (such as 100m, 64Mi)", a, v)
		}
		return v, nil
	}
	req, lim := map[string]any{}, map[string]any{}
	for _, r := range []struct {
		into map[string]any
		name string
		ann  string
		def  string
	}{
		{req, "cpu", AnnotationCPURequest, or(c.CPURequest, DefaultCPURequest)},
		{req, "memory", AnnotationMemoryRequest, or(c.MemoryRequest, DefaultMemoryRequest)},
		{lim, "cpu", AnnotationCPULimit, c.CPULimit},
		{lim, "memory", AnnotationMemoryLimit, or(c.MemoryLimit, DefaultMemoryLimit)},
	} {
		v, err := pick(r.ann, r.def)
		if err != nil {
			return nil, err
		}
		if v != "" {
			r.into[r.name] = v
		}
	}
	out := map[string]any{"requests": req}
	if len(lim) > 0 {
		out["limits"] = lim
	}
	return out, nil
}

// quantity accepts the Kubernetes quantity syntax: a decimal number and an
// optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei). Checked
// here so a typo fails the injection with its annotation's name instead of
// the pod's creation with an opaque message.
func quantity(s string) bool {
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	if i == 0 {
		return false
	}
	switch s[i:] {
	case "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei":
		return true
	}
	return false
}

func addEnv(c map[string]any, name, value string) {
	env, _ := c["env"].([]any)
	for _, e := range env {
		if m, ok := e.(map[string]any); ok && m["name"] == name {
			return
		}
	}
	c["env"] = append(env, map[string]any{"name": name, "value": value})
}

func fieldEnv(name, path string) map[string]any {
	return map[string]any{"name": name, "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": path}}}
}

func stringMap(x any) map[string]string {
	out := map[string]string{}
	switch m := x.(type) {
	case map[string]any:
		for k, v := range m {
			if s, ok := v.(string); ok {
				out[k] = s
			}
		}
	case map[string]string:
		maps.Copy(out, m)
	}
	return out
}

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func toInt(x any) int {
	switch n := x.(type) {
	case int64:
		return int(n)
	case float64:
		return int(n)
	case int:
		return n
	}
	return 0
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
