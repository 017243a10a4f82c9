package messaging

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/telemetry/tracing"
)

// Spans starts the spans of publishes and deliveries and carries the trace
// context across the broker in message headers. Message headers are used
// as an http.Header (NATS headers have the same shape), so the keys are
// canonical ("Traceparent") whichever implementation wrote them.
type Spans interface {
	Extract(ctx context.Context, h http.Header) context.Context
	Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span)
	Inject(ctx context.Context, h http.Header)
}

// TracerName is the instrumentation scope of messaging spans when the
// global TracerProvider is used.
const TracerName = "github.com/weftmesh/weft/messaging"

// MeshSpans uses the sidecar's tracer (telemetry/tracing: its sampling,
// its exporter, W3C and B3). A nil tracer (tracing off) gives DefaultSpans,
// which still carries an incoming trace context through.
func MeshSpans(t *tracing.Tracer) Spans {
	if t == nil {
		return DefaultSpans()
	}
	return meshSpans{t}
}

type meshSpans struct{ t *tracing.Tracer }

func (m meshSpans) Extract(ctx context.Context, h http.Header) context.Context {
	ctx, _ = m.t.Extract(ctx, h)
	return ctx
}

func (m meshSpans) Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	return m.t.Start(ctx, name, kind, time.Now())
}

func (m meshSpans) Inject(ctx context.Context, h http.Header) {
	m.t.Inject(ctx, h, tracing.EncodingW3C)
}

// DefaultSpans uses the global TracerProvider and propagator (no-ops unless
// a program installs them; W3C trace context then).
func DefaultSpans() Spans { return globalSpans{} }

type globalSpans struct{}

var fallbackPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

func propagator() propagation.TextMapPropagator {
	p := otel.GetTextMapPropagator()
	if len(p.Fields()) == 0 {
		return fallbackPropagator
	}
	return p
}

func (globalSpans) Extract(ctx context.Context, h http.Header) context.Context {
	return propagator().Extract(ctx, propagation.HeaderCarrier(h))
}

func (globalSpans) Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	return otel.GetTracerProvider().Tracer(TracerName).Start(ctx, name, trace.WithSpanKind(kind))
}

func (globalSpans) Inject(ctx context.Context, h http.Header) {
	propagator().Inject(ctx, propagation.HeaderCarrier(h))
}
