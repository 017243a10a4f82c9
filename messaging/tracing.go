package messaging

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation scope of messaging spans.
const TracerName = "github.com/weftmesh/weft/messaging"

// Tracer returns the tracer of the global TracerProvider (the one the
// telemetry setup installs; a no-op until then, which still carries an
// incoming trace context through).
func Tracer() trace.Tracer { return otel.GetTracerProvider().Tracer(TracerName) }

var fallbackPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Propagator returns the global propagator, or W3C trace context and
// baggage while none is installed: the trace must cross the queue even in
// a process that exports no spans.
func Propagator() propagation.TextMapPropagator {
	p := otel.GetTextMapPropagator()
	if len(p.Fields()) == 0 {
		return fallbackPropagator
	}
	return p
}

// HeaderCarrier adapts NATS message headers (case-sensitive keys) to the
// propagators.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

func (h HeaderCarrier) Get(key string) string { return nats.Header(h).Get(key) }
func (h HeaderCarrier) Set(key, value string) { nats.Header(h).Set(key, value) }
func (h HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's trace context into message headers.
func Inject(ctx context.Context, h nats.Header) { Propagator().Inject(ctx, HeaderCarrier(h)) }

// Extract reads a trace context from message headers.
func Extract(ctx context.Context, h nats.Header) context.Context {
	return Propagator().Extract(ctx, HeaderCarrier(h))
}
