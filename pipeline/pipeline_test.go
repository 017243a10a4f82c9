package pipeline

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/roundrobin"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/route"
)

type fixed struct{ d *discovery.Destination }

func (f fixed) Lookup(context.Context, string) (*discovery.Destination, error) { return f.d, nil }
func (f fixed) Cached(string) (*discovery.Destination, bool)                   { return f.d, true }

type req struct {
	method string
	hdr    map[string]string
	body   bool
	grpc   bool
}

func (r *req) Method() string            { return r.method }
func (r *req) Authority() string         { return "orders:80" }
func (r *req) Path() string              { return "/x" }
func (r *req) Header(name string) string { return r.hdr[strings.ToLower(name)] }
func (r *req) GRPC() bool                { return r.grpc }
func (r *req) Replayable(limit int) bool { return !r.body || limit > 0 }
func (r *req) RemoteIP() string          { return "127.0.0.1" }

// dest builds a destination of n endpoints under spec.
func dest(t *testing.T, n int, spec *resource.TrafficPolicySpec) *discovery.Destination {
	t.Helper()
	var eps []*balancer.Endpoint
	for i := range n {
		eps = append(eps, &balancer.Endpoint{ID: string(rune('a' + i)), Address: "127.0.0.1:" + string(rune('1'+i))})
	}
	b, err := balancer.Get(roundrobin.Name)
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Compile(spec, policy.NewLive())
	return &discovery.Destination{Service: "orders", Exists: true, Endpoints: eps, Picker: b.Build(eps, balancer.BuildOptions{}), Traffic: p, Timeout: p.Timeout}
}

func retries(n int, on ...string) *resource.TrafficPolicySpec {
	ample, many := 1.0, 1000
	return &resource.TrafficPolicySpec{Service: "orders", Retries: &resource.Retries{Attempts: n, RetryOn: on,
		Backoff: &resource.RetryBackoff{Base: "1ns", Max: "1ns"}, Budget: &resource.RetryBudget{Ratio: &ample, MinPerSecond: &many}}}
}

// run sends one request through p, each try answered by answer(try).
func run(t *testing.T, p *Pipeline, r Request, answer func(try int, ep *balancer.Endpoint) Outcome) (tries []string, final *Call) {
	t.Helper()
	c := &Call{}
	if e := p.Start(c, r, time.Now()); e != nil {
		t.Fatalf("Start: %v", e)
	}
	defer p.End(c)
	for i := 0; ; i++ {
		if _, _, e := p.Try(c, time.Now()); e != nil {
			t.Fatalf("Try: %v", e)
		}
		tries = append(tries, c.Endpoint.ID)
		o := answer(i, c.Endpoint)
		again, _ := p.Answered(c, &o, time.Now())
		if !again {
			return tries, c
		}
		if i > 20 {
			t.Fatal("endless retries")
		}
	}
}

func TestRetryDecisions(t *testing.T) {
	s503 := func(int, *balancer.Endpoint) Outcome { return Outcome{Status: 503} }
	refused := func(int, *balancer.Endpoint) Outcome { return Outcome{Failure: FailConnect} }
	for _, tc := range []struct {
		name  string
		spec  *resource.TrafficPolicySpec
		req   *req
		ans   func(int, *balancer.Endpoint) Outcome
		tries int
		err   string // the pipeline's answer code, "" when the last response is relayed
	}{
		{"no policy: a 503 is relayed", nil, &req{method: "GET"}, s503, 1, ""},
		{"no policy: a refused connection is tried on 3 instances", nil, &req{method: "GET"}, refused, 3, CodeConnectFailed},
		{"5xx retried up to attempts", retries(2, "5xx"), &req{method: "GET"}, s503, 3, ""},
		{"gateway-error covers 503", retries(1, "gateway-error"), &req{method: "GET"}, s503, 2, ""},
		{"gateway-error does not cover 500", retries(1, "gateway-error"), &req{method: "GET"},
			func(int, *balancer.Endpoint) Outcome { return Outcome{Status: 500} }, 1, ""},
		{"retriable-status", retries(1, "retriable-status:409"), &req{method: "GET"},
			func(int, *balancer.Endpoint) Outcome { return Outcome{Status: 409} }, 2, ""},
		{"POST not retried", retries(2, "5xx"), &req{method: "POST"}, s503, 1, ""},
		{"POST with an idempotency key retried", retries(2, "5xx"), &req{method: "POST", hdr: map[string]string{"idempotency-key": "k"}}, s503, 3, ""},
		{"POST retried with retryNonIdempotent", func() *resource.TrafficPolicySpec {
			s := retries(1, "5xx")
			s.Retries.RetryNonIdempotent = true
			return s
		}(), &req{method: "POST"}, s503, 2, ""},
		{"body not held: not retried", retries(2, "5xx"), &req{method: "PUT", body: true}, func(int, *balancer.Endpoint) Outcome {
			return Outcome{Status: 503, Unreplayable: true}
		}, 1, ""},
		{"reset retried, then answered upstream_reset", retries(1, "reset"), &req{method: "GET"},
			func(int, *balancer.Endpoint) Outcome { return Outcome{Failure: FailReset} }, 2, CodeUpstreamReset},
		{"gRPC unavailable retried", retries(1, "unavailable"), &req{method: "POST", grpc: true},
			func(int, *balancer.Endpoint) Outcome {
				return Outcome{Status: 200, HasGRPC: true, GRPCStatus: GRPCUnavailable}
			}, 2, ""},
		{"gRPC not-found not retried", retries(1, "unavailable"), &req{method: "POST", grpc: true},
			func(int, *balancer.Endpoint) Outcome { return Outcome{Status: 200, HasGRPC: true, GRPCStatus: 5} }, 1, ""},
		{"app_unavailable retried without a policy", nil, &req{method: "POST"},
			func(i int, _ *balancer.Endpoint) Outcome {
				if i == 0 {
					return Outcome{Status: 503, WeftError: CodeAppUnavailable}
				}
				return Outcome{Status: 200}
			}, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Config{Resolver: fixed{dest(t, 3, tc.spec)}})
			tries, c := run(t, p, tc.req, tc.ans)
			if len(tries) != tc.tries {
				t.Errorf("%d tries (%v), want %d", len(tries), tries, tc.tries)
			}
			for i := 1; i < len(tries); i++ {
				if tries[i] == tries[i-1] {
					t.Errorf("try %d went to the same instance %s as the one before (%v)", i+1, tries[i], tries)
				}
			}
			got := ""
			if c.Err != nil {
				got = c.Err.Code
			}
			if got != tc.err {
				t.Errorf("pipeline answer %q, want %q", got, tc.err)
			}
		})
	}
}

// TestBudget: with every try failing, retries stay within ratio ×
// requests + minPerSecond (a new destination's first second).
func TestBudget(t *testing.T) {
	ratio, per := 0.2, 10
	spec := retries(3, "5xx")
	spec.Retries.Budget = &resource.RetryBudget{Ratio: &ratio, MinPerSecond: &per}
	p := New(Config{Resolver: fixed{dest(t, 3, spec)}})
	const n = 1000
	start := time.Now()
	tries := 0
	for range n {
		ts, _ := run(t, p, &req{method: "GET"}, func(int, *balancer.Endpoint) Outcome { return Outcome{Status: 503} })
		tries += len(ts)
	}
	secs := time.Since(start).Seconds()
	bound := float64(n)*(1+ratio) + float64(per)*(1+secs) + 1
	if float64(tries) > bound {
		t.Errorf("%d tries for %d requests in %.2fs, over the budget's %.0f", tries, n, secs, bound)
	}
	if tries < n+n/10 {
		t.Errorf("%d tries for %d requests: the budget allowed almost no retries", tries, n)
	}
}

func TestBreakerOverflow(t *testing.T) {
	spec := &resource.TrafficPolicySpec{Service: "orders", CircuitBreaker: &resource.CircuitBreaker{MaxRequests: 2}}
	p := New(Config{Resolver: fixed{dest(t, 2, spec)}})
	var calls [3]Call
	for i := range 2 {
		if e := p.Start(&calls[i], &req{method: "GET"}, time.Now()); e != nil {
			t.Fatalf("request %d: %v", i+1, e)
		}
	}
	e := p.Start(&calls[2], &req{method: "GET"}, time.Now())
	if e == nil || e.Code != CodeOverflow || e.Status != http.StatusServiceUnavailable || !strings.Contains(e.Message, "maxRequests 2") {
		t.Fatalf("third request: %v, want 503 overflow naming maxRequests 2", e)
	}
	p.End(&calls[2])
	p.End(&calls[0])
	if e := p.Start(&calls[2], &req{method: "GET"}, time.Now()); e != nil {
		t.Fatalf("after one ended: %v", e)
	}
}

func TestDeadlines(t *testing.T) {
	spec := &resource.TrafficPolicySpec{Service: "orders", Timeout: "2s", Retries: &resource.Retries{Attempts: 1, PerTryTimeout: "500ms"}}
	p := New(Config{Resolver: fixed{dest(t, 2, spec)}})
	now := time.Now()
	c := &Call{}
	if e := p.Start(c, &req{method: "GET"}, now); e != nil {
		t.Fatal(e)
	}
	if _, to, _ := p.Try(c, now); to != 500*time.Millisecond {
		t.Errorf("try timeout %s, want the per-try 500ms", to)
	}
	p.End(c)
	c = &Call{}
	p.Start(c, &req{method: "POST", grpc: true, hdr: map[string]string{"grpc-timeout": "100m"}}, now)
	if _, to, _ := p.Try(c, now); to != 100*time.Millisecond || !c.GRPCDeadline() {
		t.Errorf("gRPC try timeout %s, want the caller's 100ms", to)
	}
	if _, _, e := p.Try(c, now.Add(time.Second)); e == nil || e.Code != CodeUpstreamTimeout || e.GRPCStatus() != GRPCDeadlineExceeded {
		t.Errorf("past the deadline: %v, want upstream_timeout (DEADLINE_EXCEEDED)", e)
	}
	p.End(c)
}

func TestGRPCTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{{"100m", 100 * time.Millisecond, true}, {"5S", 5 * time.Second, true}, {"1H", time.Hour, true}, {"7u", 7 * time.Microsecond, true},
		{"", 0, false}, {"m", 0, false}, {"10x", 0, false}, {"123456789S", 0, false}, {"-1S", 0, false}} {
		got, ok := ParseGRPCTimeout(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseGRPCTimeout(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for _, d := range []time.Duration{time.Nanosecond, 1500 * time.Microsecond, 3 * time.Second, 200 * time.Hour} {
		got, ok := ParseGRPCTimeout(FormatGRPCTimeout(d))
		if !ok || got < d {
			t.Errorf("FormatGRPCTimeout(%s) = %q, reads back as %s", d, FormatGRPCTimeout(d), got)
		}
	}
}

func TestMeshErrorGRPC(t *testing.T) {
	for code, want := range map[string]int{CodeNoReadyInstances: GRPCUnavailable, CodeUpstreamTimeout: GRPCDeadlineExceeded,
		CodeOverflow: GRPCUnavailable, CodeRateLimited: GRPCResourceExhausted, CodeUnsupported: GRPCUnimplemented} {
		e := &MeshError{Status: 503, Code: code, Message: "why 100%"}
		f := e.GRPCFields()
		if f["Grpc-Status"] != strconv.Itoa(want) || f[HeaderError] != code || f["Content-Type"] != "application/grpc" {
			t.Errorf("%s: fields %v, want grpc-status %d", code, f, want)
		}
		if !strings.Contains(f["Grpc-Message"], "%25") {
			t.Errorf("%s: grpc-message %q not percent-encoded", code, f["Grpc-Message"])
		}
	}
}

// TestInFlightBalanced: whatever way a request ends — answered, retried,
// out of time before a retry — every endpoint's in-flight count returns to
// zero, and the breaker's counts too.
func TestInFlightBalanced(t *testing.T) {
	spec := retries(3, "5xx")
	spec.Timeout = "50ms"
	spec.CircuitBreaker = &resource.CircuitBreaker{MaxRequests: 10, MaxConnections: 10, MaxPendingRequests: 10}
	d := dest(t, 3, spec)
	p := New(Config{Resolver: fixed{d}})
	for _, after := range []time.Duration{0, time.Second} {
		c := &Call{}
		now := time.Now()
		if e := p.Start(c, &req{method: "GET"}, now); e != nil {
			t.Fatal(e)
		}
		p.Try(c, now)
		if again, _ := p.Answered(c, &Outcome{Status: 503}, now); !again {
			t.Fatal("no retry")
		}
		if _, _, e := p.Try(c, now.Add(after)); (e != nil) != (after > 0) {
			t.Fatalf("second try after %s: %v", after, e)
		}
		p.End(c)
		for _, ep := range d.Endpoints {
			if n := ep.InFlight.Load(); n != 0 {
				t.Errorf("after %s: %s in flight %d, want 0", after, ep.ID, n)
			}
		}
		if r, cn, pd := d.Traffic.Live.Breaker.Counts(); r != 0 || cn != 0 || pd != 0 {
			t.Errorf("after %s: breaker counts %d %d %d, want 0", after, r, cn, pd)
		}
	}
}

// TestPendingRequests: with maxRequests reached a request waits (one of at
// most maxPendingRequests) and goes once a slot frees; one more overflows
// at once with 503 overflow naming both limits.
func TestPendingRequests(t *testing.T) {
	spec := &resource.TrafficPolicySpec{Service: "orders", Timeout: "5s",
		CircuitBreaker: &resource.CircuitBreaker{MaxRequests: 1, MaxPendingRequests: 1}}
	d := dest(t, 2, spec)
	p := New(Config{Resolver: fixed{d}})
	first := &Call{}
	if e := p.Start(first, &req{method: "GET"}, time.Now()); e != nil {
		t.Fatal(e)
	}
	waited := make(chan *MeshError, 1)
	second := &Call{}
	go func() { waited <- p.Start(second, &req{method: "GET"}, time.Now()) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, _, n := d.Traffic.Live.Breaker.Counts(); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second request is not waiting")
		}
	}
	third := &Call{}
	e := p.Start(third, &req{method: "GET"}, time.Now())
	if e == nil || e.Status != 503 || e.Code != CodeOverflow || !strings.Contains(e.Message, "maxRequests 1") || !strings.Contains(e.Message, "maxPendingRequests 1") {
		t.Fatalf("third request: %+v, want 503 overflow naming maxRequests 1 and maxPendingRequests 1", e)
	}
	p.End(third)
	p.End(first)
	select {
	case e := <-waited:
		if e != nil {
			t.Fatalf("the waiting request: %v, want it admitted", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting request was not admitted when the slot freed")
	}
	p.End(second)
	if r, c, n := d.Traffic.Live.Breaker.Counts(); r != 0 || c != 0 || n != 0 {
		t.Errorf("breaker counts %d %d %d, want 0", r, c, n)
	}
}

// TestHashKeyPicksSubset: with a hash key the Route's weighted subset comes
// from the key — the same key, the same subset, call after call — while
// the keys spread over the subsets by weight.
func TestHashKeyPicksSubset(t *testing.T) {
	d := dest(t, 4, &resource.TrafficPolicySpec{Service: "orders"})
	for i, ep := range d.Endpoints {
		ep.Labels = map[string]string{"version": []string{"v1", "v2"}[i%2]}
	}
	d.HashKey = resource.HashKey{Source: resource.HashHeader, Name: "x-user"}
	spec := &resource.RouteSpec{Service: "orders",
		Subsets: []resource.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}},
		Rules:   []resource.RouteRule{{Backends: []resource.RouteBackend{{Subset: "v1", Weight: 30}, {Subset: "v2", Weight: 70}}}}}
	rr, _ := balancer.Get(roundrobin.Name)
	d.Routes = route.Compile("orders", spec, d.Endpoints, func(*balancer.Endpoint) string { return "" },
		func(eps []*balancer.Endpoint) balancer.Picker { return rr.Build(eps, balancer.BuildOptions{}) }, d.Traffic)
	p := New(Config{Resolver: fixed{d}})
	v1 := 0
	for k := range 1000 {
		r := &req{method: "GET", hdr: map[string]string{"x-user": fmt.Sprint("u", k)}}
		var first string
		for range 3 {
			c := &Call{}
			if e := p.Start(c, r, time.Now()); e != nil {
				t.Fatal(e)
			}
			if first == "" {
				first = c.Subset
			} else if c.Subset != first {
				t.Fatalf("key u%d went to %s, then %s", k, first, c.Subset)
			}
			p.End(c)
		}
		if first == "v1" {
			v1++
		}
	}
	if v1 < 250 || v1 > 350 {
		t.Errorf("%d of 1000 keys in v1 at weight 30 of 100", v1)
	}
}
