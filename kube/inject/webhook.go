package inject

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/weftmesh/weft/kube/client"
)

// The admission.k8s.io/v1 AdmissionReview, the part a mutating webhook
// reads and writes (declared here rather than linking k8s.io/api).
type (
	admissionReview struct {
		APIVersion string             `json:"apiVersion"`
		Kind       string             `json:"kind"`
		Request    *admissionRequest  `json:"request,omitempty"`
		Response   *admissionResponse `json:"response,omitempty"`
	}
	admissionRequest struct {
		UID       string           `json:"uid"`
		Kind      groupVersionKind `json:"kind"`
		Namespace string           `json:"namespace"`
		Name      string           `json:"name"`
		Operation string           `json:"operation"`
		Object    json.RawMessage  `json:"object"`
	}
	groupVersionKind struct {
		Group   string `json:"group"`
		Version string `json:"version"`
		Kind    string `json:"kind"`
	}
	admissionResponse struct {
		UID       string   `json:"uid"`
		Allowed   bool     `json:"allowed"`
		Patch     []byte   `json:"patch,omitempty"`
		PatchType string   `json:"patchType,omitempty"`
		Warnings  []string `json:"warnings,omitempty"`
	}
)

// Path is where the webhook is served.
const Path = "/inject"

// Handler answers the API server's admission reviews of pods: it injects
// the sidecar with a JSON patch. A pod that cannot be injected (no service
// name, a bad annotation) is still admitted, with a warning saying why,
// which kubectl prints: the webhook never blocks a workload.
func Handler(c Config, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
		if err != nil {
			http.Error(w, "request body larger than 4 MiB", http.StatusRequestEntityTooLarge)
			return
		}
		var rev admissionReview
		if err := json.Unmarshal(body, &rev); err != nil || rev.Request == nil {
			http.Error(w, fmt.Sprintf("not an AdmissionReview: %v", err), http.StatusBadRequest)
			return
		}
		resp := review(c, rev.Request)
		if len(resp.Warnings) > 0 {
			log.Warn("pod not injected", "namespace", rev.Request.Namespace, "name", rev.Request.Name, "reason", resp.Warnings[0])
		} else if resp.Patch != nil {
			log.Info("sidecar injected", "namespace", rev.Request.Namespace, "name", rev.Request.Name)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(admissionReview{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview", Response: resp})
	})
}

func review(c Config, req *admissionRequest) *admissionResponse {
	resp := &admissionResponse{UID: req.UID, Allowed: true}
	if req.Kind.Kind != "Pod" || req.Operation != "CREATE" {
		return resp
	}
	var pod map[string]any
	if err := json.Unmarshal(req.Object, &pod); err != nil {
		resp.Warnings = []string{"weft: the pod is not JSON: " + err.Error()}
		return resp
	}
	meta, spec := nested(pod, "metadata"), nested(pod, "spec")
	if meta == nil {
		meta = map[string]any{}
	}
	if spec == nil {
		resp.Warnings = []string{"weft: the pod has no spec"}
		return resp
	}
	changed, err := Pod(c, meta, spec)
	if err != nil {
		resp.Warnings = []string{"weft: sidecar not injected: " + err.Error()}
		return resp
	}
	if !changed {
		return resp
	}
	patch, _ := json.Marshal([]map[string]any{
		{"op": "replace", "path": "/spec", "value": spec},
		{"op": "add", "path": "/metadata/annotations", "value": meta["annotations"]},
	})
	resp.Patch, resp.PatchType = patch, "JSONPatch"
	return resp
}

// Certificates: the webhook's serving certificate and the CA the API
// server trusts it by (the MutatingWebhookConfiguration's caBundle).

// SelfSigned makes a CA and a serving certificate for hosts (DNS names
// or IPs), both in memory, valid for a year; it returns the serving pair
// and the CA's PEM.
func SelfSigned(hosts []string) (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "weft-injector-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "weft-injector"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

// LoadCert reads tls.crt and tls.key from dir (a mounted kubernetes.io/tls
// secret, e.g. cert-manager's); the CA is ca.crt when present, else the
// certificate itself.
func LoadCert(dir string) (tls.Certificate, []byte, error) {
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	cert, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("--webhook-cert-dir: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if errors.Is(err, os.ErrNotExist) {
		ca, err = os.ReadFile(crt)
	}
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("--webhook-cert-dir: %w", err)
	}
	return cert, ca, nil
}

// Registration: the MutatingWebhookConfiguration the control plane keeps.

var webhookConfigs = client.Resource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"}

// Registration says how the API server reaches the webhook.
type Registration struct {
	// Name of the MutatingWebhookConfiguration (default weft-sidecar-injector).
	Name string
	// URL, for a webhook outside the cluster; or Service, namespace/name
	// with Port, for the control plane's Service.
	URL              string
	ServiceNamespace string
	ServiceName      string
	ServicePort      int
	// FailurePolicy: Fail (a pod is not created while the injector is
	// down) or Ignore (it is created without the sidecar). Default Fail.
	FailurePolicy string
	CABundle      []byte
}

// DefaultConfigName is the MutatingWebhookConfiguration's default name.
const DefaultConfigName = "weft-sidecar-injector"

// Object is the MutatingWebhookConfiguration: two webhooks on one
// endpoint, since one webhook's namespace and object selectors must both
// match: pods in a namespace labelled weft.dev/inject=enabled (unless the
// pod says disabled), and pods labelled enabled in any other namespace.
func (r Registration) Object() map[string]any {
	name := r.Name
	if name == "" {
		name = DefaultConfigName
	}
	fp := r.FailurePolicy
	if fp == "" {
		fp = "Fail"
	}
	cc := map[string]any{"caBundle": r.CABundle}
	if r.URL != "" {
		cc["url"] = r.URL
	} else {
		cc["service"] = map[string]any{"namespace": r.ServiceNamespace, "name": r.ServiceName, "port": int64(r.ServicePort), "path": Path}
	}
	hook := func(name string, nsSel, objSel map[string]any) map[string]any {
		return map[string]any{
			"name":                    name,
			"clientConfig":            cc,
			"rules":                   []any{map[string]any{"apiGroups": []any{""}, "apiVersions": []any{"v1"}, "operations": []any{"CREATE"}, "resources": []any{"pods"}, "scope": "Namespaced"}},
			"namespaceSelector":       nsSel,
			"objectSelector":          objSel,
			"failurePolicy":           fp,
			"sideEffects":             "None",
			"admissionReviewVersions": []any{"v1"},
			"timeoutSeconds":          int64(10),
			"reinvocationPolicy":      "IfNeeded",
		}
	}
	sel := func(op string, values ...string) map[string]any {
		e := map[string]any{"key": LabelInject, "operator": op}
		if len(values) > 0 {
			v := make([]any, len(values))
			for i := range values {
				v[i] = values[i]
			}
			e["values"] = v
		}
		return map[string]any{"matchExpressions": []any{e}}
	}
	return map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1",
		"kind":       "MutatingWebhookConfiguration",
		"metadata":   map[string]any{"name": name, "labels": map[string]any{"app.kubernetes.io/part-of": "weft"}},
		"webhooks": []any{
			hook("namespace.inject.weft.dev", sel("In", "enabled"), sel("NotIn", "disabled")),
			hook("pod.inject.weft.dev", sel("NotIn", "enabled"), sel("In", "enabled")),
		},
	}
}

// Register creates or updates the MutatingWebhookConfiguration.
func Register(ctx context.Context, c *client.Client, r Registration) error {
	obj := client.Object(r.Object())
	cur, err := c.Get(ctx, webhookConfigs, "", obj.Name())
	if client.IsNotFound(err) {
		_, err = c.Create(ctx, webhookConfigs, "", obj)
		return err
	}
	if err != nil {
		return err
	}
	obj.SetResourceVersion(cur.ResourceVersion())
	_, err = c.Update(ctx, webhookConfigs, "", obj)
	return err
}
