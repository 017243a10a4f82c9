// Package proxy is the sidecar's data path. Outbound takes the app's calls
// (HTTP/1.1 proxy-style or origin-form, or h2c) and runs each through the
// request pipeline (package pipeline: destination, policy, instance,
// tries) to that instance's sidecar; FastOutbound is the same for the h1
// engine. Inbound takes calls from other sidecars and forwards them to the
// local app. Opaque TCP rides a CONNECT tunnel between the same two
// listeners.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/pipeline"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/metrics"
)

// Resolver finds a destination service's current view.
type Resolver = pipeline.Resolver

// Outbound serves the app's outgoing calls.
type Outbound struct {
	resolver Resolver
	source   string
	local    http.Handler
	log      *slog.Logger
	rp       *httputil.ReverseProxy
	tr       *meshTransport
	tel      *telemetry.Telemetry
	pipe     *pipeline.Pipeline
	mirror   *mirror

	Requests atomic.Int64
}

// OutboundConfig configures an Outbound.
type OutboundConfig struct {
	Resolver Resolver
	// Source is the calling service's name, sent as x-weft-source.
	Source string
	// Local serves requests addressed to the sidecar itself (Host is the
	// outbound address or localhost), such as messaging's /v1/publish.
	Local  http.Handler
	Logger *slog.Logger
	// Telemetry records each request (client side); nil records nothing.
	Telemetry *telemetry.Telemetry
	// Dial, when set, connects to other sidecars (mTLS) offering the ALPN
	// protocol the connection will speak; nil: plain TCP.
	Dial DialFunc
	// Metrics counts the pipeline's retries, overflows and ejections; nil
	// counts nothing.
	Metrics *metrics.Recorder
}

// DialFunc opens a connection to another sidecar's inbound listener.
type DialFunc func(ctx context.Context, network, addr, alpn string) (net.Conn, error)

// NewOutbound returns the outbound handler.
func NewOutbound(cfg OutboundConfig) *Outbound {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	o := &Outbound{resolver: cfg.Resolver, source: cfg.Source, local: cfg.Local, log: cfg.Logger, tel: cfg.Telemetry,
		pipe:   pipeline.New(pipeline.Config{Resolver: cfg.Resolver, Source: cfg.Source, Metrics: cfg.Metrics}),
		mirror: newMirror(cfg.Dial, cfg.Metrics, cfg.Source)}
	o.tr = newMeshTransport(cfg.Dial)
	o.tr.pipe = o.pipe
	o.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			// The Host header stays the service name: the callee's sidecar
			// and app see what the caller asked for. URL.Host is set per
			// attempt by the transport.
			pr.Out.Host = pr.In.Host
			if o.source != "" {
				pr.Out.Header.Set(HeaderSource, o.source)
			}
			if rt, _ := pr.In.Context().Value(routeKey{}).(*route); rt != nil {
				rt.ex.Inject(pr.Out.Header) // this hop's span is the callee's parent
			}
		},
		Transport: o.tr,
		ModifyResponse: func(resp *http.Response) error {
			err := grpcTrailersOnly(resp)
			resp.Header.Del(headerGRPCStatusHint) // for sidecars only, not the app
			resp.Header.Del(balancer.LoadHeader)  // consumed by this sidecar (Answered)
			return err
		},
		BufferPool:   copyBuffers,
		ErrorHandler: o.errorHandler,
		ErrorLog:     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return o
}

// Pipeline is the request pipeline both of o's engines run (to add a stage).
func (o *Outbound) Pipeline() *pipeline.Pipeline { return o.pipe }

// Local is the handler for requests addressed to the sidecar itself.
func (o *Outbound) Local() http.Handler { return o.local }

// CloseIdle closes pooled connections to other sidecars.
func (o *Outbound) CloseIdle() { o.tr.closeIdle() }

func (o *Outbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.Requests.Add(1)
	if r.Method == http.MethodConnect {
		(&MeshError{Status: http.StatusMethodNotAllowed, Code: CodeUnsupported,
			Message: "CONNECT through the outbound listener is not supported; use --upstream NAME=ADDR for raw TCP"}).Write(w)
		return
	}
	host := r.Host
	if host == "" {
		(&MeshError{Status: http.StatusBadRequest, Code: CodeBadRequest,
			Message: "no Host: name the service to call (Host: orders, or an absolute URL http://orders/...)"}).Write(w)
		return
	}
	service := serviceName(host)
	if o.local != nil && isLocalHost(service) {
		o.local.ServeHTTP(w, r)
		return
	}
	grpc := isGRPC(r)
	ex := o.tel.Begin(metrics.Client, w, r)
	if ex != nil {
		defer ex.End()
		w = ex
	}
	rt := &route{ex: ex, grpc: grpc}
	rq := &httpRequest{r: r, grpc: grpc}
	c := &rt.call
	e := o.pipe.Start(c, rq, time.Now())
	defer o.pipe.End(c)
	if e != nil {
		if c.Service == "" {
			c.Service = service
		}
		ex.Route(c.Service, c.Dest != nil && c.Dest.Exists)
		e.WriteFor(w, grpc)
		return
	}
	ex.Route(c.Service, true)
	if c.MirrorAddr != "" {
		o.mirror.mirrorHTTP(c.Service, r, c.MirrorAddr, o.source, c.MirrorLimit())
	}
	if limit := c.ReplayLimit(); limit > 0 && r.Body != nil && r.Body != http.NoBody {
		rt.body = &replayBody{src: r.Body, limit: limit}
		r.Body = rt.body
	}
	o.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, rt)))
}

// httpRequest adapts a net/http request to pipeline.Request.
type httpRequest struct {
	r    *http.Request
	grpc bool
}

func (q *httpRequest) Method() string            { return q.r.Method }
func (q *httpRequest) Authority() string         { return q.r.Host }
func (q *httpRequest) Path() string              { return q.r.URL.RequestURI() }
func (q *httpRequest) Header(name string) string { return q.r.Header.Get(name) }
func (q *httpRequest) GRPC() bool                { return q.grpc }
func (q *httpRequest) RemoteIP() string {
	h, _, _ := net.SplitHostPort(q.r.RemoteAddr)
	return h
}

// Replayable: no body, or one the outbound holds as it streams it (a
// replayBody) — whether all of it was held is known only after a try,
// which reports it in Outcome.Unreplayable.
func (q *httpRequest) Replayable(limit int) bool {
	b := q.r.Body
	return b == nil || b == http.NoBody || (limit > 0 && q.r.ContentLength <= int64(limit))
}

func lookupError(service string, err error) *MeshError { return pipeline.LookupError(service, err) }

// serviceName is the host without port, lowercased.
func serviceName(host string) string {
	// Only a host with a colon can have a port: SplitHostPort's error for
	// a bare name ("back", as gRPC clients send :authority) is an
	// allocation, 7% of the client sidecar's CPU at max on the h2 engine.
	if strings.IndexByte(host, ':') < 0 {
		// no port
	} else if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

func isLocalHost(h string) bool {
	return h == "127.0.0.1" || h == "localhost" || h == "::1" || h == "[::1]"
}

type routeKey struct{}

type route struct {
	call pipeline.Call
	ex   *telemetry.Exchange // nil when telemetry is off
	grpc bool
	body *replayBody // nil when the body is not held for retries
}

var errUpstreamTimeout = errors.New("upstream timeout")

// meshTransport picks the instance per attempt, so a refused connection is
// retried on another instance, and bounds the wait for response headers by
// the destination's timeout.
type meshTransport struct {
	h1, h2 *http.Transport
	pipe   *pipeline.Pipeline
}

func newMeshTransport(dial DialFunc) *meshTransport {
	dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	dial1, dial2 := dialer.DialContext, dialer.DialContext
	if dial != nil {
		// TLS under an "http" URL: the transports speak HTTP/1.1 or h2
		// prior knowledge over the connection Dial returns.
		dial1 = func(ctx context.Context, n, a string) (net.Conn, error) { return dial(ctx, n, a, "http/1.1") }
		dial2 = func(ctx context.Context, n, a string) (net.Conn, error) { return dial(ctx, n, a, "h2") }
	}
	h1 := &http.Transport{
		DialContext:         dial1,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	h2 := &http.Transport{
		DialContext:        dial2,
		IdleConnTimeout:    90 * time.Second,
		DisableCompression: true,
		Protocols:          new(http.Protocols),
	}
	h2.Protocols.SetUnencryptedHTTP2(true)
	return &meshTransport{h1: h1, h2: h2}
}

func (t *meshTransport) closeIdle() {
	t.h1.CloseIdleConnections()
	t.h2.CloseIdleConnections()
}

func (t *meshTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, _ := req.Context().Value(routeKey{}).(*route)
	if rt == nil {
		return nil, errors.New("proxy: request without a route")
	}
	base := t.h1
	if req.ProtoMajor == 2 {
		base = t.h2
	}
	c, p := &rt.call, t.pipe
	for {
		now := time.Now()
		addr, timeout, e := p.Try(c, now)
		if e != nil {
			return nil, e
		}
		ctx, cancel := context.WithCancelCause(req.Context())
		timer := time.AfterFunc(timeout, func() { cancel(errUpstreamTimeout) })
		out := req.WithContext(ctx)
		u := *req.URL
		u.Host = addr
		out.URL = &u
		if c.GRPCDeadline() || (c.GRPC && req.Header.Get("Grpc-Timeout") != "") {
			// The call's deadline — the caller's or, when shorter, the
			// policy's — less what the mesh has spent of it.
			out.Header = req.Header.Clone()
			out.Header.Set("Grpc-Timeout", pipeline.FormatGRPCTimeout(c.Remaining(now)))
		}
		if rt.body != nil && c.Tries > 1 {
			out.Body = rt.body.again()
		}
		rt.ex.UpstreamStart()
		resp, err := base.RoundTrip(out)
		rt.ex.UpstreamDone()
		timer.Stop()
		var o pipeline.Outcome
		o.Unreplayable = rt.body != nil && !rt.body.whole()
		if err != nil {
			cause := context.Cause(ctx)
			cancel(nil)
			if req.Context().Err() != nil {
				return nil, err // the app went away
			}
			switch {
			case errors.Is(cause, errUpstreamTimeout):
				o.Failure = pipeline.FailTimeout
			case isDialError(err):
				o.Failure = pipeline.FailConnect
			default:
				o.Failure = pipeline.FailReset
			}
			o.Err = err
			retry, wait := p.Answered(c, &o, time.Now())
			if !retry {
				return nil, c.Err
			}
			if !sleepCtx(req.Context(), wait) {
				return nil, req.Context().Err()
			}
			continue
		}
		o.Status = resp.StatusCode
		o.WeftError = resp.Header.Get(HeaderError)
		gs := resp.Header.Get("Grpc-Status")
		if hint := resp.Header.Get(headerGRPCStatusHint); hint != "" {
			resp.Header.Del(headerGRPCStatusHint)
			if gs == "" {
				gs = hint
			}
		}
		if gs != "" {
			// A trailers-only answer: the call's status is in the head.
			if n, err := strconv.Atoi(gs); err == nil {
				o.HasGRPC, o.GRPCStatus = true, n
			}
		}
		if v := resp.Header.Get(balancer.LoadHeader); v != "" {
			o.Load = []byte(v)
		}
		retry, wait := p.Answered(c, &o, time.Now())
		if retry {
			// Read a small rest so the connection can be reused.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			cancel(nil)
			if !sleepCtx(req.Context(), wait) {
				return nil, req.Context().Err()
			}
			continue
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// An upgraded stream is long-lived; it is not a request in flight.
			c.Detach()
			return resp, nil
		}
		rt.ex.Peer(c.Last.ID, c.Last.Address)
		resp.Body = newTrackedBody(resp.Body, cancel, rt.ex, c.Policy.IdleTimeout)
		return resp, nil
	}
}

// sleepCtx waits d unless ctx ends first (false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// replayBody holds a request body as it is streamed to the first try, up
// to limit bytes, so that a retry can send it again — if it was read to
// its end within the limit. A streaming call (a gRPC stream) is never
// held back: it is forwarded as it comes, and simply not retried.
type replayBody struct {
	src   io.ReadCloser
	limit int
	mu    sync.Mutex // the transport reads on its own goroutine
	buf   []byte
	eof   bool
	over  bool
}

func (b *replayBody) Read(p []byte) (int, error) {
	n, err := b.src.Read(p)
	b.mu.Lock()
	b.buf, b.over = holdUpTo(b.buf, p[:n], b.limit, b.over)
	if err == io.EOF {
		b.eof = true
	}
	b.mu.Unlock()
	return n, err
}

// Close is the transport's; the server closes the real body.
func (b *replayBody) Close() error { return nil }

func (b *replayBody) whole() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof && !b.over
}

// again is the body for the next try: what was held, then (when the
// source was not read to its end, as after a refused connection) the rest
// of the source, still held as it passes.
func (b *replayBody) again() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := bytes.NewReader(b.buf[:len(b.buf):len(b.buf)])
	if b.eof {
		return io.NopCloser(held)
	}
	return io.NopCloser(io.MultiReader(held, b))
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// trackedBody ends the try's timeout context when the response body is
// done, counts the wait on it as upstream time (so the overhead metric
// holds only the sidecar's own work), and cuts a body that stalls for the
// policy's idle timeout.
type trackedBody struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
	done   atomic.Bool
	ex     *telemetry.Exchange
	idle   time.Duration
	timer  *time.Timer
}

var errIdleTimeout = errors.New("upstream response body idle timeout")

func newTrackedBody(rc io.ReadCloser, cancel context.CancelCauseFunc, ex *telemetry.Exchange, idle time.Duration) *trackedBody {
	b := &trackedBody{ReadCloser: rc, cancel: cancel, ex: ex, idle: idle}
	if idle > 0 {
		b.timer = time.AfterFunc(idle, func() { cancel(errIdleTimeout) })
	}
	return b
}

func (b *trackedBody) Read(p []byte) (int, error) {
	if b.timer != nil {
		b.timer.Reset(b.idle)
	}
	if b.ex == nil {
		return b.ReadCloser.Read(p)
	}
	b.ex.UpstreamStart()
	n, err := b.ReadCloser.Read(p)
	b.ex.UpstreamDone()
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.done.CompareAndSwap(false, true) {
		if b.timer != nil {
			b.timer.Stop()
		}
		b.cancel(nil)
	}
	return err
}

func (o *Outbound) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	var me *MeshError
	if errors.As(err, &me) {
		o.log.Debug("outbound error", "host", r.Host, "err", err)
		me.WriteFor(w, isGRPC(r))
		return
	}
	if r.Context().Err() != nil {
		return // the app went away; nobody to answer
	}
	o.log.Debug("outbound error", "host", r.Host, "err", err)
	(&MeshError{Status: http.StatusBadGateway, Code: CodeUpstreamReset, Service: serviceName(r.Host),
		Message: "the upstream failed the request", Err: err}).WriteFor(w, isGRPC(r))
}
