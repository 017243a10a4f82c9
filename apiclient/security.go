package apiclient

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/security/token"
)

// Authorize adds the API token to a request to the control plane: from
// --token or $WEFT_TOKEN, else the local token file this machine's control
// plane wrote for the request's host:port.
func Authorize(req *http.Request) {
	if t, _ := token.Resolve("", "", req.URL.Host); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
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
