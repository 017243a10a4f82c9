package proxy

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/roundrobin"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/proxy/h1"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/metrics"
	"github.com/weftmesh/weft/telemetry/tracing"
)

// oneDestination resolves every service to one ready endpoint.
type oneDestination struct{ d *discovery.Destination }

func (r oneDestination) Lookup(context.Context, string) (*discovery.Destination, error) {
	return r.d, nil
}
func (r oneDestination) Cached(string) (*discovery.Destination, bool) { return r.d, true }

// newFastRouters returns the outbound and inbound fast-path routers of one
// sidecar with its default telemetry (metrics, tracing at the default 1%).
func newFastRouters(tb testing.TB, sampling float64) (*FastOutbound, *FastInbound) {
	return newFastRoutersWith(tb, sampling, nil)
}

// resiliencePolicy sets retries, outlier detection and a breaker: what the
// pipeline checks on every request even when none of it fires.
var resiliencePolicy = &resource.TrafficPolicySpec{Service: "orders",
	Retries:          &resource.Retries{Attempts: 2, RetryOn: []string{"5xx"}},
	OutlierDetection: &resource.OutlierDetection{Consecutive5xx: 5},
	CircuitBreaker:   &resource.CircuitBreaker{MaxConnections: 1000, MaxPendingRequests: 1000, MaxRequests: 1000}}

// newFastRoutersWith is newFastRouters for a destination under spec.
func newFastRoutersWith(tb testing.TB, sampling float64, spec *resource.TrafficPolicySpec) (*FastOutbound, *FastInbound) {
	tb.Helper()
	tr, err := tracing.New(tracing.Config{Service: "frontend", Endpoint: "http://127.0.0.1:1/v1/traces", Sampling: sampling})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tr.Shutdown(context.Background()) })
	tel := telemetry.New(telemetry.Config{Service: "frontend", Metrics: metrics.New(metrics.Options{}), Tracer: tr})
	eps := []*balancer.Endpoint{{ID: "orders-1", Address: "127.0.0.1:9"}}
	rr, err := balancer.Get(roundrobin.Name)
	if err != nil {
		tb.Fatal(err)
	}
	dest := &discovery.Destination{Service: "orders", Exists: true, Endpoints: eps, Picker: rr.Build(eps, balancer.BuildOptions{}), Timeout: time.Second}
	if spec != nil {
		dest.Policy = spec
		dest.Traffic = policy.Compile(spec, policy.NewLive())
		if det := dest.Traffic.Outlier; det != nil {
			stats := det.Track([]string{eps[0].ID}, []string{eps[0].Address})
			dest.Outlier = map[*balancer.Endpoint]*policy.Stat{eps[0]: stats[eps[0].ID]}
		}
	}
	out := NewOutbound(OutboundConfig{Resolver: oneDestination{dest}, Source: "frontend", Telemetry: tel})
	in := NewInbound("127.0.0.1:9", AppProtocolAuto, nil)
	in.Telemetry = tel
	return out.Fast(), in.Fast()
}

// exchange runs one request through r as the engine does, with a 200.
func exchange(r h1.Router, req *h1.Request, d *h1.Decision, res *h1.Result) {
	r.Route(req, d)
	// One clock read, as before: the engine reads it once for the head
	// (Result.UpstreamHeaders) and hands the same time to the Retrier.
	now := time.Now()
	if rt, ok := r.(h1.Retrier); ok {
		okHead.At = now // not concurrent: one exchange at a time
		rt.Answered(req, d, &okHead, nil)
	}
	*res = h1.Result{Status: 200, Start: now, UpstreamStart: now, UpstreamHeaders: now, End: now}
	r.Finish(req, d, res)
}

var okHead = h1.Response{Status: 200, Fields: []h1.Field{{Name: []byte("Content-Type"), Value: []byte("application/json")}}}

func request(fields ...h1.Field) *h1.Request {
	return &h1.Request{Method: []byte("GET"), Target: []byte("/orders/1"), Host: []byte("orders"), ProtoMinor: 1,
		Fields: append([]h1.Field{{Name: []byte("Host"), Value: []byte("orders")}}, fields...), ContentLength: -1, KeepAlive: true}
}

const unsampledParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"

func field(d *h1.Decision, name string) []byte {
	for _, f := range d.Set {
		if bytes.EqualFold(f.Name, []byte(name)) {
			return f.Value
		}
	}
	return nil
}

// TestFastTraceHeaders: the outbound starts a trace for a request without
// one (a new, unsampled traceparent at a low sampling ratio), and an
// unsampled caller's traceparent passes the inbound unchanged.
func TestFastTraceHeaders(t *testing.T) {
	out, in := newFastRouters(t, 1e-12)
	var d h1.Decision
	out.Route(request(), &d)
	tp := string(field(&d, "traceparent"))
	if len(tp) != 55 || tp[:3] != "00-" || tp[52:] != "-00" {
		t.Fatalf("outbound sets traceparent %q, want a new unsampled one", tp)
	}
	if string(field(&d, HeaderSource)) != "frontend" {
		t.Errorf("outbound sets %s %q", HeaderSource, field(&d, HeaderSource))
	}
	var d2 h1.Decision
	out.Route(request(), &d2)
	if tp2 := string(field(&d2, "traceparent")); tp2 == tp || len(tp2) != 55 {
		t.Errorf("second request's traceparent %q, want a new one (first %q)", tp2, tp)
	}

	var d3 h1.Decision
	out.Route(request(h1.Field{Name: []byte("Traceparent"), Value: []byte("00-nothex-00f067aa0ba902b7-01")}), &d3)
	if tp3 := string(field(&d3, "traceparent")); len(tp3) != 55 || tp3[52:] != "-00" {
		t.Errorf("outbound keeps a malformed traceparent as %q, want a new one", tp3)
	}

	var di h1.Decision
	in.Route(request(h1.Field{Name: []byte("traceparent"), Value: []byte(unsampledParent)}), &di)
	if v := field(&di, "traceparent"); v != nil {
		t.Errorf("inbound replaces an unsampled caller's traceparent with %q", v)
	}
	// A sampled caller: the app's calls continue this hop's span.
	sampled := unsampledParent[:53] + "01"
	in.Route(request(h1.Field{Name: []byte("TRACEPARENT"), Value: []byte(sampled)}), &di)
	if v := string(field(&di, "traceparent")); len(v) != 55 || v[3:35] != sampled[3:35] || v[36:52] == sampled[36:52] || v[53:] != "01" {
		t.Errorf("inbound sends %q to the app for sampled %q, want a child span of the same trace", v, sampled)
	}
	var res h1.Result
	in.Finish(request(), &di, &res)
}

// TestFastRouteDoesNotAllocate: an unsampled request (a new trace on the
// outbound, a caller's unsampled trace on the inbound) costs no allocation
// once its metric series exists.
func TestFastRouteDoesNotAllocate(t *testing.T) {
	out, in := newFastRouters(t, 1e-12)
	withPolicy, _ := newFastRoutersWith(t, 1e-12, resiliencePolicy)
	for name, tc := range map[string]struct {
		r   h1.Router
		req *h1.Request
	}{
		"outbound": {out, request()},
		"outbound with retries, outlier detection and a breaker": {withPolicy, request()},
		"inbound": {in, request(h1.Field{Name: []byte("traceparent"), Value: []byte(unsampledParent)})},
	} {
		var d h1.Decision
		var res h1.Result
		exchange(tc.r, tc.req, &d, &res)
		if n := testing.AllocsPerRun(100, func() { exchange(tc.r, tc.req, &d, &res) }); n != 0 {
			t.Errorf("%s: %v allocations per request", name, n)
		}
	}
}

// BenchmarkFastRoute is the fast path's per-request routing and telemetry
// in one sidecar at the default 1% sampling: the outbound for a request
// without trace context (a new trace, 99% of the time unsampled, whose
// traceparent is injected), and the inbound for the request that arrives
// with that unsampled traceparent.
func BenchmarkFastRoute(b *testing.B) {
	out, in := newFastRouters(b, tracing.DefaultSampling)
	withPolicy, _ := newFastRoutersWith(b, tracing.DefaultSampling, resiliencePolicy)
	for _, bc := range []struct {
		name string
		r    h1.Router
		req  *h1.Request
	}{
		{"outbound-new-trace", out, request()},
		{"outbound-new-trace-policy", withPolicy, request()},
		{"inbound-unsampled-parent", in, request(h1.Field{Name: []byte("traceparent"), Value: []byte(unsampledParent)})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var d h1.Decision
			var res h1.Result
			exchange(bc.r, bc.req, &d, &res)
			b.ReportAllocs()
			for b.Loop() {
				exchange(bc.r, bc.req, &d, &res)
			}
		})
	}
}
