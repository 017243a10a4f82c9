package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/proxy/h1"
)

// mirror sends a Route's copies of requests, fire-and-forget: the copy
// runs on its own goroutine, its answer is read and dropped, and at most
// maxMirrors are in flight (beyond that a copy is dropped and counted), so
// mirroring never slows or fails the request it copies. Only requests
// without a body are copied: the body streams to the primary and is not
// kept for a copy.
type mirror struct {
	client  *http.Client
	sem     chan struct{}
	Dropped atomic.Int64
	Sent    atomic.Int64
}

const (
	maxMirrors    = 64
	mirrorTimeout = 10 * time.Second
)

// HeaderMirror marks a copy, so the app (and its logs) can tell.
const HeaderMirror = "X-Weft-Mirror"

// newMirror sends copies through dial (the mesh's mTLS dialer; nil: plain
// TCP): a copy goes to another sidecar's inbound port like any request.
func newMirror(dial DialFunc) *mirror {
	dc := (&net.Dialer{Timeout: 2 * time.Second}).DialContext
	if dial != nil {
		dc = func(ctx context.Context, n, a string) (net.Conn, error) { return dial(ctx, n, a, "http/1.1") }
	}
	tr := &http.Transport{DialContext: dc,
		MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second, DisableCompression: true}
	return &mirror{client: &http.Client{Transport: tr, Timeout: mirrorTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		sem: make(chan struct{}, maxMirrors)}
}

// send copies a request to addr, if a slot is free. Every goroutine it
// starts ends within mirrorTimeout.
func (m *mirror) send(method, addr, host, path string, h http.Header) {
	select {
	case m.sem <- struct{}{}:
	default:
		m.Dropped.Add(1)
		return
	}
	m.Sent.Add(1)
	go func() {
		defer func() { <-m.sem }()
		ctx, cancel := context.WithTimeout(context.Background(), mirrorTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
		if err != nil {
			return
		}
		req.Header = h
		req.Host = host
		req.Header.Set(HeaderMirror, "1")
		resp, err := m.client.Do(req)
		if err != nil {
			return
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}()
}

// hopByHop are the fields a copy does not carry.
var hopByHop = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true, "Proxy-Authorization": true}

// mirrorH1 copies an h1 request (valid during Route) when it has no body.
func (m *mirror) mirrorH1(req *h1.Request, addr string, set []h1.Field) {
	if req.Chunked || req.ContentLength > 0 {
		m.Dropped.Add(1)
		return
	}
	h := make(http.Header, len(req.Fields)+len(set))
	for _, f := range req.Fields {
		k := http.CanonicalHeaderKey(string(f.Name))
		if !hopByHop[k] && k != "Host" {
			h.Add(k, string(f.Value))
		}
	}
	for _, f := range set {
		h.Set(string(f.Name), string(f.Value))
	}
	m.send(string(req.Method), addr, string(req.Host), string(req.Path()), h)
}

// mirrorHTTP copies a net/http request when it has no body.
func (m *mirror) mirrorHTTP(r *http.Request, addr, source string) {
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		m.Dropped.Add(1)
		return
	}
	h := r.Header.Clone()
	for k := range hopByHop {
		h.Del(k)
	}
	if source != "" {
		h.Set(HeaderSource, source)
	}
	m.send(r.Method, addr, r.Host, r.URL.RequestURI(), h)
}
