package messaging_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"google.golang.org/protobuf/proto"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/messaging"
)

// pki writes a CA and a server certificate for 127.0.0.1 signed by it.
type pki struct{ ca, cert, key string }

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	p := pki{ca: filepath.Join(dir, "ca.pem"), cert: filepath.Join(dir, "server.pem"), key: filepath.Join(dir, "server-key.pem")}
	write := func(path, typ string, b []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.ca, "CERTIFICATE", caDER)
	write(p.cert, "CERTIFICATE", der)
	write(p.key, "EC PRIVATE KEY", keyDER)
	return p
}

func runServer(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", server.RANDOM_PORT, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return "nats://" + s.Addr().String()
}

func TestProbeTLSAndCredentials(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	other := newPKI(t, t.TempDir())
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.cert, KeyFile: p.key})
	if err != nil {
		t.Fatal(err)
	}
	tlsURL := runServer(t, &server.Options{TLS: true, TLSConfig: tc, Username: "weft", Password: "s3cret"})
	plainURL := runServer(t, &server.Options{Username: "weft", Password: "s3cret"})

	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(dir, "user.nk")
	os.WriteFile(seedFile, seed, 0o600)
	otherKP, _ := nkeys.CreateUser()
	otherSeed, _ := otherKP.Seed()
	otherSeedFile := filepath.Join(dir, "other.nk")
	os.WriteFile(otherSeedFile, otherSeed, 0o600)
	nkeyURL := runServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})

	cases := []struct {
		name  string
		url   string
		files messaging.ClientFiles
		want  string // "" = connects
	}{
		{"tls and password", tlsURL, messaging.ClientFiles{CA: p.ca, User: "weft", Password: "s3cret"}, ""},
		{"wrong password", tlsURL, messaging.ClientFiles{CA: p.ca, User: "weft", Password: "nope"}, "check --nats-user/--nats-password"},
		{"no credentials", plainURL, messaging.ClientFiles{}, "give --nats-creds, --nats-nkey or --nats-user/--nats-password"},
		{"other CA", tlsURL, messaging.ClientFiles{CA: other.ca, User: "weft", Password: "s3cret"}, "check --nats-tls-ca"},
		{"TLS not given", tlsURL, messaging.ClientFiles{User: "weft", Password: "s3cret"}, "check --nats-tls-ca"}, // nats.go upgrades, with the system roots
		{"TLS to a plain server", plainURL, messaging.ClientFiles{CA: p.ca, User: "weft", Password: "s3cret"}, "does not serve TLS"},
		{"nkey", nkeyURL, messaging.ClientFiles{NKey: seedFile}, ""},
		{"unknown nkey", nkeyURL, messaging.ClientFiles{NKey: otherSeedFile}, "check --nats-nkey"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := c.files.Load(c.url)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			err = messaging.Probe(a, 5*time.Second)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Probe: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Probe: %v; want an error saying %q", err, c.want)
			case c.want != "" && !a.Refused(err):
				t.Fatalf("Refused(%v) = false", err)
			}
			// What a sidecar gets over the wire is the same access.
			if b := wire(t, a); b != a {
				t.Fatalf("through the Certificate message: %+v; want %+v", b, a)
			}
		})
	}
}

func TestClientFilesLoadErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("not a pem\n"), 0o600)
	missing := filepath.Join(dir, "missing.pem")
	cases := []struct {
		files messaging.ClientFiles
		want  string
	}{
		{messaging.ClientFiles{CA: missing}, "--nats-tls-ca: open " + missing},
		{messaging.ClientFiles{CA: junk}, "--nats-tls-ca: no PEM certificate"},
		{messaging.ClientFiles{Cert: junk}, "--nats-tls-cert and --nats-tls-key go together"},
		{messaging.ClientFiles{Cert: junk, Key: junk}, "--nats-tls-cert/--nats-tls-key:"},
		{messaging.ClientFiles{Creds: junk}, "--nats-creds: not a NATS credentials file"},
		{messaging.ClientFiles{Creds: missing}, "--nats-creds: open"},
		{messaging.ClientFiles{NKey: junk}, "--nats-nkey: not an NKey seed file"},
		{messaging.ClientFiles{Password: "x"}, "--nats-password needs --nats-user"},
		{messaging.ClientFiles{User: "u", NKey: junk}, "are alternatives"},
	}
	for _, c := range cases {
		_, err := c.files.Load("nats://127.0.0.1:4222")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load(%+v) = %v; want %q", c.files, err, c.want)
		}
	}
}

// wire is a as a sidecar reads it: marshalled in a Certificate message
// and back.
func wire(t *testing.T, a messaging.Access) messaging.Access {
	t.Helper()
	b, err := proto.Marshal(&pb.Certificate{BrokerAccess: a.Proto()})
	if err != nil {
		t.Fatal(err)
	}
	var c pb.Certificate
	if err := proto.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return messaging.AccessFromProto(c.BrokerAccess)
}

func TestAccessProto(t *testing.T) {
	cases := []struct {
		name string
		a    messaging.Access
	}{
		{"embedded broker's user and password", messaging.Access{URLs: "nats://127.0.0.1:15222", User: "weft", Password: "pw"}},
		{"token", messaging.Access{URLs: "nats://127.0.0.1:4222", Token: "t0ken"}},
		{"several URLs", messaging.Access{URLs: "nats://h1:4222,tls://h2:4222"}},
		{"user and password", messaging.Access{URLs: "tls://h:4222", User: "weft", Password: "s3cret"}},
		{"everything", messaging.Access{URLs: "tls://h:4222", User: "u", Password: "p", CA: "-----BEGIN CERTIFICATE-----\nca\n",
			Cert: "cert", Key: "key", Creds: "-----BEGIN NATS USER JWT-----\n", NKey: "SUAB"}},
		// Files are bytes on the wire: contents that are not UTF-8 survive.
		{"not UTF-8", messaging.Access{URLs: "tls://h:4222", CA: "\xff\xfe", Key: "\x80"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := wire(t, c.a); got != c.a {
				t.Fatalf("got %+v; want %+v", got, c.a)
			}
		})
	}
	if got := messaging.AccessFromProto(nil); got != (messaging.Access{}) {
		t.Fatalf("AccessFromProto(nil) = %+v; want no access", got)
	}
	// A control plane of an older version put the embedded broker's
	// password in the URLs: a sidecar moves it to the fields.
	older := messaging.AccessFromProto(&pb.BrokerAccess{Urls: "nats://weft:pw@127.0.0.1:15222"})
	if want := (messaging.Access{URLs: "nats://127.0.0.1:15222", User: "weft", Password: "pw"}); older != want {
		t.Fatalf("from an older control plane: %#v; want %#v", older, want)
	}
}

// A user and password (or a token) given in a broker URL travel in
// Access's own fields: no URL weft keeps, logs or shows carries them.
func TestBrokerURLCredentials(t *testing.T) {
	cases := []struct {
		name  string
		urls  string
		files messaging.ClientFiles
		want  messaging.Access
		err   string
	}{
		{name: "plain", urls: "nats://h:4222", want: messaging.Access{URLs: "nats://h:4222"}},
		{name: "user and password in the URL", urls: "nats://u:s3cret@h:4222",
			want: messaging.Access{URLs: "nats://h:4222", User: "u", Password: "s3cret"}},
		{name: "the same in every URL", urls: "nats://u:s3cret@h1:4222, tls://u:s3cret@h2:4222",
			want: messaging.Access{URLs: "nats://h1:4222,tls://h2:4222", User: "u", Password: "s3cret"}},
		{name: "a token", urls: "nats://t0ken@h:4222", want: messaging.Access{URLs: "nats://h:4222", Token: "t0ken"}},
		{name: "--nats-user", urls: "nats://h:4222", files: messaging.ClientFiles{User: "u", Password: "s3cret"},
			want: messaging.Access{URLs: "nats://h:4222", User: "u", Password: "s3cret"}},
		{name: "different users", urls: "nats://u:s3cret@h1:4222,nats://v:other@h2:4222", err: "carry different users"},
		{name: "URL and --nats-user", urls: "nats://u:s3cret@h:4222", files: messaging.ClientFiles{User: "u", Password: "s3cret"},
			err: "give one"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := c.files.Load(c.urls)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Load: %v; want an error saying %q", err, c.err)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a != c.want {
				t.Fatalf("Load = %#v; want %#v", a, c.want)
			}
			if c.files.Empty() {
				if u := messaging.URLAccess(c.urls); u != c.want {
					t.Fatalf("URLAccess = %#v; want %#v", u, c.want)
				}
			}
			// Every way an Access is printed hides the secrets.
			var logged bytes.Buffer
			slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "access", a)
			slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "access", a)
			for _, out := range []string{a.String(), fmt.Sprintf("%v %+v %s", a, a, a), a.Redacted(), logged.String()} {
				if strings.Contains(out, "s3cret") || strings.Contains(out, "t0ken") {
					t.Fatalf("printed with its secret: %s", out)
				}
			}
			if a.User != "" && !strings.Contains(a.Redacted(), "redacted@") {
				t.Fatalf("Redacted() = %q; want the URLs marked nats://redacted@…", a.Redacted())
			}
		})
	}
}

// A .creds file (decentralised JWT auth): an operator, an account and a
// user, the server trusting the operator and resolving the account from
// memory; a user of another account is refused with the flag to check.
func TestProbeCreds(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	op, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	account := func() (nkeys.KeyPair, string, string) {
		akp, _ := nkeys.CreateAccount()
		apub, _ := akp.PublicKey()
		ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
		if err != nil {
			t.Fatal(err)
		}
		return akp, apub, ajwt
	}
	creds := func(akp nkeys.KeyPair) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "user.creds")
		os.WriteFile(f, b, 0o600)
		return f
	}
	akp, apub, ajwt := account()
	otherKP, _, _ := account() // signed by the operator, but the server does not know it
	res := &server.MemAccResolver{}
	res.Store(apub, ajwt)
	url := runServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{op}, AccountResolver: res})

	a, err := messaging.ClientFiles{Creds: creds(akp)}.Load(url)
	if err != nil {
		t.Fatal(err)
	}
	if err := messaging.Probe(a, 5*time.Second); err != nil {
		t.Fatalf("Probe with the account's user: %v", err)
	}
	b, err := messaging.ClientFiles{Creds: creds(otherKP)}.Load(url)
	if err != nil {
		t.Fatal(err)
	}
	if err := messaging.Probe(b, 5*time.Second); err == nil || !strings.Contains(err.Error(), "check --nats-creds") {
		t.Fatalf("Probe with a user of an unknown account: %v; want check --nats-creds", err)
	}
}
