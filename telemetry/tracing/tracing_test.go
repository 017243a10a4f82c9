package tracing

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func newTracer(t testing.TB, sampling float64) *Tracer {
	t.Helper()
	tr, err := New(Config{Service: "orders", InstanceID: "orders-1", Endpoint: "http://127.0.0.1:1/v1/traces", Sampling: sampling})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
	})
	return tr
}

func TestNewOff(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantNil bool
		wantErr bool
	}{
		{"sampling 0", Config{Sampling: 0}, true, false},
		{"endpoint none", Config{Sampling: 1, Endpoint: Disabled}, true, false},
		{"bad sampling", Config{Sampling: 1.5}, true, true},
		{"negative sampling", Config{Sampling: -0.1}, true, true},
		{"bad endpoint", Config{Sampling: 1, Endpoint: "ftp://x:1"}, true, true},
		{"no port", Config{Sampling: 1, Endpoint: "http://collector"}, true, true},
		{"lazy endpoint", Config{Sampling: 0.5}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := New(tt.cfg)
			if (err != nil) != tt.wantErr || (tr == nil) != tt.wantNil {
				t.Fatalf("New = %v, %v; want nil %v, error %v", tr, err, tt.wantNil, tt.wantErr)
			}
			if tr != nil {
				_ = tr.Shutdown(context.Background())
			}
		})
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in   string
		want Endpoint
		err  bool
	}{
		{"http://127.0.0.1:15000", Endpoint{Insecure: true, Host: "127.0.0.1:15000", Path: "/v1/traces"}, false},
		{"http://127.0.0.1:15000/", Endpoint{Insecure: true, Host: "127.0.0.1:15000", Path: "/v1/traces"}, false},
		{"https://otel.example:4318/custom", Endpoint{Host: "otel.example:4318", Path: "/custom"}, false},
		{"grpc://127.0.0.1:4317", Endpoint{GRPC: true, Insecure: true, Host: "127.0.0.1:4317"}, false},
		{"grpcs://otel:4317", Endpoint{GRPC: true, Host: "otel:4317"}, false},
		{"127.0.0.1:4317", Endpoint{}, true},
		{"udp://x:1", Endpoint{}, true},
		{"", Endpoint{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseEndpoint(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("ParseEndpoint(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$`)

// sampledFlag is "1" or "0" from a traceparent's flags.
func sampledFlag(flags string) string {
	if strings.IndexByte("13579bdf", flags[1]) >= 0 {
		return "1"
	}
	return "0"
}

func TestPropagation(t *testing.T) {
	const (
		tid = "4bf92f3577b34da6a3ce929d0e0e4736"
		sid = "00f067aa0ba902b7"
	)
	tests := []struct {
		name        string
		sampling    float64
		in          http.Header
		wantTrace   string // "" any new trace
		wantSampled string
		wantEnc     Encoding
		wantB3      bool
	}{
		{"w3c sampled", 0.0001, http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-01"}}, tid, "1", EncodingW3C, false},
		{"w3c not sampled", 1, http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-00"}}, tid, "0", EncodingW3C, false},
		{"b3 single", 0.0001, http.Header{"B3": {tid + "-" + sid + "-1"}}, tid, "1", EncodingB3Single, true},
		{"b3 multi", 0.0001, http.Header{"X-B3-Traceid": {tid}, "X-B3-Spanid": {sid}, "X-B3-Sampled": {"1"}}, tid, "1", EncodingB3Multi, true},
		{"w3c wins over b3", 0.0001, http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-01"},
			"B3": {"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}}, tid, "1", EncodingW3C | EncodingB3Single, true},
		{"none, sampled root", 1, http.Header{}, "", "1", EncodingNone, false},
		{"malformed, new root", 1, http.Header{"Traceparent": {"00-zz-yy-01"}}, "", "1", EncodingW3C, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracer(t, tt.sampling)
			ctx, enc := tr.Extract(context.Background(), tt.in)
			if enc != tt.wantEnc {
				t.Errorf("encoding %b, want %b", enc, tt.wantEnc)
			}
			ctx, span := tr.Start(ctx, "GET orders", trace.SpanKindServer, time.Now())
			defer span.End()
			out := http.Header{}
			tr.Inject(ctx, out, enc)
			m := traceparentRE.FindStringSubmatch(out.Get("traceparent"))
			if m == nil {
				t.Fatalf("injected traceparent %q is not W3C", out.Get("traceparent"))
			}
			if tt.wantTrace != "" && m[1] != tt.wantTrace {
				t.Errorf("trace id %s, want %s (continued)", m[1], tt.wantTrace)
			}
			if m[2] == sid {
				t.Errorf("span id not replaced: the next hop must be this span's child")
			}
			if sampledFlag(m[3]) != tt.wantSampled {
				t.Errorf("sampled flag %s, want %s", m[3], tt.wantSampled)
			}
			if got := out.Get("b3") != "" || out.Get("x-b3-traceid") != ""; got != tt.wantB3 {
				t.Errorf("b3 injected = %v, want %v (%v)", got, tt.wantB3, out)
			}
		})
	}
}

// FuzzExtract feeds arbitrary trace headers: extraction never panics and
// what is injected next is always a well-formed traceparent.
func FuzzExtract(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", "")
	f.Add("", "", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
	f.Add("ff-00000000000000000000000000000000-0000000000000000-ff", "", "d")
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", ",,,=", "0")
	tr := newTracer(f, 1)
	f.Fuzz(func(t *testing.T, traceparent, tracestate, b3 string) {
		h := http.Header{}
		if traceparent != "" {
			h["Traceparent"] = []string{traceparent}
		}
		if tracestate != "" {
			h["Tracestate"] = []string{tracestate}
		}
		if b3 != "" {
			h["B3"] = []string{b3}
		}
		ctx, enc := tr.Extract(context.Background(), h)
		ctx, span := tr.Start(ctx, "x", trace.SpanKindClient, time.Now())
		out := http.Header{}
		tr.Inject(ctx, out, enc)
		span.End()
		if !traceparentRE.MatchString(out.Get("traceparent")) {
			t.Fatalf("injected %q from %q", out.Get("traceparent"), traceparent)
		}
	})
}

func BenchmarkBegin(b *testing.B) {
	for _, bc := range []struct {
		name     string
		sampling float64
		in       http.Header
	}{
		{"root-unsampled", 1e-9, http.Header{}},
		{"parent-unsampled", 1, http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}}},
		{"parent-sampled", 1, http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr := newTracer(b, bc.sampling)
			out := http.Header{}
			b.ReportAllocs()
			for b.Loop() {
				r := tr.Begin(context.Background(), bc.in, "GET", trace.SpanKindClient, time.Now())
				tr.InjectRequest(&r, out)
				if s := r.Span(); s != nil {
					s.End()
				}
			}
		})
	}
}

func TestBegin(t *testing.T) {
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		name        string
		sampling    float64
		in          http.Header
		wantSpan    bool
		wantHeader  string // traceparent after InjectRequest; "new" any fresh one, "same" unchanged
		wantSampled string
	}{
		{"unsampled parent passes through", 1, http.Header{"Traceparent": {"00-" + tid + "-00f067aa0ba902b7-00"}}, false, "same", "0"},
		{"sampled parent gets a child", 1e-9, http.Header{"Traceparent": {"00-" + tid + "-00f067aa0ba902b7-01"}}, true, "child", "1"},
		{"b3 unsampled passes through", 1, http.Header{"B3": {tid + "-00f067aa0ba902b7-0"}}, false, "", ""},
		{"new trace sampled", 1, http.Header{}, true, "new", "1"},
		{"new trace not sampled", 1e-12, http.Header{}, false, "new", "0"},
		{"malformed replaced", 1e-12, http.Header{"Traceparent": {"00-nothex-00f067aa0ba902b7-01"}, "Tracestate": {"a=b"}}, false, "new", "0"},
		{"uppercase hex not fast-pathed", 1, http.Header{"Traceparent": {"00-" + strings.ToUpper(tid) + "-00F067AA0BA902B7-00"}}, true, "new", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracer(t, tt.sampling)
			in := tt.in.Clone()
			r := tr.Begin(context.Background(), in, "GET", trace.SpanKindServer, time.Now())
			if (r.Span() != nil) != tt.wantSpan {
				t.Fatalf("span = %v, want span %v", r.Span(), tt.wantSpan)
			}
			out := tt.in.Clone()
			tr.InjectRequest(&r, out)
			got := out.Get("Traceparent")
			switch tt.wantHeader {
			case "":
				if got != "" {
					t.Fatalf("traceparent %q added, want none", got)
				}
				return
			case "same":
				if got != tt.in.Get("Traceparent") {
					t.Fatalf("traceparent %q, want it unchanged", got)
				}
			}
			m := traceparentRE.FindStringSubmatch(got)
			if m == nil {
				t.Fatalf("traceparent %q is not W3C", got)
			}
			if tt.wantHeader == "child" && (m[1] != tid || strings.Contains(got, "00f067aa0ba902b7")) {
				t.Fatalf("traceparent %q is not a child of %s", got, tid)
			}
			if tt.wantHeader == "new" && m[1] == tid {
				t.Fatalf("traceparent %q kept the old trace", got)
			}
			if sampledFlag(m[3]) != tt.wantSampled {
				t.Fatalf("sampled %s, want %s", m[3], tt.wantSampled)
			}
			if tt.wantHeader == "new" && out.Get("Tracestate") != "" && r.Span() == nil {
				t.Fatalf("tracestate of a replaced context kept")
			}
			if s := r.Span(); s != nil {
				if s.SpanContext().TraceID().String() != m[1] {
					t.Fatalf("span trace %s, header trace %s", s.SpanContext().TraceID(), m[1])
				}
				s.End()
			}
		})
	}
}

// TestRatio checks that new traces are sampled at about the ratio, and that
// the SDK agrees with Begin's decision (a decided-sampled trace gets a span).
func TestRatio(t *testing.T) {
	tr := newTracer(t, 0.25)
	sampled := 0
	const n = 20000
	for range n {
		r := tr.Begin(context.Background(), http.Header{}, "GET", trace.SpanKindClient, time.Now())
		if s := r.Span(); s != nil {
			if !s.SpanContext().IsSampled() {
				t.Fatal("Begin decided to sample but the SDK did not")
			}
			sampled++
			s.End()
		}
	}
	if sampled < n/4-600 || sampled > n/4+600 {
		t.Fatalf("sampled %d of %d at ratio 0.25", sampled, n)
	}
}

// FuzzUnsampledTraceparent: the fast check never says "unsampled" for a
// header the W3C propagator would read differently.
func FuzzUnsampledTraceparent(f *testing.F) {
	for _, s := range []string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-00",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-00",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-00",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0e",
	} {
		f.Add(s)
	}
	var w3c propagation.TraceContext
	f.Fuzz(func(t *testing.T, v string) {
		if !unsampledTraceparent(v) {
			return
		}
		sc := trace.SpanContextFromContext(w3c.Extract(context.Background(), Carrier(http.Header{"Traceparent": {v}})))
		if !sc.IsValid() || sc.IsSampled() {
			t.Fatalf("fast path says unsampled for %q; propagator: valid %v sampled %v", v, sc.IsValid(), sc.IsSampled())
		}
	})
}
