// Package kubetest starts a real Kubernetes API server over a real etcd for
// tests: Debian's etcd on a free loopback port with a temporary data
// directory, and the kube-apiserver that scripts/kube-tools.sh builds from
// the pinned k8s.io/kubernetes module into a cache outside the clone. There
// is no kubelet, scheduler or controller manager: tests create Pods,
// EndpointSlices and their status themselves.
//
// Start skips the test, saying why, only when the API server binary is not
// cached and cannot be built, or etcd is not installed (scripts/deps.sh
// installs it).
package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// Cluster is a running API server.
type Cluster struct {
	// Kubeconfig is the path of a kubeconfig for the admin user.
	Kubeconfig string
	// URL is the API server's https URL; Token its admin bearer token.
	URL, Token string
	// CA is the PEM of the CA that signed the API server's serving cert.
	CA []byte

	APIServer, Etcd *harness.Proc
}

// StartTimeout bounds etcd and the API server becoming ready on a loaded
// machine.
const StartTimeout = 90 * time.Second

// APIServerBinary returns the cached kube-apiserver, building it with
// scripts/kube-tools.sh when missing ($WEFT_KUBE_APISERVER overrides).
func APIServerBinary() (string, error) {
	if b := os.Getenv("WEFT_KUBE_APISERVER"); b != "" {
		return b, nil
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("cannot find the module root (go env GOMOD: %q, %v)", gomod, err)
	}
	script := filepath.Join(filepath.Dir(gomod), "scripts", "kube-tools.sh")
	cmd := exec.Command("bash", script)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Start starts etcd and the API server for t; both are killed at cleanup.
func Start(t testing.TB) *Cluster {
	t.Helper()
	apiserver, err := APIServerBinary()
	if err != nil {
		t.Skipf("kube-apiserver is not cached and could not be built (run scripts/kube-tools.sh): %v", err)
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed (scripts/deps.sh installs Debian's etcd-server)")
	}
	dir := t.TempDir()
	c := &Cluster{}

	client, peer := harness.FreePort(t), harness.FreePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	c.Etcd = harness.Start(t, "etcd", etcd,
		"--name=weft-test", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=weft-test="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn")
	harness.WaitUp(t, c.Etcd, etcdURL+"/health", StartTimeout)

	ca, caKey := newCA(t)
	c.CA = pemCert(ca.Raw)
	certFile, keyFile := filepath.Join(dir, "apiserver.crt"), filepath.Join(dir, "apiserver.key")
	cert, key := newServing(t, ca, caKey)
	write(t, certFile, pemCert(cert))
	write(t, keyFile, pemKey(t, key))
	saKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	saFile := filepath.Join(dir, "sa.key")
	write(t, saFile, pemKey(t, saKey))
	c.Token = randHex(16)
	tokens := filepath.Join(dir, "tokens.csv")
	write(t, tokens, []byte(c.Token+`,admin,admin,"system:masters"`+"\n"))

	port := harness.FreePort(t)
	c.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	c.APIServer = harness.Start(t, "kube-apiserver", apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--tls-cert-file="+certFile, "--tls-private-key-file="+keyFile,
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--token-auth-file="+tokens,
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+saFile,
		"--service-account-signing-key-file="+saFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		// No controller manager creates the default ServiceAccount, so its
		// admission plugin would refuse every Pod.
		"--disable-admission-plugins=ServiceAccount",
		"--enable-priority-and-fairness=false",
		// The kubernetes Service's endpoints would be the loopback address,
		// which the reconciler refuses; nothing here needs them.
		"--endpoint-reconciler-type=none",
		"--v=1")
	c.waitReady(t)

	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	write(t, c.Kubeconfig, []byte(c.kubeconfig()))
	return c
}

func (c *Cluster) waitReady(t testing.TB) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CA)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var last string
	ok := harness.Poll(StartTimeout, func() bool {
		if c.APIServer.Exited() {
			return true
		}
		req, _ := http.NewRequest("GET", c.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := hc.Do(req)
		if err != nil {
			last = err.Error()
			return false
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK
	})
	if c.APIServer.Exited() {
		t.Fatalf("kube-apiserver exited:\n%s", c.APIServer.Tail(40))
	}
	if !ok {
		t.Fatalf("kube-apiserver not ready after %s (last: %s):\n%s", StartTimeout, last, c.APIServer.Tail(40))
	}
}

func (c *Cluster) kubeconfig() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: weft-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: weft-test
  context: {cluster: weft-test, user: admin}
current-context: weft-test
`, c.URL, b64(c.CA), c.Token)
}

// Kubectl runs /usr/bin/kubectl (or the one on PATH) against the cluster,
// with stdin when not nil, and returns its combined output.
func (c *Cluster) Kubectl(stdin []byte, args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustKubectl is Kubectl failing the test on error.
func (c *Cluster) MustKubectl(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	out, err := c.Kubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Certificates: a throwaway CA and a serving cert for 127.0.0.1.

func newCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return ca, key
}

func newServing(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost", "kubernetes.default.svc"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(t testing.TB, key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func write(t testing.TB, path string, b []byte) {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
