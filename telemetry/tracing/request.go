package tracing

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Request is one proxied request's part in its trace. Sampled, it holds a
// recording span; not sampled, no span at all — only what to pass on, so an
// unsampled request costs a header check (and, for a new trace, two random
// numbers and one traceparent), never the SDK.
type Request struct {
	ctx  context.Context // with the span; nil when not sampled
	span trace.Span      // nil when not sampled
	enc  Encoding
	// tp is the traceparent to send on for a new, unsampled trace; empty
	// when the request's own trace headers pass on unchanged (its caller
	// already decided "not sampled") or when there is a span.
	tp [traceparentLen]byte
}

const traceparentLen = 55 // "00-" 32 hex "-" 16 hex "-" 2 hex

// Span is the request's span, or nil when it is not sampled.
func (r *Request) Span() trace.Span { return r.span }

// Begin decides and starts the request's part in its trace: a sampled
// caller's context gets a child span; an unsampled one passes through
// untouched; a request without (valid) trace context starts a new trace,
// sampled at the configured ratio.
func (t *Tracer) Begin(ctx context.Context, h http.Header, name string, kind trace.SpanKind, start time.Time) Request {
	var r Request
	r.enc = encodings(h)
	switch {
	case r.enc == EncodingW3C && unsampledTraceparent(h["Traceparent"][0]):
		return r // pass on as is
	case r.enc != EncodingNone:
		pctx, _ := t.Extract(ctx, h)
		sc := trace.SpanContextFromContext(pctx)
		if sc.IsValid() {
			if !sc.IsSampled() {
				return r
			}
			r.ctx, r.span = t.Start(pctx, name, kind, start)
			return r
		}
		// Malformed context: a new trace, whose traceparent replaces it.
	}
	var tid trace.TraceID
	binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
	binary.BigEndian.PutUint64(tid[8:], rand.Uint64()|1) // never all zero
	if binary.BigEndian.Uint64(tid[8:])>>1 < t.ratio {
		// The SDK's ratio sampler looks at the same bits and agrees.
		r.ctx, r.span = t.Start(context.WithValue(ctx, presetTraceID{}, tid), name, kind, start)
		return r
	}
	var sb [8]byte
	binary.BigEndian.PutUint64(sb[:], rand.Uint64()|1)
	n := copy(r.tp[:], "00-")
	n += hex.Encode(r.tp[n:], tid[:])
	r.tp[n] = '-'
	n++
	n += hex.Encode(r.tp[n:], sb[:])
	copy(r.tp[n:], "-00")
	return r
}

// NewTraceparent is the traceparent to send on for a new, unsampled trace,
// as bytes of r itself (valid as long as r is and until r is reused), or
// nil: the request has a span (InjectRequest its context) or its own trace
// headers pass on unchanged. This is how the fast path forwards it without
// allocating.
func (r *Request) NewTraceparent() []byte {
	if r.tp[0] == 0 {
		return nil
	}
	return r.tp[:]
}

// PassesOn reports whether a request whose trace headers are this
// traceparent (and perhaps a tracestate) passes them on unchanged, as
// Begin would decide: a well-formed, version-00, unsampled traceparent.
// It reads the raw bytes and allocates nothing.
func PassesOn(traceparent []byte) bool { return unsampledTraceparent(traceparent) }

// Inject writes what the next hop needs into h (the forwarded request's
// headers): the span's context, or the new unsampled traceparent, or
// nothing when the incoming headers pass on unchanged.
func (t *Tracer) InjectRequest(r *Request, h http.Header) {
	switch {
	case r.span != nil:
		t.Inject(r.ctx, h, r.enc)
	case r.tp[0] != 0:
		h["Traceparent"] = []string{string(r.tp[:])}
		delete(h, "Tracestate")
	}
}

// encodings says which trace headers h carries.
func encodings(h http.Header) Encoding {
	var enc Encoding
	if len(h["Traceparent"]) > 0 {
		enc |= EncodingW3C
	}
	if len(h["B3"]) > 0 {
		enc |= EncodingB3Single
	}
	if len(h["X-B3-Traceid"]) > 0 || len(h["X-B3-Sampled"]) > 0 || len(h["X-B3-Flags"]) > 0 {
		enc |= EncodingB3Multi
	}
	return enc
}

// unsampledTraceparent reports whether v is a well-formed version-00
// traceparent with the sampled flag clear — the common case at a low
// sampling ratio, checked without the propagator. Anything else (sampled,
// other versions, malformed) goes the propagator's way.
func unsampledTraceparent[T string | []byte](v T) bool {
	if len(v) != traceparentLen || v[0] != '0' || v[1] != '0' || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return false
	}
	// Version 00 defines one flag; the propagator refuses others, so only
	// "00" (not sampled) is taken here.
	return v[53] == '0' && v[54] == '0' && lowerHex(v[3:35]) && lowerHex(v[36:52]) && !allZero(v[3:35]) && !allZero(v[36:52])
}

func lowerHex[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

// sampleBound is the SDK's TraceIDRatioBased bound for ratio.
func sampleBound(ratio float64) uint64 {
	if ratio >= 1 {
		return 1 << 63
	}
	if ratio <= 0 {
		return 0
	}
	return uint64(ratio * (1 << 63))
}

// presetTraceID carries the id Begin chose for a new sampled trace to the
// SDK's id generator, so the span has the id the decision was made on.
type presetTraceID struct{}

type idGenerator struct{}

func (idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	tid, ok := ctx.Value(presetTraceID{}).(trace.TraceID)
	if !ok {
		binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
		binary.BigEndian.PutUint64(tid[8:], rand.Uint64()|1)
	}
	return tid, newSpanID()
}

func (idGenerator) NewSpanID(context.Context, trace.TraceID) trace.SpanID { return newSpanID() }

func newSpanID() trace.SpanID {
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], rand.Uint64()|1)
	return sid
}
