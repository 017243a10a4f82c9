package sidecar

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/security/ca"
	"github.com/weftmesh/weft/security/mtls"
	"github.com/weftmesh/weft/security/token"
)

// Hello settings of mesh identity (as in package control).
const (
	SettingMTLSMode    = "mtls_mode"
	SettingTrustDomain = "trust_domain"
)

// identity gets and renews this instance's workload certificate: it makes
// a key, sends a CSR over the control-plane stream (the key never leaves
// the process), installs the answer in the mtls.Source, and renews at half
// the certificate's life. Renewal swaps a pointer: open connections keep
// the certificate they were made with.
type identity struct {
	src       *mtls.Source
	disc      *discovery.Client
	service   string
	namespace string
	token     string // --token, or "": $WEFT_TOKEN, --token-file, the local token file
	tokenFile string
	control   string // whose local token file
	log       *slog.Logger

	certGen  atomic.Uint64 // the CA generation the certificate was issued under
	svcMode  atomic.Pointer[mtls.Mode]
	cur      atomic.Pointer[keyed] // the installed certificate's key
	renewing atomic.Bool           // renew waits for answers
	// broker is the broker access with credentials, from the certificate
	// answer (weft control --broker-auth or --nats-*); nil: the Hello's URL.
	broker atomic.Pointer[messaging.Access]
	// otlpToken is what the control plane's OTLP receiver wants, from the
	// certificate answer ("" when the Hello names another receiver).
	otlpToken atomic.Pointer[string]
	listener  *mtls.Listener // set in Run before serving; its mode follows the mesh
	hello     chan struct{}  // a stream said Hello
	reissue   chan struct{}  // the trust bundle changed
	answers   chan *pb.Certificate

	dialOnce sync.Once
	dial     *mtls.Dialer
}

func newIdentity(service, namespace, token string, log *slog.Logger) *identity {
	if namespace == "" {
		namespace = mtls.DefaultNamespace
	}
	return &identity{src: mtls.New(ca.DefaultTrustDomain), service: service, namespace: namespace, token: token, log: log,
		hello: make(chan struct{}, 1), reissue: make(chan struct{}, 1), answers: make(chan *pb.Certificate, 4)}
}

// mode is this service's inbound mode: its PeerAuthentication's, else the
// mesh's as the control plane says.
func (id *identity) mode() mtls.Mode {
	if p := id.svcMode.Load(); p != nil {
		return *p
	}
	return id.meshMode()
}

// meshMode is the mesh-wide mode the control plane says (strict until it
// has said one).
func (id *identity) meshMode() mtls.Mode {
	m, err := mtls.ParseMode(id.disc.Setting(SettingMTLSMode))
	if err != nil {
		return mtls.Strict // a mode this build does not know: the safe one
	}
	return m
}

// setServiceMode installs (nil: removes) the service's PeerAuthentication
// mode.
func (id *identity) setServiceMode(m *mtls.Mode) {
	id.svcMode.Store(m)
	if l := id.listener; l != nil {
		l.SetMode(id.mode())
	}
}

// onHello runs on the discovery receive loop.
func (id *identity) onHello() {
	if td := id.disc.Setting(SettingTrustDomain); td != "" {
		id.src.SetTrustDomain(td)
	}
	if l := id.listener; l != nil {
		l.SetMode(id.mode())
	}
	select {
	case id.hello <- struct{}{}:
	default:
	}
}

// onCertificate runs on the discovery receive loop.
func (id *identity) onCertificate(c *pb.Certificate) {
	if len(c.ChainDer) == 0 && c.Error == "" {
		// A root rotation, or another control plane: trust the new bundle
		// now.
		if c.TrustDomain != "" {
			id.src.SetTrustDomain(c.TrustDomain)
		}
		changed, err := id.src.UpdateBundle(c.TrustBundleDer)
		if err != nil {
			id.log.Warn("trust bundle from the control plane refused", "err", err)
			return
		}
		// A new bundle, or a new signer (a rotation's switch): reissue.
		if id.src.Certificate() == nil || (!changed && c.Generation == id.certGen.Load()) {
			return
		}
		id.log.Info("trust bundle updated", "roots", len(c.TrustBundleDer))
		select {
		case id.reissue <- struct{}{}: // the signer may have changed: reissue
		default:
		}
		return
	}
	if id.renewing.Load() {
		select {
		case id.answers <- c:
		default:
		}
		return
	}
	// The answer to a stream's greeting.
	if c.Error != "" {
		id.log.Warn("the control plane refused this instance's certificate", "err", c.Error)
		return
	}
	if cur := id.cur.Load(); cur != nil && forKey(c, cur.key) {
		if err := id.install(c, cur); err != nil {
			id.log.Warn("certificate from the control plane not installed", "err", err)
		}
	}
}

// run keeps a valid certificate until ctx ends.
func (id *identity) run(ctx context.Context) {
	var renewAt time.Time // zero: no certificate yet
	retry := 200 * time.Millisecond
	for {
		if renewAt.IsZero() && !id.disc.Connected() {
			select {
			case <-ctx.Done():
				return
			case <-id.hello:
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if !renewAt.IsZero() {
			t := time.NewTimer(time.Until(renewAt))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-id.reissue:
				t.Stop()
			case <-id.hello:
				t.Stop()
				if id.issuerTrusted() {
					continue // a reconnect: the certificate is still good
				}
			}
		}
		notAfter, notBefore, err := id.renew(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			id.log.Warn("workload certificate not issued; retrying", "err", err, "retry_in", retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, 10*time.Second)
			if !renewAt.IsZero() {
				renewAt = time.Now()
			}
			continue
		}
		retry = 200 * time.Millisecond
		life := notAfter.Sub(notBefore)
		// Half-life, with a little jitter so a fleet does not renew at once.
		renewAt = notBefore.Add(life/2 + time.Duration(mrand.Int64N(int64(life/20)+1)))
	}
}

// issuerTrusted reports whether the current certificate still chains to
// the bundle (after a rotation's last step it does not: reissue).
func (id *identity) issuerTrusted() bool {
	leaf := id.src.Certificate()
	_, err := id.src.Verify([]*x509.Certificate{leaf}, x509.ExtKeyUsageClientAuth)
	return err == nil
}

// keyed is a private key and the CSR made for it.
type keyed struct {
	key *ecdsa.PrivateKey
	csr []byte
}

func newKeyed() (*keyed, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	return &keyed{key: key, csr: csr}, nil
}

func (id *identity) request(k *keyed) (*pb.CertificateRequest, error) {
	tok, err := token.Resolve(id.token, id.tokenFile, id.control)
	if err != nil {
		return nil, err
	}
	return &pb.CertificateRequest{CsrDer: k.csr, Service: id.service, Namespace: id.namespace, Token: tok, ReadsBrokerAccess: true}, nil
}

// greeting is the first message of every stream once the instance has a
// certificate: a CSR for its current key, so that the control plane (a
// restarted one, too) knows which service the stream may register before
// the registration that follows it. Its answer is installed by
// onCertificate.
func (id *identity) greeting() *pb.SidecarMessage {
	cur := id.cur.Load()
	if cur == nil {
		return nil
	}
	req, err := id.request(cur)
	if err != nil {
		return nil
	}
	return &pb.SidecarMessage{Msg: &pb.SidecarMessage_Csr{Csr: req}}
}

// forKey reports whether a certificate answer is for key.
func forKey(c *pb.Certificate, key *ecdsa.PrivateKey) bool {
	if len(c.ChainDer) == 0 {
		return false
	}
	leaf, err := x509.ParseCertificate(c.ChainDer[0])
	if err != nil {
		return false
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	return ok && pub.Equal(&key.PublicKey)
}

// install puts a certificate answer for k in place.
func (id *identity) install(c *pb.Certificate, k *keyed) error {
	if c.TrustDomain != "" {
		id.src.SetTrustDomain(c.TrustDomain)
	}
	if err := id.src.SetBundle(c.TrustBundleDer); err != nil {
		return err
	}
	if err := id.src.SetCertificate(c.ChainDer, k.key); err != nil {
		return err
	}
	id.cur.Store(k)
	id.certGen.Store(c.Generation)
	if a, ok := certBroker(c); ok {
		id.broker.Store(&a)
	}
	tok := c.GetOtlpToken()
	id.otlpToken.Store(&tok)
	leaf := id.src.Certificate()
	id.log.Info("workload certificate issued", "spiffe_id", c.SpiffeId, "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// renew makes a key and a CSR and waits for the answer.
func (id *identity) renew(ctx context.Context) (notAfter, notBefore time.Time, err error) {
	k, err := newKeyed()
	if err != nil {
		return
	}
	req, err := id.request(k)
	if err != nil {
		return
	}
	id.renewing.Store(true)
	defer id.renewing.Store(false)
	for len(id.answers) > 0 {
		<-id.answers
	}
	if !id.disc.RequestCertificate(req) {
		err = errors.New("not connected to the control plane")
		return
	}
	timeout := time.After(10 * time.Second)
	for {
		var c *pb.Certificate
		select {
		case c = <-id.answers:
		case <-timeout:
			err = errors.New("the control plane did not answer the CSR within 10s")
			return
		case <-ctx.Done():
			err = ctx.Err()
			return
		}
		if c.Error != "" {
			err = fmt.Errorf("control plane refused: %s", c.Error)
			return
		}
		if !forKey(c, k.key) {
			// The answer to a stream's greeting, for the current key.
			if cur := id.cur.Load(); cur != nil && forKey(c, cur.key) {
				_ = id.install(c, cur)
			}
			continue
		}
		if err = id.install(c, k); err != nil {
			return
		}
		leaf := id.src.Certificate()
		return leaf.NotAfter, leaf.NotBefore, nil
	}
}

// dialer is the outbound side: mTLS to every other sidecar; before the
// first certificate, plaintext in a permissive mesh, a wait in a strict
// one; plaintext always with the mesh's --mtls off. One per sidecar, so
// its bound on handshakes per destination holds for every caller.
func (id *identity) dialer() *mtls.Dialer {
	id.dialOnce.Do(func() {
		id.dial = &mtls.Dialer{Source: id.src,
			Plaintext: func() bool { return id.mode() != mtls.Strict },
			Disabled:  func() bool { return id.meshMode() == mtls.Off },
		}
		if id.disc != nil {
			id.dial.PlainAddr = id.disc.Unmeshed
		}
	})
	return id.dial
}

// IdentityView is GET /identity on the admin listener.
type IdentityView struct {
	SPIFFEID    string           `json:"spiffeId,omitempty"`
	Serial      string           `json:"serial,omitempty"`
	NotBefore   time.Time        `json:"notBefore,omitzero"`
	NotAfter    time.Time        `json:"notAfter,omitzero"`
	TrustDomain string           `json:"trustDomain"`
	Mode        string           `json:"mtlsMode"`
	Handshakes  int64            `json:"handshakes"`
	Resumed     int64            `json:"resumed"`
	Plaintext   int64            `json:"plaintextAccepted"`
	Failures    map[string]int64 `json:"handshakeFailures"`
}

func (id *identity) view() IdentityView {
	v := IdentityView{TrustDomain: id.src.TrustDomain(), Mode: id.mode().String(),
		Handshakes: id.src.Handshakes.Load(), Resumed: id.src.Resumed.Load(), Plaintext: id.src.Plaintext.Load(), Failures: map[string]int64{}}
	if leaf := id.src.Certificate(); leaf != nil {
		if len(leaf.URIs) == 1 {
			v.SPIFFEID = leaf.URIs[0].String()
		}
		v.Serial, v.NotBefore, v.NotAfter = leaf.SerialNumber.Text(16), leaf.NotBefore, leaf.NotAfter
	}
	for _, r := range mtls.Reasons {
		if n := id.src.Failures(r); n > 0 {
			v.Failures[r] = n
		}
	}
	return v
}

func (id *identity) serveView(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(id.view())
}

// fastDial is the HTTP/1.1 engine's upstream dial on the outbound (its
// DialWait): mTLS to other sidecars (the only upstreams it has; the
// sidecar's own API is served on the app's connection). A dial waiting for
// a handshake slot gives way to a pooled connection coming back
// (mtls.Dialer.DialUnlessFreed); a request's last write waits for the
// reply (mtls.ReplyConn, proxy/h1.ReplyAwaiter).
func (s *Sidecar) fastDial() func(addr string, freed <-chan struct{}) (net.Conn, error) {
	d := s.id.dialer()
	return func(addr string, freed <-chan struct{}) (net.Conn, error) {
		return d.DialHTTP1(context.Background(), "tcp", addr, freed)
	}
}

// h2Dial connects the native h2 engine to other sidecars: mTLS offering
// ALPN h2.
func (s *Sidecar) h2Dial() func(ctx context.Context, addr string) (net.Conn, error) {
	d := s.id.dialer()
	return func(ctx context.Context, addr string) (net.Conn, error) {
		return d.Dial(ctx, "tcp", addr, mtls.ALPNH2)
	}
}

// waitIdentity holds the first registration until the instance has its
// certificate and its authorization policies: an instance callers cannot
// verify, or that would serve before knowing who may call it, must not get
// traffic (and one the control plane refuses a certificate never joins).
// False when ctx ended first.
func (s *Sidecar) waitIdentity(ctx context.Context) bool {
	if !s.id.src.HasIdentity() {
		s.log.Info("app ready; waiting for the workload certificate before registering")
	}
	for _, ch := range []<-chan struct{}{s.id.src.Ready(), s.policiesReady} {
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// certBroker is the broker access a certificate answer carries:
// broker_access, or from a control plane of an older version the bare
// broker_url; ok is false when it carries none (the Hello's URL is all).
func certBroker(c *pb.Certificate) (a messaging.Access, ok bool) {
	if c.BrokerAccess != nil {
		return messaging.AccessFromProto(c.BrokerAccess), true
	}
	return messaging.URLAccess(c.BrokerUrl), c.BrokerUrl != ""
}

// brokerAccess is what messaging connects with: the credentials once the
// control plane gave them, else the Hello's URL.
func (s *Sidecar) brokerAccess() messaging.Access {
	if a := s.id.broker.Load(); a != nil {
		return *a
	}
	if !s.id.src.HasIdentity() {
		// The broker's credentials come with the certificate: dialling
		// before it only earns an authorization violation.
		return messaging.Access{}
	}
	return messaging.URLAccess(s.disc.Setting(messaging.SettingBroker))
}

// controlTLS is the stream's TLS: by --ca-bundle, or by the local CA file
// of a control plane on this machine whose gRPC port is TLS; nil (plaintext)
// otherwise, with a warning when the control plane is not on loopback.
func controlTLS(cfg Config, log *slog.Logger) (*tls.Config, error) {
	if cfg.CABundle != "" {
		c, err := mtls.ControlClientConfigFile(cfg.CABundle)
		if err != nil {
			return nil, fmt.Errorf("--ca-bundle: %w", err)
		}
		return c, nil
	}
	if p, err := token.LocalFile(cfg.Control); err == nil {
		if c, err := mtls.ControlClientConfigFile(p + ".ca.pem"); err == nil {
			return c, nil
		}
	}
	host, _, _ := net.SplitHostPort(cfg.Control)
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		log.Warn("the stream to the control plane is plaintext and unauthenticated: pass --ca-bundle (the control plane's DATA-DIR/ca.pem) to verify it", "control", cfg.Control)
	}
	return nil, nil
}
