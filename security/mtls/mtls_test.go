package mtls

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// testCA is a root made by hand, so tests can mint leaves of every bad shape.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t testing.TB, td string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		URIs: []*url.URL{{Scheme: "spiffe", Host: td}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

func uri(s string) *url.URL { u, _ := url.Parse(s); return u }

// leafTmpl is a valid SVID template; cases change it.
func leafTmpl(id string) *x509.Certificate {
	return &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{uri(id)}, BasicConstraintsValid: true}
}

// mint signs tmpl with parent (nil: self-signed) and returns a usable pair.
func mint(t testing.TB, tmpl *x509.Certificate, parent *testCA) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pc, pk := tmpl, crypto.Signer(key)
	if parent != nil {
		pc, pk = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pc, key.Public(), pk)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

const td = "weft.local"

// server is a strict listener answering "ok\n" on every accepted connection.
func server(t *testing.T, src *Source, mode Mode) *Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(inner, src, mode, nil)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p, _ := PeerOf(c.RemoteAddr())
			_, _ = io.WriteString(c, "ok "+p.Principal+"\n")
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); l.Wait() })
	return l
}

func serverSource(t testing.TB, ca *testCA) *Source {
	src := New(td)
	if err := src.SetBundle([][]byte{ca.cert.Raw}); err != nil {
		t.Fatal(err)
	}
	c := mint(t, leafTmpl("spiffe://weft.local/ns/default/sa/orders"), ca)
	if err := src.SetCertificate(c.Certificate, c.PrivateKey.(crypto.Signer)); err != nil {
		t.Fatal(err)
	}
	return src
}

// call connects with cert (nil: none) and returns the first line read.
func call(addr string, cert *tls.Certificate) (string, error) {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{ALPNHTTP1}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(c).ReadString('\n')
}

func TestBadCertificatesRefused(t *testing.T) {
	ca := newTestCA(t, td)
	other := newTestCA(t, td)
	src := serverSource(t, ca)
	l := server(t, src, Strict)
	addr := l.Addr().String()

	good := mint(t, leafTmpl("spiffe://weft.local/ns/default/sa/web"), ca)
	if line, err := call(addr, &good); err != nil || line != "ok spiffe://weft.local/ns/default/sa/web\n" {
		t.Fatalf("valid SVID: %q, %v", line, err)
	}

	caAsLeaf := tls.Certificate{Certificate: [][]byte{ca.cert.Raw}, PrivateKey: ca.key}
	cases := []struct {
		name   string
		cert   func() *tls.Certificate
		reason string
	}{
		{"other CA", func() *tls.Certificate {
			c := mint(t, leafTmpl("spiffe://weft.local/ns/default/sa/web"), other)
			return &c
		}, ReasonUnknownAuthority},
		{"self-signed leaf", func() *tls.Certificate {
			c := mint(t, leafTmpl("spiffe://weft.local/ns/default/sa/web"), nil)
			return &c
		}, ReasonUnknownAuthority},
		{"expired", func() *tls.Certificate {
			tm := leafTmpl("spiffe://weft.local/ns/default/sa/web")
			tm.NotBefore, tm.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Minute)
			c := mint(t, tm, ca)
			return &c
		}, ReasonExpired},
		{"not yet valid", func() *tls.Certificate {
			tm := leafTmpl("spiffe://weft.local/ns/default/sa/web")
			tm.NotBefore = time.Now().Add(10 * time.Minute)
			c := mint(t, tm, ca)
			return &c
		}, ReasonNotYetValid},
		{"other trust domain", func() *tls.Certificate {
			c := mint(t, leafTmpl("spiffe://evil.example/ns/default/sa/web"), ca)
			return &c
		}, ReasonTrustDomain},
		{"no SPIFFE URI SAN", func() *tls.Certificate {
			tm := leafTmpl("spiffe://weft.local/ns/default/sa/web")
			tm.URIs, tm.DNSNames = nil, []string{"web"}
			c := mint(t, tm, ca)
			return &c
		}, ReasonNoSPIFFEID},
		{"two SPIFFE URI SANs", func() *tls.Certificate {
			tm := leafTmpl("spiffe://weft.local/ns/default/sa/web")
			tm.URIs = append(tm.URIs, uri("spiffe://weft.local/ns/default/sa/admin"))
			c := mint(t, tm, ca)
			return &c
		}, ReasonNoSPIFFEID},
		{"SPIFFE ID not of the /ns/N/sa/S shape", func() *tls.Certificate {
			c := mint(t, leafTmpl("spiffe://weft.local/web"), ca)
			return &c
		}, ReasonNoSPIFFEID},
		{"https URI instead of spiffe", func() *tls.Certificate {
			c := mint(t, leafTmpl("https://weft.local/ns/default/sa/web"), ca)
			return &c
		}, ReasonNoSPIFFEID},
		{"no certificate", func() *tls.Certificate { return nil }, ReasonNoCertificate},
		{"server-auth only (no clientAuth EKU)", func() *tls.Certificate {
			tm := leafTmpl("spiffe://weft.local/ns/default/sa/web")
			tm.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			c := mint(t, tm, ca)
			return &c
		}, ReasonKeyUsage},
		{"key usage certSign", func() *tls.Certificate {
			tm := leafTmpl("spiffe://weft.local/ns/default/sa/web")
			tm.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign
			c := mint(t, tm, ca)
			return &c
		}, ReasonKeyUsage},
		{"the root itself as leaf", func() *tls.Certificate { return &caAsLeaf }, ReasonCAAsLeaf},
	}
	refused := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := src.Failures(tc.reason)
			line, err := call(addr, tc.cert())
			if err == nil && strings.HasPrefix(line, "ok") {
				t.Fatalf("accepted: %q", line)
			}
			// The server refuses after the client's side of the handshake
			// may have finished; wait for its count.
			deadline := time.Now().Add(5 * time.Second)
			for src.Failures(tc.reason) == before && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if src.Failures(tc.reason) != before+1 {
				t.Fatalf("refusal not counted under %s", tc.reason)
			}
			refused++
		})
	}
	t.Logf("bad certificates refused: %d of %d", refused, len(cases))
	if refused != len(cases) {
		t.Fatalf("refused %d of %d bad certificates", refused, len(cases))
	}
}

func TestStrictRefusesPlaintextPermissiveTakesIt(t *testing.T) {
	ca := newTestCA(t, td)
	src := serverSource(t, ca)
	l := server(t, src, Strict)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
	b, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(b), "HTTP/1.1 400") || !strings.Contains(string(b), "x-weft-error: mtls_required") {
		t.Fatalf("strict plaintext answer: %q", b)
	}
	if src.Failures(ReasonPlaintext) != 1 {
		t.Fatalf("plaintext refusals: %d", src.Failures(ReasonPlaintext))
	}
	l.SetMode(Permissive)
	c, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if line != "ok \n" { // plaintext: no principal
		t.Fatalf("permissive plaintext: %q", line)
	}
}

func TestDialerMutualAndResumption(t *testing.T) {
	ca := newTestCA(t, td)
	l := server(t, serverSource(t, ca), Strict)
	client := serverSource(t, ca)
	d := &Dialer{Source: client}
	for i := 0; i < 2; i++ {
		c, err := d.Dial(t.Context(), "tcp", l.Addr().String(), ALPNHTTP1)
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		if line != "ok spiffe://weft.local/ns/default/sa/orders\n" {
			t.Fatalf("dial %d: %q", i, line)
		}
		if p := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != ALPNHTTP1 {
			t.Fatalf("ALPN %q", p)
		}
		c.Close()
	}
	if client.Resumed.Load() < 1 {
		t.Fatalf("second connection did not resume its TLS session (%d handshakes)", client.Handshakes.Load())
	}
	// A server whose certificate comes from another CA is refused by the dialer.
	bad := server(t, serverSource(t, newTestCA(t, td)), Strict)
	if _, err := d.Dial(t.Context(), "tcp", bad.Addr().String(), ALPNHTTP1); err == nil {
		t.Fatal("dialled a server of another CA")
	} else if op, ok := err.(*net.OpError); !ok || op.Op != "dial" {
		t.Fatalf("error is not a dial error: %T %v", err, err)
	}
}

func TestRotationBothRootsTrusted(t *testing.T) {
	oldCA, newCA := newTestCA(t, td), newTestCA(t, td)
	src := serverSource(t, oldCA)
	l := server(t, src, Strict)
	newLeaf := mint(t, leafTmpl("spiffe://weft.local/ns/default/sa/web"), newCA)
	oldLeaf := mint(t, leafTmpl("spiffe://weft.local/ns/default/sa/web"), oldCA)
	if _, err := call(l.Addr().String(), &newLeaf); err == nil {
		t.Fatal("leaf of a root not yet in the bundle accepted")
	}
	_ = src.SetBundle([][]byte{oldCA.cert.Raw, newCA.cert.Raw})
	for _, c := range []*tls.Certificate{&oldLeaf, &newLeaf} {
		if line, err := call(l.Addr().String(), c); err != nil || !strings.HasPrefix(line, "ok") {
			t.Fatalf("during rotation: %q %v", line, err)
		}
	}
	_ = src.SetBundle([][]byte{newCA.cert.Raw})
	if line, _ := call(l.Addr().String(), &oldLeaf); strings.HasPrefix(line, "ok") {
		t.Fatal("leaf of a removed root accepted")
	}
}

func TestParseID(t *testing.T) {
	for _, s := range []string{"spiffe://weft.local/ns/default/sa/web", "spiffe://a.b/ns/prod/sa/x-1"} {
		id, err := ParseID(s)
		if err != nil || id.String() != s {
			t.Errorf("%s: %v %v", s, id, err)
		}
	}
	for _, s := range []string{"", "spiffe://", "spiffe://weft.local", "spiffe://weft.local/ns//sa/web", "spiffe://weft.local/ns/a/sa/web/x",
		"spiffe://weft.local:8080/ns/a/sa/web", "spiffe://weft.local/ns/a/sa/web?x", "spiffe://weft.local/ns/a/sa/w%65b", "http://weft.local/ns/a/sa/web"} {
		if _, err := ParseID(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
