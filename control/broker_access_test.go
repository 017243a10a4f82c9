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

// The broker's credentials reach sidecars in the Certificate message only,
// in broker_access's own fields: no URL carries them (the Hello's, and
// broker_url for a sidecar that reads broker_access), except broker_url's
// userinfo for a sidecar of an older version.
func TestCertificateCarriesBrokerAccess(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  Config
		// want is the access in the certificate answer; zero: none. The
		// embedded broker's password is not known here: "?" stands for it.
		want messaging.Access
		// legacy is broker_url for a sidecar that reads only it.
		legacy string
	}{
		{name: "embedded broker without auth", cfg: Config{BrokerAddr: "127.0.0.1:0"}},
		{name: "embedded broker with auth", cfg: Config{BrokerAddr: "127.0.0.1:0", Security: SecurityConfig{BrokerAuth: true}},
			want: messaging.Access{User: brokerUser, Password: "?"}},
		{name: "external with a password in the URL", cfg: Config{Broker: "nats://u:pw@127.0.0.1:1"},
			want: messaging.Access{URLs: "nats://127.0.0.1:1", User: "u", Password: "pw"}, legacy: "nats://u:pw@127.0.0.1:1"},
		{name: "external with a token in the URL", cfg: Config{Broker: "nats://t0ken@127.0.0.1:1"},
			want: messaging.Access{URLs: "nats://127.0.0.1:1", Token: "t0ken"}, legacy: "nats://t0ken@127.0.0.1:1"},
		{name: "external with --nats-user", cfg: Config{Broker: "nats://127.0.0.1:1", NATS: messaging.ClientFiles{User: "u", Password: "pw"}},
			want: messaging.Access{URLs: "nats://127.0.0.1:1", User: "u", Password: "pw"}, legacy: "nats://u:pw@127.0.0.1:1"},
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

			hello := s.cfg.Settings[messaging.SettingBroker]
			if strings.Contains(hello, "@") {
				t.Errorf("the Hello's broker URL %q carries credentials", hello)
			}
			cert, _, err := s.sec.issue(&pb.CertificateRequest{CsrDer: csr, Service: "orders", ReadsBrokerAccess: true}, "", t, "orders-1")
			if err != nil {
				t.Fatal(err)
			}
			got := messaging.AccessFromProto(cert.BrokerAccess)
			if c.want == (messaging.Access{}) {
				if cert.BrokerAccess != nil || cert.BrokerUrl != "" {
					t.Errorf("got broker access %#v; want none (the Hello's URL is all)", got)
				}
				return
			}
			if cert.BrokerUrl != hello || cert.BrokerAccess.GetUrls() != hello {
				t.Errorf("broker_url %q, broker_access.urls %q; want both the Hello's %q", cert.BrokerUrl, cert.BrokerAccess.GetUrls(), hello)
			}
			want := c.want
			if want.Password == "?" {
				want.URLs, want.Password = hello, s.brokerPass
				c.legacy = strings.Replace(hello, "nats://", "nats://"+brokerUser+":"+s.brokerPass+"@", 1)
			}
			if got != want {
				t.Errorf("broker_access %#v; want %#v", got, want)
			}
			// A sidecar of an older version asks without reads_broker_access.
			old, _, err := s.sec.issue(&pb.CertificateRequest{CsrDer: csr, Service: "orders"}, "", t, "orders-2")
			if err != nil {
				t.Fatal(err)
			}
			if old.BrokerUrl != c.legacy {
				t.Errorf("broker_url for an older sidecar %q; want %q", old.BrokerUrl, c.legacy)
			}
			if messaging.AccessFromProto(old.BrokerAccess) != want {
				t.Errorf("broker_access for an older sidecar differs")
			}
		})
	}
}
