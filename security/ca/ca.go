// Package ca is the mesh's certificate authority, run inside the control
// plane. It holds one signing key (a self-made ECDSA P-256 root, or an
// intermediate the user brings with --ca-cert/--ca-key) and a trust bundle
// of one or more roots, and signs workload certificates (X.509 SVIDs) from
// the CSRs sidecars send: the sidecar keeps its private key, the CA decides
// the identity (the SPIFFE URI SAN), ignoring whatever the CSR asked for.
//
// Root rotation: AddRoot puts a new root into the bundle without signing
// with it; once every sidecar holds the new bundle, SwitchSigner makes it
// the signer; after every leaf was reissued, RemoveRoot drops the old one.
// No handshake fails in between, since each side trusts both roots.
package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"sync"
	"time"
)

// Defaults.
const (
	DefaultTrustDomain = "weft.local"
	DefaultLeafTTL     = 24 * time.Hour
	DefaultRootTTL     = 10 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so a peer whose clock is a little
	// behind accepts a fresh certificate.
	clockSkew = 5 * time.Minute
)

// Store keeps the CA's state (its keys) across restarts; the control plane
// backs it with its bbolt file.
type Store interface {
	GetSecret(name string) ([]byte, error) // nil, nil when absent
	PutSecret(name string, value []byte) error
}

const secretName = "ca"

// Config configures a CA.
type Config struct {
	TrustDomain string
	LeafTTL     time.Duration
	// CertFile and KeyFile, both or neither: the user's CA (an
	// intermediate of their PKI, or a root) in PEM. The cert file may hold
	// the chain up to the root; its last certificate is the trust anchor
	// sidecars get.
	CertFile, KeyFile string
	Store             Store
	Now               func() time.Time // for tests; default time.Now
}

// CA is safe for concurrent use.
type CA struct {
	td      string
	leafTTL time.Duration
	now     func() time.Time
	store   Store

	mu     sync.RWMutex
	signer *authority   // signs leaves
	roots  []*authority // the trust bundle; the signer's anchor among them
	// chain is what a leaf is sent with, above itself: the signer when it is
	// an intermediate, and the intermediates above it (not the root).
	chain []*x509.Certificate
	gen   uint64 // bumped when the bundle changes
	user  bool   // signer came from --ca-cert/--ca-key: not persisted
}

type authority struct {
	cert *x509.Certificate
	key  crypto.Signer // nil for a root kept only as trust (user's root)
}

// stored is the persisted form: PEM of every root with its key, the index
// of the signer.
type stored struct {
	Roots  []storedRoot `json:"roots"`
	Signer int          `json:"signer"`
}

type storedRoot struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// New loads the CA from the store, or creates a root on first start, or
// uses the user's files.
func New(cfg Config) (*CA, error) {
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
	}
	if err := ValidateTrustDomain(cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("--trust-domain %q: %w", cfg.TrustDomain, err)
	}
	if cfg.LeafTTL <= 0 {
		cfg.LeafTTL = DefaultLeafTTL
	}
	if cfg.LeafTTL < 10*time.Second || cfg.LeafTTL > 30*24*time.Hour {
		return nil, fmt.Errorf("--cert-ttl %s: must be between 10s and 720h", cfg.LeafTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &CA{td: cfg.TrustDomain, leafTTL: cfg.LeafTTL, now: cfg.Now, store: cfg.Store}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("--ca-cert and --ca-key: give both or neither")
	}
	if cfg.CertFile != "" {
		if err := c.loadFiles(cfg.CertFile, cfg.KeyFile); err != nil {
			return nil, err
		}
		return c, nil
	}
	if cfg.Store != nil {
		b, err := cfg.Store.GetSecret(secretName)
		if err != nil {
			return nil, fmt.Errorf("ca: read store: %w", err)
		}
		if b != nil {
			if err := c.decode(b); err != nil {
				return nil, fmt.Errorf("ca: stored state: %w", err)
			}
			return c, nil
		}
	}
	root, err := c.newRoot()
	if err != nil {
		return nil, err
	}
	c.signer, c.roots = root, []*authority{root}
	if err := c.persist(); err != nil {
		return nil, err
	}
	return c, nil
}

// ValidateTrustDomain checks a SPIFFE trust domain name: lowercase
// letters, digits, '.', '-', '_', at most 255 bytes.
func ValidateTrustDomain(td string) error {
	if td == "" || len(td) > 255 {
		return errors.New("must be 1 to 255 characters")
	}
	for _, r := range td {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("character %q not allowed (lowercase letters, digits, '.', '-', '_')", r)
		}
	}
	return nil
}

// TrustDomain is the mesh's trust domain.
func (c *CA) TrustDomain() string { return c.td }

// LeafTTL is the lifetime of issued leaves.
func (c *CA) LeafTTL() time.Duration { return c.leafTTL }

func (c *CA) loadFiles(certFile, keyFile string) error {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return fmt.Errorf("--ca-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("--ca-key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("--ca-cert/--ca-key: %w", err)
	}
	var certs []*x509.Certificate
	for _, der := range pair.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("--ca-cert: %w", err)
		}
		certs = append(certs, x)
	}
	if !certs[0].IsCA || certs[0].KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("--ca-cert: the first certificate is not a CA (needs basicConstraints CA:TRUE and keyUsage keyCertSign)")
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("--ca-key: not a signing key")
	}
	c.signer = &authority{cert: certs[0], key: signer}
	anchor := certs[len(certs)-1]
	c.roots = []*authority{{cert: anchor}}
	if anchor != certs[0] {
		c.chain = certs[:len(certs)-1]
	}
	c.user = true
	return nil
}

func (c *CA) newRoot() (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate key: %w", err)
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: "weft mesh root " + now.UTC().Format("2006-01-02T15:04:05")},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(DefaultRootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: c.td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: create root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

func (c *CA) persist() error {
	if c.store == nil || c.user {
		return nil
	}
	st := stored{}
	for i, r := range c.roots {
		kder, err := x509.MarshalPKCS8PrivateKey(r.key)
		if err != nil {
			return fmt.Errorf("ca: marshal key: %w", err)
		}
		st.Roots = append(st.Roots, storedRoot{
			Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.cert.Raw})),
			Key:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})),
		})
		if r == c.signer {
			st.Signer = i
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := c.store.PutSecret(secretName, b); err != nil {
		return fmt.Errorf("ca: write store: %w", err)
	}
	return nil
}

func (c *CA) decode(b []byte) error {
	var st stored
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	if len(st.Roots) == 0 || st.Signer < 0 || st.Signer >= len(st.Roots) {
		return errors.New("no roots or signer out of range")
	}
	for _, r := range st.Roots {
		pair, err := tls.X509KeyPair([]byte(r.Cert), []byte(r.Key))
		if err != nil {
			return err
		}
		x, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return err
		}
		c.roots = append(c.roots, &authority{cert: x, key: pair.PrivateKey.(crypto.Signer)})
	}
	c.signer = c.roots[st.Signer]
	return nil
}

// Bundle is the trust bundle: every root sidecars must trust, DER.
func (c *CA) Bundle() [][]byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([][]byte, len(c.roots))
	for i, r := range c.roots {
		out[i] = r.cert.Raw
	}
	return out
}

// BundlePEM is Bundle in PEM.
func (c *CA) BundlePEM() []byte {
	var buf bytes.Buffer
	for _, der := range c.Bundle() {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	return buf.Bytes()
}

// Generation changes whenever the bundle does (so the control plane knows
// to push it).
func (c *CA) Generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// Root describes one root of the bundle.
type Root struct {
	Fingerprint string    `json:"fingerprint"` // SHA-256 of the DER, hex
	Subject     string    `json:"subject"`
	NotAfter    time.Time `json:"notAfter"`
	Signing     bool      `json:"signing"`
}

// Roots describes the bundle.
func (c *CA) Roots() []Root {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []Root
	for _, r := range c.roots {
		sum := sha256.Sum256(r.cert.Raw)
		out = append(out, Root{Fingerprint: hex.EncodeToString(sum[:]), Subject: r.cert.Subject.CommonName,
			NotAfter: r.cert.NotAfter, Signing: r == c.signer || (c.user && len(c.roots) == 1)})
	}
	return out
}

// AddRoot creates a new root and adds it to the bundle without signing
// with it (first step of a rotation). It returns its fingerprint.
func (c *CA) AddRoot() (string, error) {
	if c.user {
		return "", errors.New("the CA comes from --ca-cert/--ca-key: rotate it in your PKI")
	}
	r, err := c.newRoot()
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.roots = append(c.roots, r)
	c.gen++
	return fingerprint(r), c.persist()
}

// SwitchSigner makes the root with the fingerprint the signer (second
// step: once sidecars trust it).
func (c *CA) SwitchSigner(fp string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.roots {
		if fingerprint(r) == fp && r.key != nil {
			c.signer = r
			c.gen++
			return c.persist()
		}
	}
	return fmt.Errorf("no root with fingerprint %s in the bundle", fp)
}

// RemoveRoot drops a root that no longer signs (last step: after every
// leaf was reissued by the new one).
func (c *CA) RemoveRoot(fp string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range c.roots {
		if fingerprint(r) != fp {
			continue
		}
		if r == c.signer {
			return errors.New("the root signs leaves: switch the signer first")
		}
		c.roots = append(c.roots[:i:i], c.roots[i+1:]...)
		c.gen++
		return c.persist()
	}
	return fmt.Errorf("no root with fingerprint %s in the bundle", fp)
}

func fingerprint(r *authority) string {
	sum := sha256.Sum256(r.cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Issued is a signed leaf.
type Issued struct {
	Chain    [][]byte // leaf first, then intermediates; DER
	SPIFFEID string
	Serial   string // hex
	NotAfter time.Time
	// Issuer is the fingerprint of the root the leaf chains to.
	Issuer string
}

// Sign checks the CSR's signature and issues a leaf for id (a SPIFFE ID of
// this trust domain), valid LeafTTL. Nothing of the CSR but its public key
// is used.
func (c *CA) Sign(csrDER []byte, id string) (*Issued, error) {
	return c.SignServer(csrDER, id, nil, nil)
}

// SignServer is Sign with DNS and IP SANs besides the SPIFFE ID: the
// control plane's own certificate, which curl and browsers given the CA
// verify by host name.
func (c *CA) SignServer(csrDER []byte, id string, dnsNames []string, ips []net.IP) (*Issued, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: signature: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errors.New("csr: ECDSA key must be P-256 or P-384")
		}
	default:
		return nil, errors.New("csr: key must be ECDSA P-256 or P-384")
	}
	u, err := url.Parse(id)
	if err != nil || u.Scheme != "spiffe" || u.Host != c.td {
		return nil, fmt.Errorf("identity %q: not a SPIFFE ID of trust domain %s", id, c.td)
	}
	c.mu.RLock()
	signer, chain := c.signer, c.chain
	anchor := c.roots[0]
	for _, r := range c.roots {
		if r == signer {
			anchor = r
		}
	}
	c.mu.RUnlock()
	now := c.now()
	notAfter := now.Add(c.leafTTL)
	if notAfter.After(signer.cert.NotAfter) {
		notAfter = signer.cert.NotAfter
	}
	serial := randSerial()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"weft"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.cert, csr.PublicKey, signer.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	out := &Issued{Chain: [][]byte{der}, SPIFFEID: id, Serial: serial.Text(16), NotAfter: notAfter, Issuer: fingerprint(anchor)}
	for _, x := range chain {
		out.Chain = append(out.Chain, x.Raw)
	}
	return out, nil
}
