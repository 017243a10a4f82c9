package sidecar

import (
	"testing"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/messaging"
)

// The broker access a certificate answer carries: broker_access from this
// version's control plane, the bare broker_url from an older one.
func TestCertBroker(t *testing.T) {
	tlsAccess := messaging.Access{URLs: "tls://nats.internal:4222", CA: "ca pem", Cert: "cert pem", Key: "key pem", NKey: "SUAB"}
	cases := []struct {
		name   string
		cert   *pb.Certificate
		want   messaging.Access
		wantOK bool
	}{
		{"none: the Hello's URL is all", &pb.Certificate{}, messaging.Access{}, false},
		{"broker_access", &pb.Certificate{BrokerUrl: tlsAccess.URLs, BrokerAccess: tlsAccess.Proto()}, tlsAccess, true},
		{"older control plane: broker_url only", &pb.Certificate{BrokerUrl: "nats://weft:pw@127.0.0.1:4222"},
			messaging.Access{URLs: "nats://127.0.0.1:4222", User: "weft", Password: "pw"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := certBroker(c.cert)
			if got != c.want || ok != c.wantOK {
				t.Fatalf("certBroker = %#v, %v; want %#v, %v", got, ok, c.want, c.wantOK)
			}
		})
	}
}
