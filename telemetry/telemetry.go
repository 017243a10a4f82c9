// Package telemetry is how the sidecar's proxy reports each request it
// handles: one Exchange per request, begun when the request arrives and
// ended when the response is done, feeds the metrics Recorder, the span of
// the request (client span in the caller's sidecar, server span in the
// callee's) and the access log. The subpackages hold each of those; this
// package holds only what joins them on the request path.
//
//	proxy ──Begin──▶ Exchange (wraps the ResponseWriter: status, bytes)
//	      ──Route/Inject/Upstream*──▶ …
//	      ──End──▶ metrics.Recorder · span.End · accesslog.Logger
package telemetry

import (
	"context"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/telemetry/accesslog"
	"github.com/weftmesh/weft/telemetry/metrics"
	"github.com/weftmesh/weft/telemetry/tracing"
)

// Headers the exchange reads from requests and responses.
const (
	headerSource    = "X-Weft-Source"
	headerError     = "X-Weft-Error"
	headerRequestID = "X-Request-Id"
)

// Telemetry is one sidecar's request instrumentation. A nil *Telemetry is
// valid and records nothing (telemetry off).
type Telemetry struct {
	service string
	metrics *metrics.Recorder
	tracer  *tracing.Tracer
	access  *accesslog.Logger
	pool    sync.Pool
}

// Config says what to record. Nil parts are off.
type Config struct {
	// Service is this sidecar's service: the source of its client
	// requests, the destination of its server requests.
	Service   string
	Metrics   *metrics.Recorder
	Tracer    *tracing.Tracer
	AccessLog *accesslog.Logger
}

// New returns the instrumentation, or nil when every part is off.
func New(cfg Config) *Telemetry {
	if cfg.Metrics == nil && cfg.Tracer == nil && cfg.AccessLog == nil {
		return nil
	}
	t := &Telemetry{service: cfg.Service, metrics: cfg.Metrics, tracer: cfg.Tracer, access: cfg.AccessLog}
	t.pool.New = func() any { return new(Exchange) }
	return t
}

// Exchange is one request as one sidecar sees it. It wraps the
// ResponseWriter to learn the status and body size sent to the caller.
// Methods on a nil *Exchange do nothing.
type Exchange struct {
	http.ResponseWriter
	t   *Telemetry
	req *http.Request
	rep metrics.Reporter

	start    time.Time
	upstream time.Duration // time spent waiting on the upstream
	upStart  time.Time

	status      int
	wroteHeader bool
	bytes       int64

	src, dst string
	peerID   string
	peerAddr string

	trace tracing.Request // span (when sampled) or what to pass on
	span  trace.Span      // trace.Span(), nil when not sampled
}

// Begin starts the exchange of r as seen by rep. For a server exchange the
// source is the caller's x-weft-source and the span continues the caller's
// trace; for a client exchange the destination is set by Route. The
// returned exchange is the ResponseWriter to use from here on.
func (t *Telemetry) Begin(rep metrics.Reporter, w http.ResponseWriter, r *http.Request) *Exchange {
	if t == nil {
		return nil
	}
	ex := t.pool.Get().(*Exchange)
	*ex = Exchange{ResponseWriter: w, t: t, req: r, rep: rep, start: time.Now()}
	if rep == metrics.Server {
		ex.dst = t.service
		ex.src = metrics.Unknown
		if v := r.Header[headerSource]; len(v) > 0 && metrics.ValidName(v[0]) {
			ex.src = v[0]
		}
	} else {
		ex.src = t.service
		ex.dst = metrics.Unknown
	}
	if t.tracer != nil {
		kind := trace.SpanKindClient
		if rep == metrics.Server {
			kind = trace.SpanKindServer
		}
		ex.trace = t.tracer.Begin(r.Context(), r.Header, r.Method, kind, ex.start)
		if ex.span = ex.trace.Span(); ex.span != nil {
			ex.span.SetName(spanName(r, ex.dst, rep))
		}
	}
	return ex
}

// spanName is low-cardinality: the gRPC method for gRPC, else the HTTP
// method and the destination service.
func spanName(r *http.Request, dst string, rep metrics.Reporter) string {
	if isGRPC(r.Header) && len(r.URL.Path) > 1 && len(r.URL.Path) <= 256 {
		return r.URL.Path[1:]
	}
	if rep == metrics.Client {
		return r.Method // the destination is added by Route
	}
	return r.Method + " " + dst
}

func isGRPC(h http.Header) bool {
	v := h["Content-Type"]
	return len(v) > 0 && len(v[0]) >= 16 && v[0][:16] == "application/grpc"
}

// Route names the destination of a client exchange; known is false when
// the service is not registered (the label becomes "unknown").
func (ex *Exchange) Route(service string, known bool) {
	if ex == nil || !known {
		return
	}
	ex.dst = service
	if ex.span != nil && !isGRPC(ex.req.Header) {
		ex.span.SetName(ex.req.Method + " " + service)
	}
}

// Inject writes this exchange's span context into h, the headers of the
// request forwarded upstream, so the next hop's span is this one's child.
// Without tracing, h is left as the app sent it.
func (ex *Exchange) Inject(h http.Header) {
	if ex == nil || ex.t.tracer == nil {
		return
	}
	ex.t.tracer.InjectRequest(&ex.trace, h)
}

// UpstreamStart and UpstreamDone bracket a wait on the upstream (an
// attempt's round trip, a body read); the waits are what the overhead
// metric excludes.
func (ex *Exchange) UpstreamStart() {
	if ex != nil {
		ex.upStart = time.Now()
	}
}

func (ex *Exchange) UpstreamDone() {
	if ex != nil && !ex.upStart.IsZero() {
		ex.upstream += time.Since(ex.upStart)
		ex.upStart = time.Time{}
	}
}

// AddUpstreamWait adds a wait measured by the caller.
func (ex *Exchange) AddUpstreamWait(d time.Duration) {
	if ex != nil {
		ex.upstream += d
	}
}

// Peer names the instance that answered (client exchanges).
func (ex *Exchange) Peer(id, addr string) {
	if ex != nil {
		ex.peerID, ex.peerAddr = id, addr
	}
}

// WriteHeader records the status (1xx informational headers excepted).
func (ex *Exchange) WriteHeader(code int) {
	if !ex.wroteHeader && (code >= 200 || code == http.StatusSwitchingProtocols) {
		ex.status, ex.wroteHeader = code, true
	}
	ex.ResponseWriter.WriteHeader(code)
}

func (ex *Exchange) Write(b []byte) (int, error) {
	if !ex.wroteHeader {
		ex.status, ex.wroteHeader = http.StatusOK, true
	}
	n, err := ex.ResponseWriter.Write(b)
	ex.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (ex *Exchange) Unwrap() http.ResponseWriter { return ex.ResponseWriter }

// statusClientGone is recorded when the caller left before any response.
const statusClientGone = 499

// End records the finished exchange. The exchange must not be used after.
func (ex *Exchange) End() {
	if ex == nil {
		return
	}
	ex.UpstreamDone()
	end := time.Now()
	d := end.Sub(ex.start)
	status := ex.status
	if !ex.wroteHeader {
		status = http.StatusOK // what net/http sends for an empty handler
		if ex.req.Context().Err() != nil {
			status = statusClientGone
		}
	}
	h := ex.ResponseWriter.Header()
	grpcStatus := ""
	if isGRPC(ex.req.Header) {
		grpcStatus = grpcStatusOf(h)
	}
	t := ex.t
	if t.metrics != nil {
		t.metrics.Request(ex.rep, ex.src, ex.dst, status, grpcStatus, d, d-ex.upstream)
	}
	var traceID, spanID string
	if ex.span != nil {
		ex.annotate(status, grpcStatus, h)
		ex.span.End(trace.WithTimestamp(end))
		if t.access != nil {
			sc := ex.span.SpanContext()
			traceID, spanID = sc.TraceID().String(), sc.SpanID().String()
		}
	}
	if t.access != nil {
		e := accesslog.Entry{Time: ex.start, Reporter: ex.rep.String(), Source: ex.src, Destination: ex.dst,
			Method: ex.req.Method, Authority: ex.req.Host, Path: ex.req.URL.Path, Protocol: ex.req.Proto,
			Code: status, GRPCStatus: grpcStatus, WeftError: first(h[headerError]),
			Duration: d, Upstream: ex.upstream, RequestBytes: ex.req.ContentLength, ResponseBytes: ex.bytes,
			UpstreamInstance: ex.peerID, UpstreamAddress: ex.peerAddr, TraceID: traceID, SpanID: spanID,
			RequestID: first(ex.req.Header[headerRequestID])}
		t.access.Log(&e)
	}
	*ex = Exchange{}
	t.pool.Put(ex)
}

func (ex *Exchange) annotate(status int, grpcStatus string, h http.Header) {
	r := ex.req
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", r.Method),
		attribute.Int("http.response.status_code", status),
		attribute.String("url.path", truncate(r.URL.Path, 256)),
		attribute.String("network.protocol.version", protoVersion(r)),
		attribute.String("weft.source_service", ex.src),
		attribute.String("weft.destination_service", ex.dst),
	}
	if ex.peerID != "" {
		attrs = append(attrs, attribute.String("weft.upstream.instance", ex.peerID), attribute.String("server.address", ex.peerAddr))
	}
	if grpcStatus != "" {
		attrs = append(attrs, attribute.String("rpc.grpc.status_code", grpcStatus))
	}
	weftErr := first(h[headerError])
	if weftErr != "" {
		attrs = append(attrs, attribute.String("weft.error", weftErr))
	}
	ex.span.SetAttributes(attrs...)
	switch {
	case weftErr != "":
		ex.span.SetStatus(codes.Error, weftErr)
	case status >= 500 || status == statusClientGone:
		ex.span.SetStatus(codes.Error, http.StatusText(status))
	case grpcStatus != "" && grpcStatus != "0":
		ex.span.SetStatus(codes.Error, "grpc-status "+grpcStatus)
	}
}

// grpcStatusOf finds grpc-status in the headers sent to the caller: a
// trailers-only response has it among the headers; otherwise the reverse
// proxy has copied the trailer into the header map, announced or not.
func grpcStatusOf(h http.Header) string {
	if v := h["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	if v := h[http.TrailerPrefix+"Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func first(v []string) string {
	if len(v) > 0 {
		return v[0]
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func protoVersion(r *http.Request) string {
	if r.ProtoMajor == 2 {
		return "2"
	}
	return "1.1"
}

type exchangeKey struct{}

// NewContext returns ctx carrying ex, for the parts of the proxy that see
// only the forwarded request (transport, rewrite).
func NewContext(ctx context.Context, ex *Exchange) context.Context {
	return context.WithValue(ctx, exchangeKey{}, ex)
}

// FromContext returns the exchange in ctx, or nil.
func FromContext(ctx context.Context) *Exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*Exchange)
	return ex
}

// TCPDone is called once when a tunnelled connection ends, with the bytes
// carried from the caller to the callee (sent) and back (received).
type TCPDone func(sent, received int64)

func noTCP(int64, int64) {}

// TCPClient counts a tunnel this sidecar opens to service dst.
func (t *Telemetry) TCPClient(dst string) TCPDone {
	if t == nil || t.metrics == nil {
		return noTCP
	}
	return t.tcp(metrics.Client, t.service, dst)
}

// TCPServer counts a tunnel another sidecar opened to this one (r is its
// CONNECT request).
func (t *Telemetry) TCPServer(r *http.Request) TCPDone {
	if t == nil || t.metrics == nil {
		return noTCP
	}
	src := metrics.Unknown
	if v := r.Header[headerSource]; len(v) > 0 && metrics.ValidName(v[0]) {
		src = v[0]
	}
	return t.tcp(metrics.Server, src, t.service)
}

func (t *Telemetry) tcp(rep metrics.Reporter, src, dst string) TCPDone {
	sent, recv := t.metrics.TCPConn(rep, src, dst)
	return func(s, r int64) {
		sent.Add(float64(s))
		recv.Add(float64(r))
	}
}
