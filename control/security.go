package control

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/security/ca"
	"github.com/weftmesh/weft/security/mtls"
	"github.com/weftmesh/weft/store"
)

// SecurityConfig is the control plane's side of mesh identity.
type SecurityConfig struct {
	// TrustDomain of every SPIFFE ID issued (default weft.local).
	TrustDomain string
	// CACert and CAKey: the user's CA (e.g. an intermediate); empty: a
	// root made on first start and kept in the store.
	CACert, CAKey string
	// CertTTL is the lifetime of workload certificates (default 24h).
	CertTTL time.Duration
	// MTLS is the mesh-wide mode handed to sidecars: "strict" (default:
	// inbound ports take mutual TLS only), "permissive" (mutual TLS or
	// plaintext, for migration) or "off" (sidecars dial each other in
	// plaintext: benchmarks and migrations only). Strict also makes the
	// control plane refuse to register an instance whose stream has no
	// certificate.
	MTLS string
	// APIAuth makes the whole JSON API require a token (see withAuth).
	APIAuth bool
	// BrokerAuth makes the embedded broker require a password that only
	// sidecars holding a certificate are given.
	BrokerAuth bool
	// ControlTLS is TLS on the gRPC port (the sidecars' stream), with a
	// certificate of the mesh CA (spiffe://TD/control): "auto" (default)
	// when the port is not bound to loopback, "on", "off".
	ControlTLS string
	// APITLS is TLS on the HTTP API, with the same certificate: "auto"
	// (default) when the port is not bound to loopback (see tlsOn), "on",
	// "off".
	APITLS string
}

// Hello settings of mesh identity.
const (
	SettingMTLSMode    = "mtls_mode"
	SettingTrustDomain = "trust_domain"
)

// security holds the CA and what it issued to the connected sidecars.
type security struct {
	ca *ca.CA
	// broker is the broker access with credentials, handed out with
	// certificates; zero when the Hello's URL is all there is.
	broker messaging.Access
	// otlpToken goes with certificates when sidecars export spans to
	// this control plane's receiver (Certificate.otlp_token).
	otlpToken string

	mu     sync.Mutex
	issued map[any]*CertJSON // by stream
	// The control plane's own certificate, reissued at half-life, for
	// the gRPC port and the HTTPS API; its host names and IPs besides
	// the SPIFFE ID, so that curl --cacert and browsers verify it too.
	ctlCert  *tls.Certificate
	ctlRenew time.Time
	dnsNames []string
	ips      []net.IP
}

// serverNames are the names the control plane is reached by: localhost,
// this host's name, loopback, and the IPs its listeners are bound to.
func serverNames(lns ...net.Listener) ([]string, []net.IP) {
	dns := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		dns = append(dns, h)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, ln := range lns {
		if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsUnspecified() && !ta.IP.IsLoopback() {
			ips = append(ips, ta.IP)
		}
		if ta, ok := ln.Addr().(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
			if addrs, err := net.InterfaceAddrs(); err == nil {
				for _, a := range addrs {
					if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && len(ips) < 32 {
						ips = append(ips, n.IP)
					}
				}
			}
		}
	}
	return dns, ips
}

// controlCertificate is the gRPC port's certificate.
func (sec *security) controlCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	sec.mu.Lock()
	defer sec.mu.Unlock()
	if sec.ctlCert != nil && time.Now().Before(sec.ctlRenew) {
		return sec.ctlCert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	is, err := sec.ca.SignServer(csr, "spiffe://"+sec.ca.TrustDomain()+mtls.ControlPath, sec.dnsNames, sec.ips)
	if err != nil {
		return nil, err
	}
	sec.ctlCert = &tls.Certificate{Certificate: is.Chain, PrivateKey: key}
	sec.ctlRenew = time.Now().Add(time.Until(is.NotAfter) / 2)
	return sec.ctlCert, nil
}

// grpcTLS says whether the gRPC port serves TLS.
func (s *Server) grpcTLS() bool { return tlsOn(s.cfg.Security.ControlTLS, s.grpcLn) }

// APITLS says whether the HTTP API serves TLS.
func (s *Server) APITLS() bool { return tlsOn(s.cfg.Security.APITLS, s.httpLn) }

// APIURL is the API's base URL, as the CLI's --server takes it.
func (s *Server) APIURL() string {
	if s.APITLS() {
		return "https://" + s.HTTPAddr()
	}
	return "http://" + s.HTTPAddr()
}

// tlsOn decides a listener's TLS: on, off, or auto — on unless it is
// bound to loopback only. Why not on loopback: only this machine reaches
// it, where TLS would hide nothing from anyone who can read the token
// file; and a browser on http://127.0.0.1 is in a secure context, where
// the mesh CA (in no browser's trust store) would be a certificate warning.
func tlsOn(mode string, ln net.Listener) bool {
	switch mode {
	case "on":
		return true
	case "off":
		return false
	}
	ta, ok := ln.Addr().(*net.TCPAddr)
	return !ok || !ta.IP.IsLoopback()
}

// CertJSON is one issued workload certificate, as `weft get certs` shows it.
type CertJSON struct {
	Service   string    `json:"service"`
	Namespace string    `json:"namespace"`
	Instance  string    `json:"instance,omitempty"`
	SPIFFEID  string    `json:"spiffeId"`
	Serial    string    `json:"serial"`
	NotAfter  time.Time `json:"notAfter"`
	IssuedAt  time.Time `json:"issuedAt"`
	Issuer    string    `json:"issuer"` // fingerprint of the root it chains to
}

// CertsJSON is GET /api/v1/certs.
type CertsJSON struct {
	TrustDomain string     `json:"trustDomain"`
	Mode        string     `json:"mtlsMode"`
	Roots       []ca.Root  `json:"roots"`
	Certs       []CertJSON `json:"certs"`
}

func (s *Server) newSecurity() error {
	c := s.cfg.Security
	if c.MTLS == "" {
		c.MTLS = "strict"
	}
	if _, err := mtls.ParseMode(c.MTLS); err != nil {
		return fmt.Errorf("--mtls %q: %w", c.MTLS, err)
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"--control-tls", &c.ControlTLS}, {"--api-tls", &c.APITLS}} {
		switch *f.v {
		case "":
			*f.v = "auto"
		case "auto", "on", "off":
		default:
			return fmt.Errorf("%s %q: want auto, on or off", f.name, *f.v)
		}
	}
	var st ca.Store
	if b, ok := s.store.(*store.Bolt); ok {
		st = b
	}
	authority, err := ca.New(ca.Config{TrustDomain: c.TrustDomain, LeafTTL: c.CertTTL, CertFile: c.CACert, KeyFile: c.CAKey, Store: st})
	if err != nil {
		return err
	}
	s.cfg.Security = c
	s.sec = &security{ca: authority, issued: map[any]*CertJSON{}}
	s.sec.dnsNames, s.sec.ips = serverNames(s.grpcLn, s.httpLn)
	s.cfg.Settings[SettingMTLSMode] = c.MTLS
	s.cfg.Settings[SettingTrustDomain] = authority.TrustDomain()
	return s.newTokens()
}

// CA is the mesh's certificate authority.
func (s *Server) CA() *ca.CA { return s.sec.ca }

// issue answers a sidecar's CSR. claimed is the service this stream has
// claimed so far ("" before its first certificate or registration); the
// answer's identity is the stream's for good.
func (sec *security) issue(req *pb.CertificateRequest, claimed string, key any, instance string) (*pb.Certificate, string, error) {
	svc := req.GetService()
	if err := resource.ValidateName(svc); err != nil {
		return nil, "", fmt.Errorf("csr: service: %w", err)
	}
	if claimed != "" && claimed != svc {
		return nil, "", fmt.Errorf("csr: this stream is service %q; it cannot ask for %q", claimed, svc)
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = mtls.DefaultNamespace
	}
	if err := resource.ValidateName(ns); err != nil {
		return nil, "", fmt.Errorf("csr: namespace: %w", err)
	}
	if len(req.GetCsrDer()) > 8<<10 {
		return nil, "", errors.New("csr: larger than 8 KiB")
	}
	id := mtls.ID{TrustDomain: sec.ca.TrustDomain(), Namespace: ns, Service: svc}
	gen := sec.ca.Generation() // before signing: a switch meanwhile makes the sidecar ask again
	is, err := sec.ca.Sign(req.GetCsrDer(), id.String())
	if err != nil {
		return nil, "", err
	}
	sec.mu.Lock()
	sec.issued[key] = &CertJSON{Service: svc, Namespace: ns, Instance: instance, SPIFFEID: is.SPIFFEID, Serial: is.Serial,
		NotAfter: is.NotAfter, IssuedAt: time.Now().UTC(), Issuer: is.Issuer}
	sec.mu.Unlock()
	c := &pb.Certificate{ChainDer: is.Chain, TrustBundleDer: sec.ca.Bundle(), TrustDomain: sec.ca.TrustDomain(), SpiffeId: is.SPIFFEID,
		Generation: gen, OtlpToken: sec.otlpToken}
	if sec.broker.URLs != "" {
		// broker_url too, for a sidecar of an older version: with the
		// credentials as userinfo only for one that reads no others
		// (enough for the embedded broker's password).
		c.BrokerUrl, c.BrokerAccess = sec.broker.URLs, sec.broker.Proto()
		if !req.GetReadsBrokerAccess() {
			c.BrokerUrl = legacyBrokerURL(sec.broker)
		}
	}
	return c, svc, nil
}

// registered notes the instance id of a stream's certificate.
func (sec *security) registered(key any, instance string) {
	sec.mu.Lock()
	if c := sec.issued[key]; c != nil {
		c.Instance = instance
	}
	sec.mu.Unlock()
}

func (sec *security) forget(key any) {
	sec.mu.Lock()
	delete(sec.issued, key)
	sec.mu.Unlock()
}

func (sec *security) bundleMessage() *pb.Certificate {
	return &pb.Certificate{TrustBundleDer: sec.ca.Bundle(), TrustDomain: sec.ca.TrustDomain(), Generation: sec.ca.Generation()}
}

// issuedBy counts the connected sidecars' certificates chaining to a root.
func (sec *security) issuedBy(fp string) int {
	sec.mu.Lock()
	defer sec.mu.Unlock()
	n := 0
	for _, c := range sec.issued {
		if c.Issuer == fp {
			n++
		}
	}
	return n
}

func (s *Server) securityRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/certs", s.getCerts)
	mux.HandleFunc("GET /api/v1/ca/bundle", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(s.sec.ca.BundlePEM())
	})
	// Root rotation, one step per call: add (a new root joins the bundle),
	// switch (it signs from now on), remove (the old one leaves the bundle).
	mux.HandleFunc("POST /api/v1/ca/rotate", s.rotateCA)
	s.tokenRoutes(mux)
	s.loginRoutes(mux)
}

func (s *Server) getCerts(w http.ResponseWriter, r *http.Request) {
	sec := s.sec
	out := CertsJSON{TrustDomain: sec.ca.TrustDomain(), Mode: s.cfg.Security.MTLS, Roots: sec.ca.Roots(), Certs: []CertJSON{}}
	sec.mu.Lock()
	for _, c := range sec.issued {
		out.Certs = append(out.Certs, *c)
	}
	sec.mu.Unlock()
	sort.Slice(out.Certs, func(i, j int) bool {
		a, b := out.Certs[i], out.Certs[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		return a.Instance < b.Instance
	})
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) rotateCA(w http.ResponseWriter, r *http.Request) {
	step, fp := r.URL.Query().Get("step"), r.URL.Query().Get("fingerprint")
	var err error
	switch step {
	case "add":
		fp, err = s.sec.ca.AddRoot()
	case "switch":
		err = s.sec.ca.SwitchSigner(fp)
	case "remove":
		if n := s.sec.issuedBy(fp); n > 0 && r.URL.Query().Get("force") != "true" {
			writeJSON(w, http.StatusConflict, ErrorJSON{Error: fmt.Sprintf("%d connected sidecar(s) still hold certificates of this root; wait for them to be reissued (or force=true)", n)})
			return
		}
		err = s.sec.ca.RemoveRoot(fp)
	default:
		writeJSON(w, http.StatusBadRequest, ErrorJSON{Error: fmt.Sprintf("step %q: want add, switch or remove", step)})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusConflict, ErrorJSON{Error: err.Error()})
		return
	}
	if step == "switch" { // the control plane's own certificate comes from the new signer too
		s.sec.mu.Lock()
		s.sec.ctlCert = nil
		s.sec.mu.Unlock()
	}
	s.writeBundles() // the files the CLI and sidecars here verify by
	writeJSON(w, http.StatusOK, map[string]any{"step": step, "fingerprint": fp, "roots": s.sec.ca.Roots()})
}

// DataDir is where the store, the local token file and ca.pem are.
func (s *Server) DataDir() string { return s.cfg.DataDir }
