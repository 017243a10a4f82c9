// Package apiclient calls the control plane's JSON API. The CLI (`weft apply`,
// `weft get`, …) and the demo use it; errors say whether the control plane
// could not be reached or refused the request, and why.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/weftmesh/weft/control"
)

// DefaultServer is used when neither --server nor WEFT_SERVER is set.
const DefaultServer = "http://127.0.0.1:15000"

// Client talks to one control plane.
type Client struct {
	base string
	hc   *http.Client
}

// New validates server and returns a client.
func New(server string) (*Client, error) {
	if server == "" {
		server = DefaultServer
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want a URL such as %s", server, DefaultServer)
	}
	base := strings.TrimSuffix(server, "/")
	return &Client{base: base, hc: HTTPClient(base, 10*time.Second)}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/yaml")
	}
	Authorize(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return RequestError(c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading answer of %s: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		if err := StatusError(c.base, req, resp.StatusCode, data); err != nil {
			return err
		}
		var e control.ErrorJSON
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("control plane answered %s", resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("unreadable answer from %s: %w", c.base, err)
		}
	}
	return nil
}

// Services lists services and their instances.
func (c *Client) Services(ctx context.Context) (control.ServicesJSON, error) {
	var out control.ServicesJSON
	err := c.do(ctx, http.MethodGet, "/api/v1/services", nil, &out)
	return out, err
}

// Resources lists stored resources.
func (c *Client) Resources(ctx context.Context) (control.ResourcesJSON, error) {
	var out control.ResourcesJSON
	err := c.do(ctx, http.MethodGet, "/api/v1/resources", nil, &out)
	return out, err
}

// Apply applies a manifest atomically.
func (c *Client) Apply(ctx context.Context, manifest []byte) (control.ApplyResultJSON, error) {
	var out control.ApplyResultJSON
	err := c.do(ctx, http.MethodPost, "/api/v1/apply", manifest, &out)
	return out, err
}

// Delete deletes the objects a manifest names, atomically.
func (c *Client) Delete(ctx context.Context, manifest []byte) (control.ApplyResultJSON, error) {
	var out control.ApplyResultJSON
	err := c.do(ctx, http.MethodPost, "/api/v1/delete", manifest, &out)
	return out, err
}
