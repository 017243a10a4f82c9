package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/messaging"
)

// The broker's credentials reach sidecars in the Certificate message only
// (broker_access, with broker_url for sidecars of an older version); the
// Hello's URL never carries them.
func TestCertificateCarriesBrokerAccess(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  Config
		// want is the access in the certificate answer; zero: none.
		want messaging.Access
	}{
		{name: "embedded broker without auth", cfg: Config{BrokerAddr: "127.0.0.1:0"}},
		{name: "embedded broker with auth", cfg: Config{BrokerAddr: "127.0.0.1:0", Security: SecurityConfig{BrokerAuth: true}},
			want: messaging.Access{URLs: "nats://" + brokerUser + ":"}}, // and the password, checked below
		{name: "external with a password in the URL", cfg: Config{Broker: "nats://u:pw@127.0.0.1:1"},
			want: messaging.Access{URLs: "nats://u:pw@127.0.0.1:1"}},
		{name: "external with --nats-user", cfg: Config{Broker: "nats://127.0.0.1:1", NATS: messaging.ClientFiles{User: "u", Password: "pw"}},
			want: messaging.Access{URLs: "nats://127.0.0.1:1", User: "u", Password: "pw"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.GRPCAddr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			defer func() {
				cancel()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Error("control plane did not stop")
				}
			}()

			if hello := s.cfg.Settings[messaging.SettingBroker]; strings.Contains(hello, "@") {
				t.Errorf("the Hello's broker URL %q carries credentials", hello)
			}
			cert, _, err := s.sec.issue(&pb.CertificateRequest{CsrDer: csr, Service: "orders"}, "", t, "orders-1")
			if err != nil {
				t.Fatal(err)
			}
			got := messaging.AccessFromProto(cert.BrokerAccess)
			if cert.BrokerUrl != got.URLs {
				t.Errorf("broker_url %q; want broker_access's URLs %q", cert.BrokerUrl, got.URLs)
			}
			if c.want == (messaging.Access{}) {
				if cert.BrokerAccess != nil || cert.BrokerUrl != "" {
					t.Errorf("got broker access %+v; want none (the Hello's URL is all)", got)
				}
				return
			}
			if c.cfg.Security.BrokerAuth {
				if !strings.HasPrefix(got.URLs, c.want.URLs) || !strings.Contains(got.URLs, "@") {
					t.Errorf("broker_access URLs %q; want the embedded broker's with its user and password", got.URLs)
				}
				return
			}
			if got != c.want {
				t.Errorf("broker_access %+v; want %+v", got, c.want)
			}
		})
	}
}
