package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/proxy/h1"
	"github.com/weftmesh/weft/telemetry/metrics"
)

// mirror sends a Route's copies of requests, fire-and-forget: the copy
// runs on its own goroutine, its answer is read and dropped, and at most
// maxMirrors are in flight (beyond that a copy is dropped and counted), so
// mirroring never slows or fails the request it copies. A request body is
// copied when it is at most the retry buffer limit (the policy's
// maxBodyBytes, 64 KiB by default): the fast path holds such a body whole
// and copies it once the primary exchange is over; the net/http path keeps
// what streams to the primary and sends the copy when the body has ended.
// A larger body is not copied (weft_mirror_skipped_total).
type mirror struct {
	client  *http.Client
	sem     chan struct{}
	metrics *metrics.Recorder
	source  string
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
func newMirror(dial DialFunc, rec *metrics.Recorder, source string) *mirror {
	dc := (&net.Dialer{Timeout: 2 * time.Second}).DialContext
	if dial != nil {
		dc = func(ctx context.Context, n, a string) (net.Conn, error) { return dial(ctx, n, a, "http/1.1") }
	}
	tr := &http.Transport{DialContext: dc,
		MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second, DisableCompression: true}
	return &mirror{client: &http.Client{Transport: tr, Timeout: mirrorTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		sem: make(chan struct{}, maxMirrors), metrics: rec, source: source}
}

// skip counts a copy not sent.
func (m *mirror) skip(service string) {
	m.Dropped.Add(1)
	m.metrics.Count(metrics.EventMirrorSkipped, metrics.Client, m.source, service)
}

// send copies a request to addr, if a slot is free. body is the copy's
// own (not shared with the primary). Every goroutine it starts ends within
// mirrorTimeout.
func (m *mirror) send(service, method, addr, host, path string, h http.Header, body []byte) {
	select {
	case m.sem <- struct{}{}:
	default:
		m.skip(service)
		return
	}
	m.Sent.Add(1)
	go func() {
		defer func() { <-m.sem }()
		ctx, cancel := context.WithTimeout(context.Background(), mirrorTimeout)
		defer cancel()
		var rd io.Reader
		if len(body) > 0 {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
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
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true, "Proxy-Authorization": true, "Expect": true}

// mirrorCopy is a copy to send once its body is known.
type mirrorCopy struct {
	service, method, addr, host, path string
	h                                 http.Header
}

// copyH1 takes what a copy of an h1 request needs; call it during Route
// (the request's fields alias the connection's buffer).
func copyH1(service string, req *h1.Request, addr string, set []h1.Field) *mirrorCopy {
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
	return &mirrorCopy{service: service, method: string(req.Method), addr: addr, host: string(req.Host), path: string(req.Path()), h: h}
}

// sendCopy sends mc with body (nil: none; copied here).
func (m *mirror) sendCopy(mc *mirrorCopy, body []byte) {
	m.send(mc.service, mc.method, mc.addr, mc.host, mc.path, mc.h, bytes.Clone(body))
}

// mirrorHTTP copies a net/http request: at once when it has no body; when
// its body is at most limit bytes, once that body has streamed to the
// primary whole (r.Body is wrapped to keep it). gRPC is not copied: the
// copies go over HTTP/1.1.
func (m *mirror) mirrorHTTP(service string, r *http.Request, addr, source string, limit int) {
	bodiless := r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	if isGRPC(r) || (!bodiless && r.ContentLength > int64(limit)) {
		m.skip(service)
		return
	}
	h := r.Header.Clone()
	for k := range hopByHop {
		h.Del(k)
	}
	if source != "" {
		h.Set(HeaderSource, source)
	}
	method, host, path := r.Method, r.Host, r.URL.RequestURI()
	if bodiless {
		m.send(service, method, addr, host, path, h, nil)
		return
	}
	r.Body = &mirrorBody{src: r.Body, limit: limit,
		done: func(body []byte) { m.send(service, method, addr, host, path, h, body) },
		skip: func() { m.skip(service) }}
}

// mirrorBody keeps what the primary reads of a body, up to limit, and
// hands it to done at its end (or calls skip when it was larger, or was
// closed before its end). Once, whichever comes first.
type mirrorBody struct {
	src        io.ReadCloser
	limit      int
	done       func([]byte)
	skip       func()
	mu         sync.Mutex
	buf        []byte
	over, fini bool
}

func (b *mirrorBody) Read(p []byte) (int, error) {
	n, err := b.src.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fini {
		return n, err
	}
	b.buf, b.over = holdUpTo(b.buf, p[:n], b.limit, b.over)
	if err == io.EOF {
		b.fini = true
		if b.over {
			b.skip()
		} else {
			b.done(b.buf)
		}
	}
	return n, err
}

func (b *mirrorBody) Close() error {
	b.mu.Lock()
	if !b.fini {
		b.fini = true
		b.skip()
	}
	b.mu.Unlock()
	return b.src.Close()
}

// holdUpTo appends p to buf while the whole stays within limit; past it
// (over), buf is dropped for good.
func holdUpTo(buf, p []byte, limit int, over bool) ([]byte, bool) {
	if over || len(buf)+len(p) > limit {
		return nil, true
	}
	return append(buf, p...), false
}
