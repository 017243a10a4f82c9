package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/accesslog"
	"github.com/weftmesh/weft/telemetry/metrics"
	"github.com/weftmesh/weft/telemetry/tracestore"
	"github.com/weftmesh/weft/telemetry/tracing"
)

func counts(t *testing.T, r *metrics.Recorder) map[string]float64 {
	t.Helper()
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != metrics.RequestsTotal {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[key(m)] = m.GetCounter().GetValue()
		}
	}
	return out
}

func key(m *dto.Metric) string {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return strings.Join([]string{l["reporter"], l["source_service"], l["destination_service"], l["response_code"], l["grpc_status"]}, ",")
}

// serve runs one request through an exchange the way the proxy does.
func serve(tel *telemetry.Telemetry, rep metrics.Reporter, r *http.Request, route string, known bool, h http.HandlerFunc) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	ex := tel.Begin(rep, w, r)
	ex.Route(route, known)
	ex.UpstreamStart()
	time.Sleep(time.Millisecond)
	ex.UpstreamDone()
	h(ex, r)
	ex.End()
	return w
}

func TestExchangeMetrics(t *testing.T) {
	grpcReq := func() *http.Request {
		r := httptest.NewRequest("POST", "http://orders/pkg.Svc/Get", nil)
		r.Header.Set("Content-Type", "application/grpc")
		return r
	}
	tests := []struct {
		name    string
		rep     metrics.Reporter
		req     func() *http.Request
		src     string
		route   string
		known   bool
		handler http.HandlerFunc
		want    string
	}{
		{"client 200", metrics.Client, func() *http.Request { return httptest.NewRequest("GET", "http://orders/x", nil) }, "", "orders", true,
			func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }, "client,frontend,orders,200,"},
		{"client unknown service", metrics.Client, func() *http.Request { return httptest.NewRequest("GET", "http://nope/x", nil) }, "", "nope", false,
			func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }, "client,frontend,unknown,503,"},
		{"server with source", metrics.Server, func() *http.Request { return httptest.NewRequest("GET", "http://frontend/x", nil) }, "orders", "", false,
			func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(404) }, "server,orders,frontend,404,"},
		{"server spoofed source", metrics.Server, func() *http.Request { return httptest.NewRequest("GET", "http://frontend/x", nil) }, "<script>", "", false,
			func(w http.ResponseWriter, _ *http.Request) {}, "server,unknown,frontend,200,"},
		{"grpc trailer", metrics.Client, grpcReq, "", "orders", true,
			func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Trailer", "Grpc-Status")
				w.WriteHeader(200)
				w.Header().Set("Grpc-Status", "5")
			}, "client,frontend,orders,200,5"},
		{"grpc undeclared trailer", metrics.Client, grpcReq, "", "orders", true,
			func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(200)
				w.Header().Set(http.TrailerPrefix+"Grpc-Status", "14")
			}, "client,frontend,orders,200,14"},
		{"grpc trailers-only", metrics.Client, grpcReq, "", "orders", true,
			func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Grpc-Status", "0")
				w.WriteHeader(200)
			}, "client,frontend,orders,200,0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := "frontend"
			rec := metrics.New(metrics.Options{})
			tel := telemetry.New(telemetry.Config{Service: svc, Metrics: rec})
			r := tt.req()
			if tt.src != "" {
				r.Header.Set("X-Weft-Source", tt.src)
			}
			serve(tel, tt.rep, r, tt.route, tt.known, tt.handler)
			if got := counts(t, rec); len(got) != 1 || got[tt.want] != 1 {
				t.Fatalf("series %v, want {%s: 1}", got, tt.want)
			}
		})
	}
}

func TestNilTelemetry(t *testing.T) {
	var tel *telemetry.Telemetry
	w := httptest.NewRecorder()
	ex := tel.Begin(metrics.Client, w, httptest.NewRequest("GET", "/", nil))
	if ex != nil {
		t.Fatal("nil telemetry began an exchange")
	}
	ex.Route("x", true)
	ex.Inject(http.Header{})
	ex.UpstreamStart()
	ex.UpstreamDone()
	ex.End()
	tel.TCPClient("x")(1, 2)
}

func TestOverheadExcludesUpstream(t *testing.T) {
	rec := metrics.New(metrics.Options{})
	tel := telemetry.New(telemetry.Config{Service: "a", Metrics: rec})
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "http://b/", nil)
	ex := tel.Begin(metrics.Client, w, r)
	ex.Route("b", true)
	ex.UpstreamStart()
	time.Sleep(50 * time.Millisecond) // the upstream is slow
	ex.UpstreamDone()
	ex.End()
	mfs, _ := rec.Registry().Gather()
	for _, mf := range mfs {
		switch mf.GetName() {
		case metrics.ProxyOverhead:
			for _, m := range mf.GetMetric() {
				if h := m.GetHistogram(); h.GetSampleCount() == 1 && h.GetSampleSum() > 0.010 {
					t.Fatalf("overhead %vs includes the 50ms upstream wait", h.GetSampleSum())
				}
			}
		case metrics.RequestDuration:
			if s := mf.GetMetric()[0].GetHistogram().GetSampleSum(); s < 0.050 {
				t.Fatalf("duration %vs, want ≥ 50ms", s)
			}
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAccessLogEntry(t *testing.T) {
	var buf syncBuffer
	al := accesslog.New(&buf, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = al.Run(ctx) }()
	tel := telemetry.New(telemetry.Config{Service: "frontend", AccessLog: al})
	r := httptest.NewRequest("GET", "http://orders/items/42?secret=1", nil)
	r.Header.Set("X-Request-Id", "req-1")
	w := httptest.NewRecorder()
	ex := tel.Begin(metrics.Client, w, r)
	ex.Route("orders", true)
	ex.Peer("orders-1", "127.0.0.1:9")
	ex.Header().Set("X-Weft-Error", "upstream_timeout")
	ex.WriteHeader(504)
	ex.Write([]byte("12345"))
	ex.End()
	cancel()
	<-done
	var got map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &got); err != nil {
		t.Fatalf("line %q: %v", buf.String(), err)
	}
	want := map[string]any{"reporter": "client", "source_service": "frontend", "destination_service": "orders",
		"method": "GET", "authority": "orders", "path": "/items/42", "response_code": 504.0, "weft_error": "upstream_timeout",
		"response_bytes": 5.0, "upstream_instance": "orders-1", "upstream_address": "127.0.0.1:9", "request_id": "req-1", "protocol": "HTTP/1.1"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if strings.Contains(buf.String(), "secret") {
		t.Error("the query string is logged")
	}
}

// TestTwoHopTrace: a client exchange in one sidecar and the server exchange
// it causes in another export spans to a real OTLP/HTTP receiver, linked
// parent → child.
func TestTwoHopTrace(t *testing.T) {
	store := tracestore.New(tracestore.Options{})
	srv := httptest.NewServer(tracestore.NewReceiver(store, nil))
	defer srv.Close()
	newTel := func(svc string) (*telemetry.Telemetry, *tracing.Tracer) {
		tr, err := tracing.New(tracing.Config{Service: svc, InstanceID: svc + "-1", Endpoint: srv.URL + "/v1/traces", Sampling: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
		return telemetry.New(telemetry.Config{Service: svc, Tracer: tr}), tr
	}
	client, ctr := newTel("frontend")
	server, str := newTel("orders")

	appReq := httptest.NewRequest("GET", "http://orders/orders/1", nil)
	cw := httptest.NewRecorder()
	cex := client.Begin(metrics.Client, cw, appReq)
	cex.Route("orders", true)
	out := appReq.Header.Clone()
	cex.Inject(out) // what the outbound forwards
	inReq := httptest.NewRequest("GET", "http://orders/orders/1", nil)
	inReq.Header = out
	inReq.Header.Set("X-Weft-Source", "frontend")
	sw := httptest.NewRecorder()
	sex := server.Begin(metrics.Server, sw, inReq)
	toApp := inReq.Header.Clone()
	sex.Inject(toApp) // what the inbound forwards to the app
	sex.WriteHeader(200)
	sex.End()
	cex.WriteHeader(200)
	cex.End()
	for _, tr := range []*tracing.Tracer{ctr, str} {
		if err := tr.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	list := store.List("", 10)
	if len(list.Traces) != 1 {
		t.Fatalf("traces %+v, want one", list.Traces)
	}
	tr, _ := store.Get(list.Traces[0].TraceID)
	if len(tr.Spans) != 2 {
		t.Fatalf("spans %+v, want 2", tr.Spans)
	}
	c, s := tr.Spans[0], tr.Spans[1]
	if c.Kind != "client" || c.Service != "frontend" || c.ParentSpanID != "" || c.Name != "GET orders" {
		t.Errorf("client span %+v", c)
	}
	if s.Kind != "server" || s.Service != "orders" || s.ParentSpanID != c.SpanID {
		t.Errorf("server span %+v, want child of %s", s, c.SpanID)
	}
	if !strings.Contains(toApp.Get("Traceparent"), s.SpanID) {
		t.Errorf("app sees traceparent %q, want the server span %s as parent", toApp.Get("Traceparent"), s.SpanID)
	}
	if s.Attributes["weft.source_service"] != "frontend" || s.Attributes["http.response.status_code"] != float64(200) && s.Attributes["http.response.status_code"] != int64(200) {
		t.Errorf("server span attributes %v", s.Attributes)
	}
}

// BenchmarkExchange is the whole per-request telemetry cost in one sidecar:
// Begin, route, one upstream wait, headers, End.
func BenchmarkExchange(b *testing.B) {
	tr, err := tracing.New(tracing.Config{Service: "frontend", Endpoint: "http://127.0.0.1:1/v1/traces", Sampling: tracing.DefaultSampling})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	for _, bc := range []struct {
		name string
		tel  *telemetry.Telemetry
	}{
		{"off", nil},
		{"metrics", telemetry.New(telemetry.Config{Service: "frontend", Metrics: metrics.New(metrics.Options{})})},
		{"metrics+tracing-1%", telemetry.New(telemetry.Config{Service: "frontend", Metrics: metrics.New(metrics.Options{}), Tracer: tr})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "http://orders/orders/1", nil)
			w := &discard{h: http.Header{}}
			out := http.Header{}
			b.ReportAllocs()
			for b.Loop() {
				var rw http.ResponseWriter = w
				ex := bc.tel.Begin(metrics.Client, w, r)
				if ex != nil {
					rw = ex
				}
				ex.Route("orders", true)
				ex.Inject(out)
				ex.UpstreamStart()
				ex.UpstreamDone()
				rw.WriteHeader(200)
				ex.End()
			}
		})
	}
}

type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}
