package apiclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/security/mtls"
	"github.com/weftmesh/weft/security/token"
)

// EnvCABundle names a PEM file of the mesh CA by which an https control
// plane is verified, for a CLI on another machine than the control plane
// (which writes the CA beside its local token files on its own machine).
const EnvCABundle = "WEFT_CA_BUNDLE"

// tokenFor finds the API token for a control plane's host:port and says
// where it came from (or where it looked): --token or $WEFT_TOKEN (the
// flag sets the variable), else the local token file.
func tokenFor(host string) (secret, from string) {
	if v := strings.TrimSpace(os.Getenv("WEFT_TOKEN")); v != "" {
		return v, "--token/$WEFT_TOKEN"
	}
	p, err := token.LocalFile(host)
	if err != nil {
		return "", "--token and $WEFT_TOKEN (both empty)"
	}
	if t, _ := token.ReadFile(p); t != "" {
		return t, "the local token file " + p
	}
	return "", "--token, $WEFT_TOKEN and the local token file " + p + " (all empty)"
}

// Authorize adds the API token to a request to the control plane: from
// --token or $WEFT_TOKEN, else the local token file this machine's control
// plane wrote for the request's host:port.
func Authorize(req *http.Request) {
	if t, _ := tokenFor(req.URL.Host); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
}

// caBundleFor is the mesh CA file for an https control plane at host:port:
// $WEFT_CA_BUNDLE, else the one its control plane wrote beside the local
// token file.
func caBundleFor(host string) string {
	if p := os.Getenv(EnvCABundle); p != "" {
		return p
	}
	p, err := token.LocalFile(host)
	if err != nil {
		return ""
	}
	return p + ".ca.pem"
}

// HTTPClient is an http.Client for the control plane at server (a URL):
// for https, it verifies the control plane's certificate against the mesh
// CA (see caBundleFor; the system's roots when there is none, for an API
// behind a certificate of your own).
func HTTPClient(server string, timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the control plane is never reached through $HTTP_PROXY's proxy
	if strings.HasPrefix(server, "https://") {
		host := strings.TrimPrefix(server, "https://")
		host, _, _ = strings.Cut(host, "/")
		if b, err := os.ReadFile(caBundleFor(host)); err == nil {
			if cfg, err := mtls.ControlClientConfig(b); err == nil {
				tr.TLSClientConfig = cfg
			}
		}
	}
	return &http.Client{Timeout: timeout, Transport: tr}
}

// RequestError maps a failed request to one clear line: a certificate the
// CLI cannot verify says which CA it used; anything else is unreachable.
func RequestError(base string, err error) error {
	var ve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ve) || errors.As(err, &ua) || strings.Contains(err.Error(), "control plane certificate") {
		host := strings.TrimPrefix(base, "https://")
		return fmt.Errorf("control plane at %s: its TLS certificate is not one of the mesh CA in %s (%v): check --server, or set %s to the control plane's DATA-DIR/ca.pem",
			base, caBundleFor(host), err, EnvCABundle)
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("control plane at %s serves plain HTTP: use --server %s", base, strings.Replace(base, "https://", "http://", 1))
	}
	return fmt.Errorf("control plane at %s unreachable: %w", base, err)
}

// StatusError maps a refusal by the control plane to one line, or returns
// nil for the caller's own handling: 401 says where the CLI looked for a
// token; 403 says the token's role is not enough; a plain request to a TLS
// port says to use https.
func StatusError(base string, req *http.Request, code int, data []byte) error {
	var e control.ErrorJSON
	_ = json.Unmarshal(data, &e)
	msg := strings.TrimSpace(e.Error)
	if msg == "" {
		msg = strings.TrimSpace(string(data))
	}
	switch {
	case code == http.StatusUnauthorized:
		_, from := tokenFor(req.URL.Host)
		if req.Header.Get("Authorization") == "" {
			return fmt.Errorf("control plane at %s wants an API token (401): looked in %s; pass --token (weft token create --role read|admin on the control plane's machine)", base, from)
		}
		return fmt.Errorf("control plane at %s refused the API token from %s (401): %s", base, from, msg)
	case code == http.StatusForbidden:
		return fmt.Errorf("control plane at %s refused (403): %s", base, msg)
	case code == http.StatusBadRequest && strings.Contains(msg, "HTTP request to an HTTPS server"):
		return fmt.Errorf("control plane at %s serves TLS: use --server %s", base, strings.Replace(base, "http://", "https://", 1))
	}
	return nil
}

// Certs lists the workload certificates the CA issued and the trust bundle.
func (c *Client) Certs(ctx context.Context) (control.CertsJSON, error) {
	var out control.CertsJSON
	err := c.do(ctx, http.MethodGet, "/api/v1/certs", nil, &out)
	return out, err
}

// CreateToken makes a join or API token.
func (c *Client) CreateToken(ctx context.Context, req control.TokenRequestJSON) (control.TokenCreatedJSON, error) {
	var out control.TokenCreatedJSON
	b, _ := json.Marshal(req)
	err := c.do(ctx, http.MethodPost, "/api/v1/tokens", b, &out)
	return out, err
}

// Tokens lists tokens (never their secrets).
func (c *Client) Tokens(ctx context.Context) ([]token.Token, error) {
	var out struct {
		Tokens []token.Token `json:"tokens"`
	}
	err := c.do(ctx, http.MethodGet, "/api/v1/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken deletes a token by id.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/tokens/"+id, nil, nil)
}

// DashboardLogin makes a one-time dashboard login for the token this CLI
// holds and returns the URL a browser opens to get its session cookie.
func (c *Client) DashboardLogin(ctx context.Context) (string, error) {
	var out control.LoginJSON
	if err := c.do(ctx, http.MethodPost, "/api/v1/login", []byte("{}"), &out); err != nil {
		return "", err
	}
	return c.base + out.Path, nil
}
