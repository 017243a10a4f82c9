package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned is a PEM certificate and key.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func TestFromKubeconfig(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t)
	os.WriteFile(filepath.Join(dir, "ca.crt"), cert, 0o600)
	os.WriteFile(filepath.Join(dir, "client.crt"), cert, 0o600)
	os.WriteFile(filepath.Join(dir, "client.key"), key, 0o600)
	b64 := base64.StdEncoding.EncodeToString
	const head = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- {name: other, context: {cluster: x, user: x}}\n- {name: c, context: {cluster: k, user: u}}\n"
	for _, tc := range []struct {
		name, clusters, users string
		check                 func(*testing.T, *Config)
		word                  string
	}{
		{"token and CA data", "- {name: k, cluster: {server: 'https://10.0.0.1:6443/', certificate-authority-data: " + b64(cert) + "}}",
			"- {name: u, user: {token: abc}}", func(t *testing.T, c *Config) {
				if c.Host != "https://10.0.0.1:6443" || c.Token != "abc" || c.TLS.RootCAs == nil || c.TLS.InsecureSkipVerify {
					t.Errorf("config %+v", c)
				}
			}, ""},
		{"relative CA file and client certificate files", "- {name: k, cluster: {server: 'https://h:1', certificate-authority: ca.crt}}",
			"- {name: u, user: {client-certificate: client.crt, client-key: client.key}}", func(t *testing.T, c *Config) {
				if c.TLS.RootCAs == nil || len(c.TLS.Certificates) != 1 || c.Token != "" {
					t.Errorf("config %+v", c)
				}
			}, ""},
		{"client certificate data, insecure", "- {name: k, cluster: {server: 'https://h:1', insecure-skip-tls-verify: true}}",
			"- {name: u, user: {client-certificate-data: " + b64(cert) + ", client-key-data: " + b64(key) + "}}", func(t *testing.T, c *Config) {
				if !c.TLS.InsecureSkipVerify || len(c.TLS.Certificates) != 1 {
					t.Errorf("config %+v", c)
				}
			}, ""},
		{"token file", "- {name: k, cluster: {server: 'https://h:1'}}", "- {name: u, user: {tokenFile: tok}}", func(t *testing.T, c *Config) {
			if c.TokenFile != filepath.Join(dir, "tok") {
				t.Errorf("token file %q", c.TokenFile)
			}
		}, ""},
		{"exec plugin", "- {name: k, cluster: {server: 'https://h:1'}}", "- {name: u, user: {exec: {command: gke-gcloud-auth-plugin}}}", nil, `user "u" runs an exec credential plugin`},
		{"missing cluster", "- {name: z, cluster: {server: 'https://h:1'}}", "", nil, `names cluster "k", which is not among its clusters`},
		{"no server", "- {name: k, cluster: {}}", "", nil, `cluster "k" has no server`},
		{"CA file missing", "- {name: k, cluster: {server: 'https://h:1', certificate-authority: nope.crt}}", "", nil, "nope.crt"},
		{"CA not PEM", "- {name: k, cluster: {server: 'https://h:1', certificate-authority-data: " + b64([]byte("junk")) + "}}", "", nil, "holds no PEM certificate"},
		{"bad key", "- {name: k, cluster: {server: 'https://h:1'}}", "- {name: u, user: {client-certificate: client.crt, client-key: ca.crt}}", nil, "client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := head + "clusters:\n" + tc.clusters + "\n"
			if tc.users != "" {
				y += "users:\n" + tc.users + "\n"
			}
			p := filepath.Join(dir, "kubeconfig")
			os.WriteFile(p, []byte(y), 0o600)
			c, err := FromKubeconfig(p)
			if tc.word != "" {
				if err == nil || !strings.Contains(err.Error(), tc.word) {
					t.Fatalf("err %v, want one saying %q", err, tc.word)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
	p := filepath.Join(dir, "nocontext")
	os.WriteFile(p, []byte("apiVersion: v1\ncurrent-context: gone\n"), 0o600)
	if _, err := FromKubeconfig(p); err == nil || !strings.Contains(err.Error(), `current-context "gone" is not among its contexts`) {
		t.Errorf("unknown context: %v", err)
	}
}

func TestInCluster(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := inCluster(dir); err != ErrNotInCluster {
		t.Errorf("outside a pod: %v", err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	if _, err := inCluster(dir); err == nil || !strings.Contains(err.Error(), "service account token") {
		t.Errorf("no token: %v", err)
	}
	cert, _ := selfSigned(t)
	os.WriteFile(filepath.Join(dir, "token"), []byte("one\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.crt"), cert, 0o600)
	cfg, err := inCluster(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://[fd00::1]:443" || cfg.TLS.RootCAs == nil {
		t.Errorf("config %+v", cfg)
	}
	// The token is re-read as the kubelet rotates it.
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tok, _ := c.bearer(); tok != "one" {
		t.Errorf("token %q, want one", tok)
	}
	os.WriteFile(filepath.Join(dir, "token"), []byte("two"), 0o600)
	c.tokenRead = time.Now().Add(-2 * tokenTTL)
	if tok, _ := c.bearer(); tok != "two" {
		t.Errorf("after rotation: token %q, want two", tok)
	}
}

func TestResourcePath(t *testing.T) {
	for _, tc := range []struct {
		r             Resource
		ns, name, sub string
		want          string
	}{
		{Resource{Version: "v1", Resource: "pods"}, "", "", "", "/api/v1/pods"},
		{Resource{Version: "v1", Resource: "pods"}, "shop", "a", "", "/api/v1/namespaces/shop/pods/a"},
		{Resource{Group: "weft.dev", Version: "v1alpha1", Resource: "trafficpolicies"}, "shop", "p", "status", "/apis/weft.dev/v1alpha1/namespaces/shop/trafficpolicies/p/status"},
		{Resource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"}, "", "w", "", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/w"},
	} {
		if got := tc.r.path(tc.ns, tc.name, tc.sub); got != tc.want {
			t.Errorf("path = %s, want %s", got, tc.want)
		}
	}
}
