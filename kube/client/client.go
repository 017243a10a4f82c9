// Package client is Weft's own Kubernetes API client: the configuration
// (a pod's service account, or a kubeconfig), JSON requests on any
// resource (get, list, watch, create, update, merge patch, the status
// subresource) with objects as unstructured maps, and an informer that
// lists, watches and relists and keeps a snapshot of the objects.
//
// Why hand-written: client-go (rest, dynamic, tools/cache, clientcmd) and
// apimachinery cost 5.2 MB of the weft binary, whose container image must
// stay under 30 MB (issue #12); what the control plane uses of them, the
// JSON list/watch protocol of a few resources, is small and stable API.
// Tests still drive the API server with kubectl and may link client-go;
// only packages the weft binary links must not (TestNoK8sIOInWeft).
//
// What it does not do: protobuf or CBOR, exec credential plugins and
// auth providers (a clear error names them), basic auth, client-side rate
// limiting (a handful of informers and status writes need none), watch
// lists (the streaming list of Kubernetes 1.32+), typed objects beyond
// what each caller decodes, server-side apply.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Resource names a kind of object in the API: group ("" for core),
// version and plural resource name.
type Resource struct {
	Group, Version, Resource string
}

func (r Resource) String() string {
	if r.Group == "" {
		return r.Resource + "." + r.Version
	}
	return r.Resource + "." + r.Version + "." + r.Group
}

// path is the URL path of the collection in ns ("" for all namespaces or
// a cluster-scoped kind), or of one object and its subresource.
func (r Resource) path(ns, name, sub string) string {
	var b strings.Builder
	if r.Group == "" {
		b.WriteString("/api/" + r.Version)
	} else {
		b.WriteString("/apis/" + r.Group + "/" + r.Version)
	}
	if ns != "" {
		b.WriteString("/namespaces/" + url.PathEscape(ns))
	}
	b.WriteString("/" + r.Resource)
	if name != "" {
		b.WriteString("/" + url.PathEscape(name))
	}
	if sub != "" {
		b.WriteString("/" + sub)
	}
	return b.String()
}

// Client makes requests to one API server. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base *url.URL
	hc   *http.Client

	mu        sync.Mutex
	token     string
	tokenRead time.Time
}

// tokenTTL is how long a token file's content is used before it is read
// again (client-go's figure): a rotated token is picked up within it.
const tokenTTL = time.Minute

// New returns a client for cfg.
func New(cfg *Config) (*Client, error) {
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("kubernetes API server %q: want https://HOST:PORT", cfg.Host)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		TLSClientConfig:       cfg.TLS,
		ForceAttemptHTTP2:     true, // watches share one connection
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   25,
	}
	c := &Client{cfg: *cfg, base: u, hc: &http.Client{Transport: tr}}
	if c.cfg.UserAgent == "" {
		c.cfg.UserAgent = "weft"
	}
	return c, nil
}

// Host is the API server's URL.
func (c *Client) Host() string { return c.cfg.Host }

func (c *Client) bearer() (string, error) {
	if c.cfg.TokenFile == "" {
		return c.cfg.Token, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Since(c.tokenRead) < tokenTTL {
		return c.token, nil
	}
	b, err := os.ReadFile(c.cfg.TokenFile)
	if err != nil {
		if c.token != "" {
			return c.token, nil // keep the last one while the file is swapped
		}
		return "", fmt.Errorf("reading the token: %w", err)
	}
	c.token, c.tokenRead = strings.TrimSpace(string(b)), time.Now()
	return c.token, nil
}

// StatusError is the API server's refusal: its HTTP code and the
// metav1.Status it sent.
type StatusError struct {
	Code    int
	Reason  string
	Message string
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("the server answered %d %s", e.Code, e.Reason)
}

// IsNotFound says whether err is the API server's 404.
func IsNotFound(err error) bool { return code(err) == http.StatusNotFound }

// IsGone says whether err is 410 Gone: the resource version asked for is
// older than the server keeps; the caller lists again.
func IsGone(err error) bool { return code(err) == http.StatusGone }

// IsConflict says whether err is 409 Conflict (a stale resourceVersion,
// or an object that already exists).
func IsConflict(err error) bool { return code(err) == http.StatusConflict }

func code(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// status is metav1.Status, the part read.
type status struct {
	Kind    string `json:"kind"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
	Code    int    `json:"code"`
}

func statusError(code int, body []byte) error {
	var s status
	if json.Unmarshal(body, &s) == nil && s.Kind == "Status" {
		if s.Code == 0 {
			s.Code = code
		}
		return &StatusError{Code: s.Code, Reason: s.Reason, Message: s.Message}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return &StatusError{Code: code, Reason: http.StatusText(code), Message: fmt.Sprintf("the server answered %d: %s", code, msg)}
}

// maxBody bounds a response read whole (an object, a page of a list).
const maxBody = 64 << 20

// ErrAnswerTooLarge is the error of an answer larger than maxBody.
var ErrAnswerTooLarge = errors.New("answer larger than 64 MiB")

// bounded reads r up to maxBody bytes, then fails with ErrAnswerTooLarge.
func bounded(r io.Reader) io.Reader {
	b := &budgetReader{r: r, limit: maxBody}
	b.err = ErrAnswerTooLarge
	return b
}

// do sends one request and returns the response when it is a 2xx; any
// other answer is a *StatusError.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte, contentType string) (*http.Response, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	tok, err := c.bearer()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, fmt.Errorf("%s %s: %w", method, path, statusError(resp.StatusCode, b))
	}
	return resp, nil
}

// object sends a request whose answer is one object.
func (c *Client) object(ctx context.Context, method, path string, q url.Values, body []byte, contentType string) (Object, error) {
	resp, err := c.do(ctx, method, path, q, body, contentType)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var o Object
	if err := decode(bounded(resp.Body), &o); err != nil {
		return nil, fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return o, nil
}

// fieldManager is the manager named on every write.
const fieldManager = "weft-control"

func writeQuery() url.Values { return url.Values{"fieldManager": {fieldManager}} }

// Get reads one object.
func (c *Client) Get(ctx context.Context, r Resource, ns, name string) (Object, error) {
	return c.object(ctx, http.MethodGet, r.path(ns, name, ""), nil, nil, "")
}

// Create creates obj in ns.
func (c *Client) Create(ctx context.Context, r Resource, ns string, obj Object) (Object, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return c.object(ctx, http.MethodPost, r.path(ns, "", ""), writeQuery(), b, "application/json")
}

// Update replaces obj (named by its metadata, with its resourceVersion).
func (c *Client) Update(ctx context.Context, r Resource, ns string, obj Object) (Object, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return c.object(ctx, http.MethodPut, r.path(ns, obj.Name(), ""), writeQuery(), b, "application/json")
}

// Patch applies a JSON merge patch (RFC 7386) to the object, or to its
// subresource sub ("status"; "" for the object itself).
func (c *Client) Patch(ctx context.Context, r Resource, ns, name string, patch []byte, sub string) (Object, error) {
	return c.object(ctx, http.MethodPatch, r.path(ns, name, sub), writeQuery(), patch, "application/merge-patch+json")
}

// List is a collection as listed: its items and the resourceVersion to
// watch from.
type List struct {
	ResourceVersion string
	Items           []Object
}

// pageSize is the number of objects asked for per request.
const pageSize = 500

// listPage is one answer to a list request.
type listPage struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		ResourceVersion string `json:"resourceVersion"`
		Continue        string `json:"continue"`
	} `json:"metadata"`
	Items []Object `json:"items"`
}

// List reads every object of r in ns ("" for all), page by page.
func (c *Client) List(ctx context.Context, r Resource, ns string) (*List, error) {
	out := &List{}
	cont := ""
	for {
		q := url.Values{"limit": {strconv.Itoa(pageSize)}}
		if cont != "" {
			q.Set("continue", cont)
		}
		resp, err := c.do(ctx, http.MethodGet, r.path(ns, "", ""), q, nil, "")
		if err != nil {
			return nil, err
		}
		var page listPage
		err = decode(bounded(resp.Body), &page)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("listing %s: decoding the answer: %w", r, err)
		}
		// Items of a list may leave out their apiVersion and kind.
		kind := strings.TrimSuffix(page.Kind, "List")
		for _, it := range page.Items {
			if it == nil {
				continue
			}
			if _, ok := it["apiVersion"]; !ok {
				it["apiVersion"] = page.APIVersion
			}
			if _, ok := it["kind"]; !ok && kind != "" {
				it["kind"] = kind
			}
			out.Items = append(out.Items, it)
		}
		out.ResourceVersion = page.Metadata.ResourceVersion
		if cont = page.Metadata.Continue; cont == "" {
			return out, nil
		}
	}
}

// Watch opens a watch of r in ns from resourceVersion rv, with bookmarks,
// ending on the server's side after timeout. Close the stream when done.
func (c *Client) Watch(ctx context.Context, r Resource, ns, rv string, timeout time.Duration) (*EventStream, error) {
	q := url.Values{"watch": {"1"}, "allowWatchBookmarks": {"true"}}
	if rv != "" {
		q.Set("resourceVersion", rv)
	}
	if timeout > 0 {
		q.Set("timeoutSeconds", strconv.Itoa(int(timeout/time.Second)))
	}
	resp, err := c.do(ctx, http.MethodGet, r.path(ns, "", ""), q, nil, "")
	if err != nil {
		return nil, err
	}
	return NewEventStream(resp.Body, MaxEventBytes), nil
}
