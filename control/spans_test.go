package control

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/security/token"
)

// checkSpans: with --api-auth the OTLP receiver takes the sidecars' token
// or an admin one; without it, anything.
func TestCheckSpans(t *testing.T) {
	for _, auth := range []bool{true, false} {
		s, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), Broker: BrokerOff,
			Security: SecurityConfig{APIAuth: auth}})
		if err != nil {
			t.Fatal(err)
		}
		admin, _, err := s.tokens.Create(token.RoleAdmin, "", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		read, _, _ := s.tokens.Create(token.RoleRead, "", "", 0)
		join, _, _ := s.tokens.Create(token.RoleJoin, "orders", "", 0)
		if !s.ownOTLP || s.sec.otlpToken != s.otlpToken || len(s.otlpToken) < 32 {
			t.Fatalf("own receiver %v, token handed out %q of %q", s.ownOTLP, s.sec.otlpToken, s.otlpToken)
		}
		cases := []struct {
			name, secret string
			code         int
			want         string
		}{
			{"the sidecars' token", s.otlpToken, 0, ""},
			{"admin", admin, 0, ""},
			{"none", "", http.StatusUnauthorized, "no token for span export"},
			{"unknown", "nonsense", http.StatusUnauthorized, "span export token:"},
			{"read", read, http.StatusForbidden, "a read token may not send spans"},
			{"join", join, http.StatusForbidden, "a join token may not send spans"},
		}
		for _, c := range cases {
			if !auth {
				c.code, c.want = 0, ""
			}
			code, msg := s.checkSpans(c.secret)
			if code != c.code || !strings.Contains(msg, c.want) {
				t.Errorf("api-auth %v, %s: %d %q; want %d %q", auth, c.name, code, msg, c.code, c.want)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("control plane did not stop")
		}
	}
}
