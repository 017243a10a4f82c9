package telemetry

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/telemetry/accesslog"
	"github.com/weftmesh/weft/telemetry/metrics"
	"github.com/weftmesh/weft/telemetry/tracing"
)

// Fast records one request of the proxy's HTTP/1.1 fast path (proxy/h1),
// which has no http.Request or ResponseWriter. The proxy keeps one Fast per
// connection and reuses it, so an unsampled request costs the metrics
// update and, for a request that starts a new trace, one traceparent.
type Fast struct {
	// In holds the request's trace headers (Traceparent, Tracestate, B3,
	// X-B3-*), canonical keys; the caller fills it before Begin.
	In http.Header
	// Out receives what the next hop needs (see Inject).
	Out http.Header

	t        *Telemetry
	rep      metrics.Reporter
	Src, Dst string
	start    time.Time
	trace    tracing.Request
	span     trace.Span
}

// NewFast returns a reusable recorder for t (nil when telemetry is off).
func (t *Telemetry) NewFast() *Fast {
	if t == nil {
		return nil
	}
	return &Fast{t: t, In: http.Header{}, Out: http.Header{}}
}

// Begin starts recording a request as rep sees it; src and dst as in
// Exchange (metrics.Unknown when not known; a server's destination is
// always its own service). In must hold the trace headers.
func (f *Fast) Begin(rep metrics.Reporter, method, src, dst string, start time.Time) {
	if rep == metrics.Server {
		dst = f.t.service
	}
	f.rep, f.Src, f.Dst, f.start, f.span = rep, src, dst, start, nil
	clear(f.Out)
	if f.t.tracer == nil {
		return
	}
	kind := trace.SpanKindClient
	if rep == metrics.Server {
		kind = trace.SpanKindServer
	}
	f.trace = f.t.tracer.Begin(context.Background(), f.In, method, kind, start)
	if f.span = f.trace.Span(); f.span != nil {
		name := method + " " + dst
		if rep == metrics.Server {
			name = method + " " + f.t.service
		}
		f.span.SetName(name)
	}
}

// Inject fills Out with the trace headers to send to the next hop.
func (f *Fast) Inject() {
	if f.t.tracer != nil {
		f.t.tracer.InjectRequest(&f.trace, f.Out)
	}
}

// FastEnd is what the fast path knows of a finished request.
type FastEnd struct {
	Status              int
	End                 time.Time
	Upstream            time.Duration // time waiting on the upstream
	WeftError           string        // x-weft-error of a mesh-made answer
	Method, Host, Path  string        // only read for spans and the access log
	ReqBytes, RespBytes int64
	PeerID, PeerAddr    string
}

// WantsStrings says whether End reads FastEnd's strings (a sampled span or
// an access log), so the caller converts them only then.
func (f *Fast) WantsStrings() bool { return f.span != nil || f.t.access != nil }

// End records the request: metrics, span, access log.
func (f *Fast) End(e *FastEnd) {
	t := f.t
	d := e.End.Sub(f.start)
	if t.metrics != nil {
		t.metrics.Request(f.rep, f.Src, f.Dst, e.Status, "", d, d-e.Upstream)
	}
	var traceID, spanID string
	if f.span != nil {
		attrs := []attribute.KeyValue{
			attribute.String("http.request.method", e.Method),
			attribute.Int("http.response.status_code", e.Status),
			attribute.String("url.path", truncate(e.Path, 256)),
			attribute.String("network.protocol.version", "1.1"),
			attribute.String("weft.source_service", f.Src),
			attribute.String("weft.destination_service", f.Dst),
		}
		if e.PeerID != "" {
			attrs = append(attrs, attribute.String("weft.upstream.instance", e.PeerID), attribute.String("server.address", e.PeerAddr))
		}
		if e.WeftError != "" {
			attrs = append(attrs, attribute.String("weft.error", e.WeftError))
			f.span.SetStatus(codes.Error, e.WeftError)
		} else if e.Status >= 500 {
			f.span.SetStatus(codes.Error, http.StatusText(e.Status))
		}
		f.span.SetAttributes(attrs...)
		f.span.End(trace.WithTimestamp(e.End))
		sc := f.span.SpanContext()
		if t.access != nil {
			traceID, spanID = sc.TraceID().String(), sc.SpanID().String()
		}
		f.span = nil
	}
	if t.access != nil {
		entry := accesslog.Entry{Time: f.start, Reporter: f.rep.String(), Source: f.Src, Destination: f.Dst,
			Method: e.Method, Authority: e.Host, Path: e.Path, Protocol: "HTTP/1.1",
			Code: e.Status, WeftError: e.WeftError, Duration: d, Upstream: e.Upstream,
			RequestBytes: e.ReqBytes, ResponseBytes: e.RespBytes, UpstreamInstance: e.PeerID, UpstreamAddress: e.PeerAddr,
			TraceID: traceID, SpanID: spanID}
		t.access.Log(&entry)
	}
}
