// Package mtls is the sidecar's side of mesh identity: it holds the
// instance's X.509 SVID and the trust bundle (each behind an atomic
// pointer, swapped on renewal or rotation without touching open
// connections), verifies peers' SVIDs, and makes the TLS configurations,
// listener and dialer every sidecar-to-sidecar connection goes through.
//
// Verification is SPIFFE X.509-SVID style: a peer must present a leaf that
// chains to a root of the current bundle, is within its validity, is not a
// CA, allows digital signatures and the right extended key usage, and holds
// exactly one spiffe:// URI SAN of this mesh's trust domain in Weft's
// /ns/<namespace>/sa/<service> shape. Hostnames are not checked: the
// identity is the URI.
package mtls

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons a handshake is refused; the label of the failure metric.
const (
	ReasonNoCertificate    = "no_certificate"
	ReasonUnknownAuthority = "unknown_authority"
	ReasonExpired          = "expired"
	ReasonNotYetValid      = "not_yet_valid"
	ReasonNoSPIFFEID       = "no_spiffe_id"
	ReasonTrustDomain      = "wrong_trust_domain"
	ReasonKeyUsage         = "wrong_key_usage"
	ReasonCAAsLeaf         = "ca_as_leaf"
	ReasonPlaintext        = "plaintext"
	ReasonHandshake        = "handshake" // protocol errors, timeouts, no shared version
	ReasonNoIdentity       = "no_local_identity"
)

// Reasons lists every reason, for metrics.
var Reasons = []string{ReasonNoCertificate, ReasonUnknownAuthority, ReasonExpired, ReasonNotYetValid,
	ReasonNoSPIFFEID, ReasonTrustDomain, ReasonKeyUsage, ReasonCAAsLeaf, ReasonPlaintext, ReasonHandshake, ReasonNoIdentity}

// VerifyError is a refused peer certificate, with the reason.
type VerifyError struct {
	Reason string
	Err    error
}

func (e *VerifyError) Error() string {
	return "peer certificate refused (" + e.Reason + "): " + e.Err.Error()
}
func (e *VerifyError) Unwrap() error { return e.Err }

// ErrNoIdentity: this sidecar has no certificate yet.
var ErrNoIdentity = errors.New("no workload certificate yet (waiting for the control plane's CA)")

// Source is one sidecar's identity and trust. Safe for concurrent use.
type Source struct {
	td  atomic.Pointer[string]
	now func() time.Time

	cert     atomic.Pointer[tls.Certificate] // own SVID, Leaf set
	roots    atomic.Pointer[x509.CertPool]
	bundle   atomic.Pointer[[][]byte]     // the DER of roots
	sessions atomic.Pointer[sessionCache] // client sessions; replaced when trust changes

	// ticketKeys are installed in every server config made; replaced with
	// the bundle so resumed sessions of a removed root's leaves end.
	server atomic.Pointer[tls.Config]

	ready     chan struct{} // closed at the first certificate
	readyOnce sync.Once

	failures map[string]*atomic.Int64
	// Handshakes counts verified TLS handshakes (full or resumed);
	// Resumed the resumed ones; Plaintext the connections a permissive
	// listener took without TLS.
	Handshakes, Resumed, Plaintext atomic.Int64
}

type sessionCache struct{ tls.ClientSessionCache }

// New returns a Source for the trust domain, with no certificate and an
// empty bundle (everything refused until both arrive).
func New(trustDomain string) *Source {
	s := &Source{now: time.Now, failures: map[string]*atomic.Int64{}, ready: make(chan struct{})}
	for _, r := range Reasons {
		s.failures[r] = new(atomic.Int64)
	}
	s.td.Store(&trustDomain)
	s.roots.Store(x509.NewCertPool())
	s.sessions.Store(&sessionCache{tls.NewLRUClientSessionCache(1024)})
	return s
}

// SetClock replaces time.Now (tests).
func (s *Source) SetClock(now func() time.Time) { s.now = now }

// TrustDomain is the mesh's trust domain.
func (s *Source) TrustDomain() string { return *s.td.Load() }

// SetTrustDomain changes the trust domain (the control plane says it
// with the bundle).
func (s *Source) SetTrustDomain(td string) { s.td.Store(&td) }

// SetBundle replaces the trust bundle (DER roots). Sessions cached under
// the old bundle are forgotten on both sides, so a resumed session cannot
// outlive a removed root.
func (s *Source) SetBundle(roots [][]byte) error {
	_, err := s.UpdateBundle(roots)
	return err
}

// UpdateBundle is SetBundle that does nothing when the roots are the ones
// installed, and says whether they changed.
func (s *Source) UpdateBundle(roots [][]byte) (bool, error) {
	if len(roots) == 0 {
		return false, errors.New("trust bundle: no roots")
	}
	if cur := s.bundle.Load(); cur != nil && sameDER(*cur, roots) {
		return false, nil
	}
	if err := s.setBundle(roots); err != nil {
		return false, err
	}
	return true, nil
}

func sameDER(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if string(a[i]) != string(b[i]) {
			return false
		}
	}
	return true
}

func (s *Source) setBundle(roots [][]byte) error {
	pool := x509.NewCertPool()
	for i, der := range roots {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("trust bundle: root %d: %w", i, err)
		}
		pool.AddCert(c)
	}
	s.roots.Store(pool)
	cp := append([][]byte(nil), roots...)
	s.bundle.Store(&cp)
	s.sessions.Store(&sessionCache{tls.NewLRUClientSessionCache(1024)})
	if sc := s.server.Load(); sc != nil {
		var k [32]byte
		_, _ = rand.Read(k[:])
		sc.SetSessionTicketKeys([][32]byte{k})
	}
	return nil
}

// SetCertificate installs the instance's SVID (leaf first, then
// intermediates) with its private key. New handshakes use it at once;
// open connections keep theirs.
func (s *Source) SetCertificate(chain [][]byte, key crypto.Signer) error {
	if len(chain) == 0 {
		return errors.New("certificate: empty chain")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	if _, err := idOf(leaf); err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	s.cert.Store(&tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf})
	s.readyOnce.Do(func() { close(s.ready) })
	return nil
}

// Ready is closed once the first certificate is installed.
func (s *Source) Ready() <-chan struct{} { return s.ready }

// Certificate is the current SVID's leaf, nil before the first.
func (s *Source) Certificate() *x509.Certificate {
	if c := s.cert.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

// HasIdentity reports whether a certificate and a bundle are installed.
func (s *Source) HasIdentity() bool { return s.cert.Load() != nil }

// Failures returns the refused handshakes counted under reason.
func (s *Source) Failures(reason string) int64 {
	if c := s.failures[reason]; c != nil {
		return c.Load()
	}
	return 0
}

func (s *Source) fail(reason string) {
	if c := s.failures[reason]; c != nil {
		c.Add(1)
	}
}

// reasonOf maps a handshake error to its metric reason.
func reasonOf(err error) string {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	if errors.Is(err, ErrNoIdentity) {
		return ReasonNoIdentity
	}
	return ReasonHandshake
}

// Verify checks a peer's certificates (leaf first) for the given use:
// x509.ExtKeyUsageClientAuth when this side is the server, ServerAuth when
// it is the client. It returns the peer's identity.
func (s *Source) Verify(certs []*x509.Certificate, usage x509.ExtKeyUsage) (ID, error) {
	if len(certs) == 0 {
		return ID{}, &VerifyError{ReasonNoCertificate, errors.New("the peer sent no certificate")}
	}
	leaf := certs[0]
	if leaf.IsCA {
		return ID{}, &VerifyError{ReasonCAAsLeaf, errors.New("the leaf is a CA certificate")}
	}
	id, err := idOf(leaf)
	if err != nil {
		return ID{}, &VerifyError{ReasonNoSPIFFEID, err}
	}
	if td := s.TrustDomain(); id.TrustDomain != td {
		return ID{}, &VerifyError{ReasonTrustDomain, fmt.Errorf("%s is not of trust domain %s", id, td)}
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return ID{}, &VerifyError{ReasonKeyUsage, errors.New("leaf key usage must be digitalSignature and not certSign/cRLSign")}
	}
	if !hasEKU(leaf, usage) {
		return ID{}, &VerifyError{ReasonKeyUsage, fmt.Errorf("leaf lacks the extended key usage for %s", ekuName(usage))}
	}
	now := s.now()
	if now.Before(leaf.NotBefore) {
		return ID{}, &VerifyError{ReasonNotYetValid, fmt.Errorf("valid from %s", leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	if now.After(leaf.NotAfter) {
		return ID{}, &VerifyError{ReasonExpired, fmt.Errorf("expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))}
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.roots.Load(), Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		var cie x509.CertificateInvalidError
		if errors.As(err, &cie) && cie.Reason == x509.Expired {
			return ID{}, &VerifyError{ReasonExpired, err}
		}
		return ID{}, &VerifyError{ReasonUnknownAuthority, err}
	}
	return id, nil
}

func hasEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == want || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func ekuName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageClientAuth {
		return "clientAuth"
	}
	return "serverAuth"
}

// idOf is the leaf's one SPIFFE URI SAN as a Weft ID.
func idOf(c *x509.Certificate) (ID, error) {
	var found []string
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, u.String())
		}
	}
	if len(found) != 1 {
		return ID{}, fmt.Errorf("want exactly one spiffe:// URI SAN, found %d", len(found))
	}
	return ParseID(found[0])
}

// ALPN protocols spoken between sidecars.
const (
	ALPNHTTP1 = "http/1.1"
	ALPNH2    = "h2"
)

// ServerConfig is the inbound listener's TLS configuration: TLS 1.3, a
// client certificate required and verified, ALPN h2 and http/1.1, session
// tickets on (resumption), the current SVID at each handshake.
func (s *Source) ServerConfig() *tls.Config {
	if c := s.server.Load(); c != nil {
		return c
	}
	c := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPNH2, ALPNHTTP1},
		// One record per Write from the first one on (see ClientConfig).
		DynamicRecordSizingDisabled: true,
		// The chain is verified in VerifyConnection against the bundle of
		// the moment (it changes at rotation), on full and resumed
		// handshakes alike; a missing certificate is refused there too, so
		// it is counted under its own reason.
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.cert.Load(); c != nil {
				return c, nil
			}
			return nil, ErrNoIdentity
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := s.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
	if !s.server.CompareAndSwap(nil, c) {
		return s.server.Load()
	}
	return c
}

// ClientConfig is the TLS configuration for dialling another sidecar with
// one ALPN protocol (the one the connection will speak).
func (s *Source) ClientConfig(alpn string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpn},
		// Go's dynamic record sizing cuts the first writes of a connection
		// into MSS-sized records (1,186 bytes of payload, then growing, up
		// to 128 KiB sent), which helps a browser decrypt its first bytes
		// early over a slow link and costs a sidecar a second record, seal
		// and write(2) for the first answers (head and 1 KiB body, ~1.2 KB)
		// of every new connection. Sidecar to sidecar, one record per
		// engine Write (proxy/h1 coalesces head and body) is the cheaper
		// shape; nothing about the protection changes.
		DynamicRecordSizingDisabled: true,
		// Hostname verification is replaced by SPIFFE verification below.
		InsecureSkipVerify: true,
		ClientSessionCache: s.sessions.Load(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := s.cert.Load(); c != nil {
				return c, nil
			}
			return nil, ErrNoIdentity
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := s.Verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}
