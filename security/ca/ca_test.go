package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type memStore map[string][]byte

func (m memStore) GetSecret(n string) ([]byte, error) { return m[n], nil }
func (m memStore) PutSecret(n string, v []byte) error { m[n] = v; return nil }

func csr(t *testing.T, uris ...string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestRootPersistsAndSignsTheIDItChooses(t *testing.T) {
	st := memStore{}
	c, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	again, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Bundle()[0]) != string(again.Bundle()[0]) {
		t.Fatal("a second start made a new root instead of loading the stored one")
	}
	// The CSR asks for admin; the CA issues what the control plane decided.
	is, err := again.Sign(csr(t, "spiffe://weft.local/ns/default/sa/admin"), "spiffe://weft.local/ns/default/sa/web")
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(is.Chain[0])
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://weft.local/ns/default/sa/web" {
		t.Fatalf("URIs %v", leaf.URIs)
	}
	if d := leaf.NotAfter.Sub(time.Now()); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("leaf lifetime %s, want 24h", d)
	}
	pool := x509.NewCertPool()
	root, _ := x509.ParseCertificate(c.Bundle()[0])
	pool.AddCert(root)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(csr(t), "spiffe://other.domain/ns/default/sa/web"); err == nil {
		t.Fatal("signed an ID of another trust domain")
	}
	bad := csr(t)
	bad[len(bad)-3] ^= 0xff
	if _, err := c.Sign(bad, "spiffe://weft.local/ns/default/sa/web"); err == nil {
		t.Fatal("signed a CSR with a broken signature")
	}
}

func TestRotation(t *testing.T) {
	st := memStore{}
	c, _ := New(Config{Store: st})
	old := c.Roots()[0].Fingerprint
	fp, err := c.AddRoot()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Bundle()) != 2 || !c.Roots()[0].Signing || c.Roots()[1].Signing {
		t.Fatalf("after AddRoot: %+v", c.Roots())
	}
	if err := c.RemoveRoot(old); err == nil {
		t.Fatal("removed the signing root")
	}
	if err := c.SwitchSigner(fp); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveRoot(old); err != nil {
		t.Fatal(err)
	}
	re, _ := New(Config{Store: st})
	if rs := re.Roots(); len(rs) != 1 || rs[0].Fingerprint != fp || !rs[0].Signing {
		t.Fatalf("stored after rotation: %+v", rs)
	}
}

func TestUserIntermediate(t *testing.T) {
	root, _ := New(Config{})
	// An intermediate signed by root, as a company PKI would hand out.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: randSerial(), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	root.mu.RLock()
	interDER, err := x509.CreateCertificate(rand.Reader, tmpl, root.signer.cert, key.Public(), root.signer.key)
	root.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Bundle()[0]})...)
	os.WriteFile(filepath.Join(dir, "ca.pem"), certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	c, err := New(Config{CertFile: filepath.Join(dir, "ca.pem"), KeyFile: filepath.Join(dir, "ca.key")})
	if err != nil {
		t.Fatal(err)
	}
	is, err := c.Sign(csr(t), "spiffe://weft.local/ns/default/sa/web")
	if err != nil {
		t.Fatal(err)
	}
	if len(is.Chain) != 2 || string(c.Bundle()[0]) != string(root.Bundle()[0]) {
		t.Fatalf("chain %d certs; bundle should be the user's root", len(is.Chain))
	}
	if is.NotAfter.After(time.Now().Add(25 * time.Hour)) {
		t.Fatal("leaf outlives the default TTL")
	}
	if _, err := New(Config{CertFile: filepath.Join(dir, "ca.pem")}); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("cert without key: %v", err)
	}
}

func TestTrustDomainValidated(t *testing.T) {
	if _, err := New(Config{TrustDomain: "Weft.Local"}); err == nil || !strings.Contains(err.Error(), "--trust-domain") {
		t.Fatalf("uppercase trust domain: %v", err)
	}
}
