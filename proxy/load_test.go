package proxy

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/roundrobin"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/proxy/h1"
)

// countingTracker is a LoadTracker that counts.
type countingTracker struct{ begun, ended, latencies atomic.Int64 }

func (c *countingTracker) Begin()                { c.begun.Add(1) }
func (c *countingTracker) End()                  { c.ended.Add(1) }
func (c *countingTracker) Latency(time.Duration) { c.latencies.Add(1) }

const report = "v=1;h=0.300;cpu=0.700;inflight=2"

func fixedLoad(dst []byte) []byte { return append(dst, report...) }

// TestFastLoadReport: the inbound fast path puts the load report on the
// response and tells the tracker of the request, without allocating; the
// outbound hands the callee's report and the attempt's time to the
// endpoint.
func TestFastLoadReport(t *testing.T) {
	out, in := newFastRouters(t, 1e-12)
	tr := &countingTracker{}
	in.in.Load, in.in.LoadTracker = fixedLoad, tr
	req := request(h1.Field{Name: []byte("traceparent"), Value: []byte(unsampledParent)})
	var d h1.Decision
	var res h1.Result
	exchange(in, req, &d, &res)
	if len(d.RespSet) != 1 || string(d.RespSet[0].Name) != balancer.LoadHeader || string(d.RespSet[0].Value) != report {
		t.Fatalf("inbound RespSet = %q, want %s: %s", d.RespSet, balancer.LoadHeader, report)
	}
	if tr.begun.Load() != 1 || tr.ended.Load() != 1 || tr.latencies.Load() != 1 {
		t.Errorf("tracker saw %d begins, %d ends, %d latencies; want 1 each", tr.begun.Load(), tr.ended.Load(), tr.latencies.Load())
	}
	if n := testing.AllocsPerRun(100, func() { exchange(in, req, &d, &res) }); n != 0 {
		t.Errorf("inbound with a load report: %v allocations per request", n)
	}

	var od h1.Decision
	oreq := request()
	out.Route(oreq, &od)
	// The caller's sidecar consumes the callee's report: the engine drops
	// it from the answer to the app (an empty RespSet value removes).
	if len(od.RespSet) != 1 || string(od.RespSet[0].Name) != balancer.LoadHeader || len(od.RespSet[0].Value) != 0 {
		t.Errorf("outbound RespSet = %q, want %s removed", od.RespSet, balancer.LoadHeader)
	}
	ep := od.State.(*fastState).call.Endpoint
	start := time.Now()
	// The head "came" 20ms after the try started (Route started it).
	if out.Answered(oreq, &od, &h1.Response{Status: 200, Fields: []h1.Field{{Name: []byte("X-Weft-Load"), Value: []byte(report)}}, At: start.Add(20 * time.Millisecond)}, nil) {
		t.Fatal("a 200 was retried")
	}
	out.Finish(oreq, &od, &h1.Result{Status: 200, Start: start, UpstreamStart: start, UpstreamHeaders: start.Add(20 * time.Millisecond), End: start.Add(21 * time.Millisecond)})
	now := balancer.Mono()
	if h := ep.Headroom(now); math.Abs(h-0.3) > 1e-3 {
		t.Errorf("endpoint headroom %.3f after the callee reported 0.3", h)
	}
	if rtt := ep.RTT(now); rtt < 19e6 || rtt > 40e6 {
		t.Errorf("endpoint RTT %.1fms, want 20ms (to the response head)", rtt/1e6)
	}
}

// TestLoadReportNetHTTP: the same through the net/http path (h2c, gRPC,
// WebSocket use it): the inbound adds the report to the app's answer, and
// the outbound hands it to the endpoint.
func TestLoadReportNetHTTP(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond)
		w.Write([]byte("ok"))
	}))
	defer app.Close()
	in := NewInbound(strings.TrimPrefix(app.URL, "http://"), AppProtocolAuto, nil)
	tr := &countingTracker{}
	in.Load, in.LoadTracker = fixedLoad, tr
	callee := httptest.NewServer(in)
	defer callee.Close()

	eps := []*balancer.Endpoint{{ID: "orders-1", Address: strings.TrimPrefix(callee.URL, "http://")}}
	rr, _ := balancer.Get(roundrobin.Name)
	dest := &discovery.Destination{Service: "orders", Exists: true, Endpoints: eps, Picker: rr.Build(eps, balancer.BuildOptions{}), Timeout: time.Second}
	caller := httptest.NewServer(NewOutbound(OutboundConfig{Resolver: oneDestination{dest}, Source: "frontend"}))
	defer caller.Close()

	req, _ := http.NewRequest("GET", caller.URL+"/x", nil)
	req.Host = "orders"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The caller's sidecar consumes the report: it does not reach the app.
	if resp.StatusCode != 200 || resp.Header.Get(balancer.LoadHeader) != "" {
		t.Fatalf("status %d, %s %q reached the caller's app", resp.StatusCode, balancer.LoadHeader, resp.Header.Get(balancer.LoadHeader))
	}
	now := balancer.Mono()
	if h := eps[0].Headroom(now); math.Abs(h-0.3) > 1e-3 {
		t.Errorf("endpoint headroom %.3f after the callee reported 0.3", h)
	}
	if rtt := eps[0].RTT(now); rtt < 5e6 {
		t.Errorf("endpoint RTT %.1fms, want ≥ the app's 5ms", rtt/1e6)
	}
	// The handler's End may run just after the caller has the response.
	for deadline := time.Now().Add(2 * time.Second); tr.ended.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if tr.begun.Load() != 1 || tr.ended.Load() != 1 || tr.latencies.Load() != 1 {
		t.Errorf("tracker saw %d begins, %d ends, %d latencies; want 1 each", tr.begun.Load(), tr.ended.Load(), tr.latencies.Load())
	}
}
