package control

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// TestCallerOf: a pure client is scraped only at an admin address on the
// host its stream comes from, and only when it names itself whole.
func TestCallerOf(t *testing.T) {
	for _, tc := range []struct {
		name, from, admin, service string
		ok                         bool
	}{
		{"loopback", "127.0.0.1:5000", "127.0.0.1:9000", "web", true},
		{"same host", "10.0.0.7:5000", "10.0.0.7:9000", "web", true},
		{"other host", "10.0.0.7:5000", "10.0.0.8:9000", "web", false},
		{"loopback admin from afar", "10.0.0.7:5000", "127.0.0.1:9000", "web", false},
		{"hostname", "10.0.0.7:5000", "metadata.internal:80", "web", false},
		{"no service", "127.0.0.1:5000", "127.0.0.1:9000", "", false},
		{"no port", "127.0.0.1:5000", "127.0.0.1", "web", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, _ := net.ResolveTCPAddr("tcp", tc.from)
			ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: from})
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(MetaCallerService, tc.service, MetaCallerID, "web-1", MetaCallerAdmin, tc.admin))
			tg, ok := callerOf(ctx)
			if ok != tc.ok {
				t.Fatalf("callerOf = %+v, %v; want %v", tg, ok, tc.ok)
			}
			var c callers
			leave := c.join(ctx, t)
			if n := len(c.targets()); n != map[bool]int{true: 1, false: 0}[tc.ok] {
				t.Errorf("%d targets after join", n)
			}
			leave()
			if n := len(c.targets()); n != 0 {
				t.Errorf("%d targets after leave", n)
			}
		})
	}
}
