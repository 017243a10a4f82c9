package harness

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/weftmesh/weft/security/mtls"
	"github.com/weftmesh/weft/security/token"
)

// Transport is what a user's CLI does on the control plane's machine, for
// tests that call the JSON API directly: a request to an address that has
// a local token file (a control plane's, written at its start) carries
// that token unless it has an Authorization header of its own, and an
// https address is verified by the mesh CA written beside that file.
// Requests elsewhere (sidecars' admin ports, apps) go as they are.
// No keep-alive, as Client.
var Transport http.RoundTripper = &authTransport{base: &http.Transport{Proxy: nil, DisableKeepAlives: true, DialTLSContext: dialMeshTLS}}

type authTransport struct{ base http.RoundTripper }

func (a *authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		if p, err := token.LocalFile(r.URL.Host); err == nil {
			if t, _ := token.ReadFile(p); t != "" {
				r = r.Clone(r.Context())
				r.Header.Set("Authorization", "Bearer "+t)
			}
		}
	}
	return a.base.RoundTrip(r)
}

// dialMeshTLS verifies an https control plane by the CA file beside its
// local token file (the system's roots without one).
func dialMeshTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	cfg := &tls.Config{}
	if p, err := token.LocalFile(addr); err == nil {
		if b, err := os.ReadFile(p + ".ca.pem"); err == nil {
			if c, err := mtls.ControlClientConfig(b); err == nil {
				cfg = c
			}
		}
	}
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	return d.DialContext(ctx, network, addr)
}

// Token is the admin token a control plane wrote to its data dir (the
// file DATA-DIR/token), for tests that pass it explicitly.
func (c *Control) Token() string {
	t, _ := token.ReadFile(c.DataDir + "/token")
	return t
}

// Authorized wraps a suite's own transport (keep-alive, pool sizes) with
// Transport's token: requests to an address with a local token file carry
// it. It does not change base's TLS.
func Authorized(base http.RoundTripper) http.RoundTripper { return &authTransport{base: base} }
