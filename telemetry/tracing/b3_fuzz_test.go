package tracing

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// FuzzExtractB3Multi: the multi-header B3 form (x-b3-traceid, -spanid,
// -parentspanid, -sampled, -flags) from any caller, alone or beside a
// traceparent. Whatever they hold, the span started from them injects a
// well-formed traceparent, and a valid trace id is kept.
func FuzzExtractB3Multi(f *testing.F) {
	f.Add("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", "05e3ac9a4f6e3b90", "1", "", "")
	f.Add("463ac35c9f6413ad", "a2fb4a1d1a96d312", "", "0", "", "")
	f.Add("", "", "", "", "1", "")
	f.Add("zz", "e457b5a2e4d86bd1", "x", "true", "2", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("00000000000000000000000000000000", "0000000000000000", "", "d", "", "")
	tr := newTracer(f, 1)
	f.Fuzz(func(t *testing.T, traceID, spanID, parent, sampled, flags, traceparent string) {
		h := http.Header{}
		for k, v := range map[string]string{"X-B3-Traceid": traceID, "X-B3-Spanid": spanID, "X-B3-Parentspanid": parent,
			"X-B3-Sampled": sampled, "X-B3-Flags": flags, "Traceparent": traceparent} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		ctx, enc := tr.Extract(context.Background(), h)
		in := trace.SpanContextFromContext(ctx)
		ctx, span := tr.Start(ctx, "x", trace.SpanKindServer, time.Now())
		out := http.Header{}
		tr.Inject(ctx, out, enc)
		span.End()
		m := traceparentRE.FindStringSubmatch(out.Get("traceparent"))
		if m == nil {
			t.Fatalf("injected traceparent %q from %v", out.Get("traceparent"), h)
		}
		if in.IsValid() && m[1] != in.TraceID().String() {
			t.Fatalf("trace id %s extracted, %s injected", in.TraceID(), m[1])
		}
	})
}
