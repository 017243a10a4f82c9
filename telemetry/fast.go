package telemetry

import (
	"bytes"
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
// connection and reuses it, so that an unsampled request costs the metrics
// update and nothing else: its trace fields are read in place, a caller's
// unsampled traceparent passes on untouched, and a new trace's traceparent
// is written into the Fast itself. Only a sampled request (a span) goes
// through the tracing SDK and its http.Header.
type Fast struct {
	// Out receives a recorded span's trace headers to send to the next hop
	// (see Inject); it is empty for an unsampled request.
	Out http.Header

	t        *Telemetry
	rep      metrics.Reporter
	Src, Dst string
	start    time.Time
	trace    tracing.Request
	span     trace.Span
	// in holds the request's trace fields by traceFields index, aliasing
	// the request; set by TraceField, read and cleared by Begin.
	in  [len(traceFields)][]byte
	hdr http.Header // in as the SDK reads it, built only when it must
}

// traceFields are the trace context fields the tracer reads, with the keys
// the SDK's propagators look them up by.
var traceFields = [...]string{"Traceparent", "Tracestate", "B3",
	"X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Flags"}

var traceFieldNames = func() (b [len(traceFields)][]byte) {
	for i, k := range traceFields {
		b[i] = []byte(k)
	}
	return b
}()

const (
	fieldTraceparent = 0
	fieldTracestate  = 1
)

// NewFast returns a reusable recorder for t (nil when telemetry is off).
func (t *Telemetry) NewFast() *Fast {
	if t == nil {
		return nil
	}
	return &Fast{t: t, Out: http.Header{}, hdr: http.Header{}}
}

// TraceField hands Begin one field of the request if it is trace context
// (name is matched ASCII case-insensitively) and reports whether it was.
// value is read in place, until Begin returns; a repeated field keeps its
// last value.
func (f *Fast) TraceField(name, value []byte) bool {
	for i, k := range traceFieldNames {
		if len(name) == len(k) && bytes.EqualFold(name, k) {
			f.in[i] = value
			return true
		}
	}
	return false
}

// Begin starts recording a request as rep sees it; src and dst as in
// Exchange (metrics.Unknown when not known; a server's destination is
// always its own service). The request's trace fields must have been
// handed to TraceField.
func (f *Fast) Begin(rep metrics.Reporter, method, src, dst string, start time.Time) {
	if rep == metrics.Server {
		dst = f.t.service
	}
	f.rep, f.Src, f.Dst, f.start, f.span = rep, src, dst, start, nil
	f.trace = tracing.Request{}
	clear(f.Out)
	defer clear(f.in[:]) // drop the aliases into the request
	if f.t.tracer == nil {
		return
	}
	if f.passesOn() {
		return // the caller's unsampled context goes on as it came
	}
	clear(f.hdr)
	for i, v := range f.in {
		if v != nil {
			f.hdr[traceFields[i]] = []string{string(v)}
		}
	}
	kind := trace.SpanKindClient
	if rep == metrics.Server {
		kind = trace.SpanKindServer
	}
	f.trace = f.t.tracer.Begin(context.Background(), f.hdr, method, kind, start)
	if f.span = f.trace.Span(); f.span != nil {
		name := method + " " + dst
		if rep == metrics.Server {
			name = method + " " + f.t.service
		}
		f.span.SetName(name)
	}
}

// passesOn reports whether the request's trace context is a W3C one that
// is not sampled, which the tracer would pass on unchanged (checked here on
// the fields in place, without building a header for it).
func (f *Fast) passesOn() bool {
	for i, v := range f.in {
		if v != nil && i != fieldTraceparent && i != fieldTracestate {
			return false
		}
	}
	return f.in[fieldTraceparent] != nil && tracing.PassesOn(f.in[fieldTraceparent])
}

// Inject prepares the trace headers to send to the next hop: a recorded
// span's in Out; a new unsampled trace's traceparent is Traceparent.
func (f *Fast) Inject() {
	if f.span != nil {
		f.t.tracer.InjectRequest(&f.trace, f.Out)
	}
}

// Traceparent is the traceparent to send to the next hop for a request
// that starts a new, unsampled trace, or nil. It is the Fast's own memory,
// valid until the next Begin.
func (f *Fast) Traceparent() []byte { return f.trace.NewTraceparent() }

// FastEnd is what the fast path knows of a finished request.
type FastEnd struct {
	Status              int
	End                 time.Time
	Upstream            time.Duration // time waiting on the upstream
	WeftError           string        // x-weft-error of a mesh-made answer
	GRPCStatus          string        // a gRPC call's grpc-status ("" for other requests)
	HTTP2               bool          // the native h2 engine's request (else HTTP/1.1)
	Method, Host, Path  string        // only read for spans and the access log
	ReqBytes, RespBytes int64
	PeerID, PeerAddr    string
}

func (e *FastEnd) protoVersion() string {
	if e.HTTP2 {
		return "2" // as Exchange's spans say it
	}
	return "1.1"
}

// protocol is the access log's, as net/http names it (r.Proto).
func (e *FastEnd) protocol() string {
	if e.HTTP2 {
		return "HTTP/2.0"
	}
	return "HTTP/1.1"
}

// WantsStrings says whether End reads FastEnd's strings (a sampled span or
// an access log), so the caller converts them only then.
func (f *Fast) WantsStrings() bool { return f.span != nil || f.t.access != nil }

// End records the request: metrics, span, access log.
func (f *Fast) End(e *FastEnd) {
	t := f.t
	d := e.End.Sub(f.start)
	if t.metrics != nil {
		t.metrics.Request(f.rep, f.Src, f.Dst, e.Status, e.GRPCStatus, d, d-e.Upstream)
	}
	var traceID, spanID string
	if f.span != nil {
		attrs := []attribute.KeyValue{
			attribute.String("http.request.method", e.Method),
			attribute.Int("http.response.status_code", e.Status),
			attribute.String("url.path", truncate(e.Path, 256)),
			attribute.String("network.protocol.version", e.protoVersion()),
			attribute.String("weft.source_service", f.Src),
			attribute.String("weft.destination_service", f.Dst),
		}
		if e.PeerID != "" {
			attrs = append(attrs, attribute.String("weft.upstream.instance", e.PeerID), attribute.String("server.address", e.PeerAddr))
		}
		if e.GRPCStatus != "" {
			attrs = append(attrs, attribute.String("rpc.grpc.status_code", e.GRPCStatus)) // as Exchange's spans
		}
		if e.WeftError != "" {
			attrs = append(attrs, attribute.String("weft.error", e.WeftError))
			f.span.SetStatus(codes.Error, e.WeftError)
		} else if e.Status >= 500 {
			f.span.SetStatus(codes.Error, http.StatusText(e.Status))
		} else if e.GRPCStatus != "" && e.GRPCStatus != "0" {
			f.span.SetStatus(codes.Error, "grpc-status "+e.GRPCStatus)
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
			Method: e.Method, Authority: e.Host, Path: e.Path, Protocol: e.protocol(), GRPCStatus: e.GRPCStatus,
			Code: e.Status, WeftError: e.WeftError, Duration: d, Upstream: e.Upstream,
			RequestBytes: e.ReqBytes, ResponseBytes: e.RespBytes, UpstreamInstance: e.PeerID, UpstreamAddress: e.PeerAddr,
			TraceID: traceID, SpanID: spanID}
		t.access.Log(&entry)
	}
}
