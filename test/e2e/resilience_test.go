package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The request pipeline's policies (retries, budget, outlier detection,
// breaker, timeouts) over real sidecars, on HTTP/1.1 and gRPC.

// applyYAML applies a manifest and waits out the propagation bound.
func applyYAML(t *testing.T, cp *Control, manifest string) {
	t.Helper()
	f := writeFile(t, "policy.yaml", manifest)
	if r := weft(t, 30*time.Second, nil, "apply", "-f", f, "--server", cp.URL); r.Code != 0 {
		t.Fatalf("apply failed:\n%s\nmanifest:\n%s", r, manifest)
	}
	time.Sleep(propagation + settle)
}

// ordersV1V2Route starts a Route for orders with subsets v1 and v2 (by
// --version); the rules follow.
const ordersV1V2Route = `apiVersion: weft.dev/v1alpha1
kind: Route
metadata: {name: orders}
spec:
  service: orders
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  rules:
`

func policyDoc(service, body string) string {
	return fmt.Sprintf("apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata:\n  name: %s\nspec:\n  service: %s\n%s", service, service, body)
}

// appControl calls the testapp's own control endpoint (not through the mesh).
func appControl(t *testing.T, s *Sidecar, pathQuery string) string {
	t.Helper()
	code, body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d%s", s.AppPort, pathQuery))
	if err != nil || code != 200 {
		t.Fatalf("testapp %s %s: %d %s %v", s.Name, pathQuery, code, body, err)
	}
	return body
}

func served(t *testing.T, s *Sidecar) int64 {
	var v struct{ Served int64 }
	if err := json.Unmarshal([]byte(appControl(t, s, "/_control/count")), &v); err != nil {
		t.Fatal(err)
	}
	return v.Served
}

// metricSum sums a counter's samples on the sidecar's /metrics whose labels
// contain every one of match.
func metricSum(t *testing.T, s *Sidecar, name string, match ...string) float64 {
	t.Helper()
	code, body, err := httpGet(s.AdminURL() + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	sum := 0.0
	re := regexp.MustCompile(`^` + name + `(\{[^}]*\})? ([0-9.e+-]+)$`)
line:
	for _, l := range strings.Split(body, "\n") {
		m := re.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		for _, want := range match {
			if !strings.Contains(m[1], want) {
				continue line
			}
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
	}
	return sum
}

type outlierView struct {
	Service string `json:"service"`
	Ejected []struct {
		ID, Address, Reason string
	} `json:"ejected"`
}

func ejected(t *testing.T, client *Sidecar, service string) []string {
	t.Helper()
	code, body, err := httpGet(client.AdminURL() + "/outliers")
	if err != nil || code != 200 {
		t.Fatalf("GET /outliers: %d %s %v", code, body, err)
	}
	var vs []outlierView
	if err := json.Unmarshal([]byte(body), &vs); err != nil {
		t.Fatalf("GET /outliers: %v in %s", err, body)
	}
	var out []string
	for _, v := range vs {
		if v.Service == service {
			for _, e := range v.Ejected {
				out = append(out, e.ID+" ("+e.Reason+")")
			}
		}
	}
	return out
}

// controlEjections is what the control plane says is ejected of service:
// "instance reason callerInstance" from /api/v1/stats, and from
// /api/v1/services (what `weft get services -o json` prints).
func controlEjections(t *testing.T, cp *Control, service string) (stats, services []string) {
	t.Helper()
	var st struct {
		Services []struct {
			Service string
			Ejected []struct{ Instance, Reason, CallerInstance string }
		}
	}
	var sv struct {
		Services []struct {
			Name      string
			Instances []struct {
				ID      string
				Ejected []struct{ Reason, CallerInstance string }
			}
		}
	}
	for path, v := range map[string]any{"/api/v1/stats?window=1m": &st, "/api/v1/services": &sv} {
		code, body, err := httpGet(cp.URL + path)
		if err != nil || code != 200 {
			t.Fatalf("GET %s: %d %s %v", path, code, body, err)
		}
		if err := json.Unmarshal([]byte(body), v); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	for _, s := range st.Services {
		if s.Service == service {
			for _, e := range s.Ejected {
				stats = append(stats, e.Instance+" "+e.Reason+" "+e.CallerInstance)
			}
		}
	}
	for _, s := range sv.Services {
		if s.Name == service {
			for _, in := range s.Instances {
				for _, e := range in.Ejected {
					services = append(services, in.ID+" "+e.Reason+" "+e.CallerInstance)
				}
			}
		}
	}
	return stats, services
}

// TestRetriesAndOutlierDetection: one of three instances answers 503 half
// the time; with retries and outlier detection the caller sees ≥ 99.9%
// success over 5,000 requests, the bad instance is ejected (shown with its
// reason on the admin's /outliers, and in the control plane's stats and
// services, scraped every 300ms) and re-admitted once it heals.
func TestRetriesAndOutlierDetection(t *testing.T) {
	cp := StartControl(t, "--scrape-interval", "300ms")
	good1 := StartRun(t, cp, RunOpts{Service: "orders"})
	good2 := StartRun(t, cp, RunOpts{Service: "orders"})
	bad := StartRun(t, cp, RunOpts{Service: "orders", AppArgs: []string{"--fail-percent", "50"}, Flags: []string{"--id", "orders-bad"}})
	cp.WaitReady("orders", 3, eventually)
	// The caller is a registered unit (web's app and sidecar), so the
	// control plane scrapes its sidecar's view of the ejections.
	client := StartRun(t, cp, RunOpts{Service: "web", Flags: []string{"--id", "web-caller"}})
	c := proxyClient(client.OutboundAddr())
	applyYAML(t, cp, policyDoc("orders", `  retries:
    attempts: 2
    retryOn: [5xx]
    backoff: {base: 1ms, max: 5ms}
  outlierDetection:
    consecutive5xx: 3
    interval: 500ms
    baseEjectionTime: 3s
`))
	waitAllServing(t, c, "orders", good1.Name, good2.Name)

	const n = 5000
	var ejectedSeen, statsSeen, servicesSeen, statSeen atomic.Value
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if e := ejected(t, client, "orders"); len(e) > 0 {
				ejectedSeen.Store(e)
			}
			if st, sv := controlEjections(t, cp, "orders"); len(st) > 0 || len(sv) > 0 {
				if len(st) > 0 {
					statsSeen.Store(st)
					// What a user sees: weft stat lists the ejection with its reason.
					if statSeen.Load() == nil {
						if r := weft(t, 30*time.Second, nil, "stat", "orders", "--server", cp.URL); r.Code == 0 &&
							regexp.MustCompile(`(?m)^orders +orders-bad +consecutive_5xx +web/web-caller$`).MatchString(r.Stdout) {
							statSeen.Store(r.Stdout)
						}
					}
				}
				if len(sv) > 0 {
					servicesSeen.Store(sv)
				}
			}
		}
	}()
	rs := <-Load(c, "orders", LoadOpts{Workers: 8, MaxPerWorker: n / 8, Duration: 2 * time.Minute}, nil)
	close(stop)
	<-watched
	fails := failures(rs)
	rate := 1 - float64(len(fails))/float64(len(rs))
	t.Logf("%d requests, %d failed: success %.4f; by instance %v", len(rs), len(fails), rate, countByName(rs))
	if len(rs) < n || rate < 0.999 {
		t.Errorf("success %.4f over %d requests, want ≥ 0.999 over %d:%s", rate, len(rs), n, describe(fails, 5))
	}
	e, _ := ejectedSeen.Load().([]string)
	if len(e) == 0 || !strings.Contains(e[0], "consecutive 5xx") {
		t.Errorf("the failing instance was never listed as ejected on /outliers (saw %v)", e)
	} else {
		t.Logf("ejected: %v", e)
	}
	// The control plane saw it too: the bad instance, its reason, the caller.
	want := "orders-bad consecutive_5xx web-caller"
	for what, v := range map[string]*atomic.Value{"/api/v1/stats": &statsSeen, "/api/v1/services": &servicesSeen} {
		got, _ := v.Load().([]string)
		if len(got) == 0 || got[0] != want {
			t.Errorf("the control plane's %s never showed %q as ejected (saw %v)", what, want, got)
		}
	}
	if out, _ := statSeen.Load().(string); out == "" {
		t.Errorf("weft stat orders never listed orders-bad as ejected (consecutive_5xx, by web/web-caller)")
	} else {
		t.Logf("weft stat orders:\n%s", out)
	}
	if ej := metricSum(t, client, "weft_outlier_ejections_total", `destination_service="orders"`); ej < 1 {
		t.Errorf("weft_outlier_ejections_total = %v, want ≥ 1", ej)
	}
	if r := metricSum(t, client, "weft_retries_total", `destination_service="orders"`); r < 1 {
		t.Errorf("weft_retries_total = %v, want ≥ 1", r)
	}

	// Healed, it is back in rotation once its ejection time is over.
	appControl(t, bad, "/_control/fail?percent=0")
	// Repeat ejections during the load lengthen the last one (n × 3s).
	back := poll(2*eventually, 100*time.Millisecond, func() bool {
		return countByName(<-Load(c, "orders", LoadOpts{Workers: 1, MaxPerWorker: 30, Duration: 5 * time.Second}, nil))[bad.Name] > 0
	})
	if !back {
		t.Errorf("%s never served again after healing; ejected: %v", bad.Name, ejected(t, client, "orders"))
	}
	var st, sv []string
	if !poll(eventually, 100*time.Millisecond, func() bool {
		st, sv = controlEjections(t, cp, "orders")
		return len(st) == 0 && len(sv) == 0
	}) {
		t.Errorf("healed and back, but the control plane still shows it ejected: stats %v, services %v", st, sv)
	}
}

// TestRetryBudget: with every instance failing, upstream attempts stay
// within (1 + ratio) × requests + minPerSecond × seconds.
func TestRetryBudget(t *testing.T) {
	cp := StartControl(t)
	var insts []*Sidecar
	for range 3 {
		insts = append(insts, StartRun(t, cp, RunOpts{Service: "orders", AppArgs: []string{"--fail-percent", "100"}}))
	}
	cp.WaitReady("orders", 3, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	applyYAML(t, cp, policyDoc("orders", `  retries:
    attempts: 3
    retryOn: [5xx]
    backoff: {base: 1ms, max: 2ms}
    budget: {ratio: 0.2, minPerSecond: 10}
`))
	before := int64(0)
	for _, s := range insts {
		before += served(t, s)
	}
	start := time.Now()
	rs := <-Load(c, "orders", LoadOpts{Workers: 4, MaxPerWorker: 500, Duration: time.Minute}, nil)
	secs := time.Since(start).Seconds()
	attempts := int64(0)
	for _, s := range insts {
		attempts += served(t, s)
	}
	attempts -= before
	// The budget's first second is granted up front: one more second.
	bound := 1.2*float64(len(rs)) + 10*(secs+1)
	t.Logf("%d requests in %.1fs: %d upstream attempts (bound %.0f; %.2f per request)", len(rs), secs, attempts, bound, float64(attempts)/float64(len(rs)))
	if float64(attempts) > bound {
		t.Errorf("%d attempts for %d requests in %.1fs, over the budget's %.0f", attempts, len(rs), secs, bound)
	}
	if attempts <= int64(len(rs)) {
		t.Errorf("%d attempts for %d requests: no retries at all", attempts, len(rs))
	}
	if x := metricSum(t, client, "weft_retry_budget_exhausted_total", `destination_service="orders"`); x < 1 {
		t.Errorf("weft_retry_budget_exhausted_total = %v, want ≥ 1", x)
	}
	for _, r := range rs[:1] {
		if r.Status != 503 {
			t.Errorf("a request that failed every try: %s, want the upstream's 503 relayed", r)
		}
	}
}

// TestBreakerAndTimeouts: past maxRequests a request is answered 503
// overflow at once; a try that takes longer than perTryTimeout is retried
// and, when every try does, answered 504 upstream_timeout.
const breakerPolicy = `  timeout: 1500ms
  circuitBreaker: {maxRequests: 2}
  retries:
    attempts: 1
    retryOn: [gateway-error]
    perTryTimeout: 300ms
`

func TestBreakerAndTimeouts(t *testing.T) {
	cp, _, client, c := startOrders(t, 2)
	applyYAML(t, cp, policyDoc("orders", breakerPolicy))
	t.Run("overflow", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				meshGet(c, "orders", "/slow?sleep=1s", nil) // holds a slot (and times out)
			}()
		}
		time.Sleep(150 * time.Millisecond)
		r := meshGet(c, "orders", "/x", nil)
		wg.Wait()
		if r.Status != 503 || r.Header.Get("X-Weft-Error") != "overflow" || !strings.Contains(string(r.Body), "maxRequests 2") {
			t.Fatalf("third concurrent request: %s, want 503 overflow naming maxRequests 2", r)
		}
		if d := r.End.Sub(r.Start); d > 500*time.Millisecond {
			t.Errorf("overflow answered after %s, want at once", d)
		}
		if n := metricSum(t, client, "weft_circuit_overflow_total", `destination_service="orders"`); n < 1 {
			t.Errorf("weft_circuit_overflow_total = %v", n)
		}
	})
	t.Run("pending", func(t *testing.T) {
		applyYAML(t, cp, policyDoc("orders", "  timeout: 5s\n  circuitBreaker: {maxRequests: 1, maxPendingRequests: 1}\n"))
		slow := make(chan Result, 1)
		go func() { slow <- meshGet(c, "orders", "/slow?sleep=1s", nil) }()
		time.Sleep(200 * time.Millisecond)
		waiting := make(chan Result, 1)
		go func() { waiting <- meshGet(c, "orders", "/waits", nil) }()
		time.Sleep(200 * time.Millisecond)
		r := meshGet(c, "orders", "/x", nil)
		if r.Status != 503 || r.Header.Get("X-Weft-Error") != "overflow" || !strings.Contains(string(r.Body), "maxPendingRequests 1 waiting") {
			t.Errorf("third request (one in flight, one waiting): %s, want 503 overflow naming maxPendingRequests 1", r)
		}
		if d := r.End.Sub(r.Start); d > 500*time.Millisecond {
			t.Errorf("overflow answered after %s, want at once", d)
		}
		if s := <-slow; !s.OK() {
			t.Errorf("the request holding the slot: %s", s)
		}
		w := <-waiting
		if !w.OK() {
			t.Errorf("the waiting request: %s, want it sent once the slot freed", w)
		}
		if d := w.End.Sub(w.Start); d < 400*time.Millisecond {
			t.Errorf("the waiting request was answered after %s, before the slot it waited for freed", d)
		}
		applyYAML(t, cp, policyDoc("orders", breakerPolicy))
	})
	t.Run("per-try timeout", func(t *testing.T) {
		r := meshGet(c, "orders", "/slow?sleep=2s", nil)
		took := r.End.Sub(r.Start)
		if r.Status != 504 || r.Header.Get("X-Weft-Error") != "upstream_timeout" || !strings.Contains(string(r.Body), "per-try timeout 300ms (2 tries)") {
			t.Fatalf("every try slow: %s, want 504 upstream_timeout after 2 tries of 300ms", r)
		}
		if took < 550*time.Millisecond || took > 1400*time.Millisecond {
			t.Errorf("answered after %s, want about 2 × 300ms", took)
		}
	})
}

// TestGRPCPipeline: a gRPC call gets the same policies, with gRPC answers:
// UNAVAILABLE is retried on the other instance, Route rules match its
// metadata and method path, and a mesh error is a grpc-status with
// x-weft-error.
func TestGRPCPipeline(t *testing.T) {
	cp := StartControl(t)
	good := StartRun(t, cp, RunOpts{Service: "echo-grpc", AppArgs: []string{"--grpc"}, Flags: []string{"--version", "v1"}})
	StartRun(t, cp, RunOpts{Service: "echo-grpc", AppArgs: []string{"--grpc", "--fail-percent", "100"}, Flags: []string{"--version", "v2"}})
	cp.WaitReady("echo-grpc", 2, eventually)
	client := StartClient(t, cp, nil)
	dial := func(authority string) testpb.TestServiceClient {
		cc, err := grpc.NewClient(client.OutboundAddr(), grpc.WithAuthority(authority), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return testpb.NewTestServiceClient(cc)
	}
	tc := dial("echo-grpc")
	call := func(ctx context.Context) (*testpb.SimpleResponse, error) {
		return tc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}})
	}
	unavailable := 0
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := call(ctx)
		cancel()
		if status.Code(err) == codes.Unavailable {
			unavailable++
		}
	}
	if unavailable == 0 {
		t.Fatalf("without retries no call failed, but one instance answers UNAVAILABLE to all")
	}
	applyYAML(t, cp, policyDoc("echo-grpc", `  retries:
    attempts: 2
    retryOn: [unavailable]
`))
	for i := range 30 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := call(ctx)
		cancel()
		if err != nil || resp.Username != good.Name {
			t.Fatalf("call %d with retries: %v (from %q), want success from %s", i+1, err, resp.GetUsername(), good.Name)
		}
	}

	t.Run("route", func(t *testing.T) {
		applyYAML(t, cp, `apiVersion: weft.dev/v1alpha1
kind: Route
metadata: {name: echo-grpc}
spec:
  service: echo-grpc
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  rules:
  - match: {headers: [{name: x-to, exact: bad}]}
    backends: [{subset: v2, weight: 1}]
  - match: {path: {prefix: /grpc.testing.TestService/}}
    backends: [{subset: v1, weight: 1}]
`)
		for i := range 10 {
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-to", "bad"), 5*time.Second)
			_, err := call(ctx)
			cancel()
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("call %d with x-to: bad: %v, want UNAVAILABLE from the v2 subset (its only, failing, instance)", i+1, err)
			}
			ctx, cancel = context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-to", "badly"), 5*time.Second)
			resp, err := call(ctx)
			cancel()
			if err != nil || resp.Username != good.Name {
				t.Fatalf("call %d with x-to: badly: %v, want v1 (%s) by the path rule", i+1, err, good.Name)
			}
		}
	})
	t.Run("mesh error", func(t *testing.T) {
		var hdr, trl metadata.MD
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := dial("no-such-grpc").UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl))
		st := status.Convert(err)
		weftErr := strings.Join(append(hdr.Get("x-weft-error"), trl.Get("x-weft-error")...), "")
		if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "unknown_service") || weftErr != "unknown_service" {
			t.Fatalf("call to an unknown service: %v (x-weft-error %q), want UNAVAILABLE unknown_service", err, weftErr)
		}
	})
}

// TestRateLimit: the destination's own sidecar answers requests over
// rateLimit 429 rate_limited, at about the set rate.
func TestRateLimit(t *testing.T) {
	cp, insts, _, c := startOrders(t, 1)
	applyYAML(t, cp, policyDoc("orders", "  rateLimit: {requestsPerSecond: 20, burst: 5}\n"))
	start := time.Now()
	rs := <-Load(c, "orders", LoadOpts{Workers: 4, MaxPerWorker: 10000, Duration: 2 * time.Second}, nil)
	secs := time.Since(start).Seconds()
	ok, limited := 0, 0
	for _, r := range rs {
		switch {
		case r.OK():
			ok++
		case r.Status == 429 && r.Header.Get("X-Weft-Error") == "rate_limited":
			limited++
		default:
			t.Fatalf("unexpected answer: %s", r)
		}
	}
	t.Logf("%d requests in %.1fs: %d passed (%.1f/s), %d answered 429", len(rs), secs, ok, float64(ok)/secs, limited)
	if max := 5 + 20*secs*1.2; float64(ok) > max || float64(ok) < 20*secs*0.5 {
		t.Errorf("%d passed in %.1fs, want about 20/s plus the burst of 5 (at most %.0f)", ok, secs, max)
	}
	if limited == 0 {
		t.Error("no request was rate limited")
	}
	if n := metricSum(t, insts[0], "weft_rate_limited_total", `reporter="server"`, `source_service="client"`); n != float64(limited) {
		t.Errorf("weft_rate_limited_total{source_service=client} = %v on the instance, want %d", n, limited)
	}
}

// TestRateLimitPerRoute: a Route rule's rateLimit holds for the requests it
// matches, at each instance, in place of the TrafficPolicy's (which keeps
// holding for the rest).
func TestRateLimitPerRoute(t *testing.T) {
	cp, _, _, c := startOrders(t, 1)
	applyYAML(t, cp, policyDoc("orders", "  rateLimit: {requestsPerSecond: 1000, burst: 1000}\n")+`---
apiVersion: weft.dev/v1alpha1
kind: Route
metadata: {name: orders}
spec:
  service: orders
  rules:
  - match: {path: {prefix: /export}}
    rateLimit: {requestsPerSecond: 5, burst: 2}
`)
	count := func(path string) (ok, limited int, secs float64) {
		start := time.Now()
		rs := <-Load(c, "orders", LoadOpts{Workers: 3, MaxPerWorker: 1000, Duration: 2 * time.Second, Pause: 20 * time.Millisecond,
			Path: func(int, int) string { return path }}, nil)
		for _, r := range rs {
			switch {
			case r.OK():
				ok++
			case r.Status == 429 && r.Header.Get("X-Weft-Error") == "rate_limited" && strings.Contains(string(r.Body), "route orders rule 0"):
				limited++
			default:
				t.Fatalf("%s: unexpected answer: %s", path, r)
			}
		}
		return ok, limited, time.Since(start).Seconds()
	}
	ok, limited, secs := count("/export/all")
	t.Logf("/export: %d passed, %d limited in %.1fs", ok, limited, secs)
	if max := 2 + 5*secs*1.3; float64(ok) > max || float64(ok) < 5*secs*0.5 || limited == 0 {
		t.Errorf("/export: %d passed and %d limited in %.1fs, want about 5/s plus a burst of 2 (at most %.0f)", ok, limited, secs, max)
	}
	if ok, limited, _ := count("/other"); limited != 0 || ok == 0 {
		t.Errorf("/other (the TrafficPolicy's 1000/s): %d passed, %d limited, want none limited", ok, limited)
	}
}

// TestRoutes: a Route's header canary routes exactly, a 90/10 split stays
// within statistical bounds, an injected abort answers fault_injected and
// an injected delay shows in the caller's latency but not the callee's.
func TestRoutes(t *testing.T) {
	cp := StartControl(t)
	v1a := StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--version", "v1"}})
	v1b := StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--version", "v1"}})
	v2 := StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--version", "v2"}})
	cp.WaitReady("orders", 3, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", v1a.Name, v1b.Name, v2.Name)
	applyYAML(t, cp, ordersV1V2Route+`  - match: {headers: [{name: x-canary, exact: "1"}]}
    backends: [{subset: v2, weight: 1}]
  - match: {path: {prefix: /abort}}
    fault: {abort: {percent: 100, status: 418}}
  - match: {path: {exact: /delay}}
    fault: {delay: {percent: 100, fixed: 300ms}}
  - backends: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`)
	t.Run("header canary", func(t *testing.T) {
		for i := range 40 {
			if r := mustGet(t, c, "orders", "/c", http.Header{"X-Canary": {"1"}}); r.Name != v2.Name {
				t.Fatalf("request %d with x-canary: 1 went to %s, want %s (v2)", i+1, r.Name, v2.Name)
			}
		}
	})
	t.Run("load report consumed", func(t *testing.T) {
		// Every callee's sidecar reports its load (x-weft-load) to the
		// caller's sidecar, which uses it and strips it: the app never sees it.
		r := meshGet(c, "orders", "/load-report", nil)
		if !r.OK() {
			t.Fatalf("GET: %s", r)
		}
		if v, ok := r.Header["X-Weft-Load"]; ok {
			t.Errorf("the caller's app got x-weft-load %q, want it consumed by its sidecar", v)
		}
	})
	t.Run("split 90/10", func(t *testing.T) {
		const n = 2000
		rs := <-Load(c, "orders", LoadOpts{Workers: 8, MaxPerWorker: n / 8, Duration: time.Minute,
			Header: func(int, int) http.Header { return http.Header{"X-Canary": {"10"}} }}, nil) // not exactly "1"
		if f := failures(rs); len(f) > 0 {
			t.Fatalf("%d failures:%s", len(f), describe(f, 5))
		}
		by := countByName(rs)
		// 10% of 2000 is 200, σ ≈ 13.4: ± 5σ.
		t.Logf("split over %d requests: %v", len(rs), by)
		if got := by[v2.Name]; got < 133 || got > 267 {
			t.Errorf("v2 got %d of %d, want 200 ± 67", got, len(rs))
		}
		if by[v1a.Name] == 0 || by[v1b.Name] == 0 {
			t.Errorf("v1's instances not both used: %v", by)
		}
	})
	t.Run("explain", func(t *testing.T) {
		var v2ID string
		for _, in := range cp.WaitReady("orders", 3, eventually) {
			if in.Version == "v2" {
				v2ID = in.ID
			}
		}
		r := weft(t, 30*time.Second, nil, "explain", "orders", "--header", "x-canary=1", "--server", cp.URL)
		if r.Code != 0 || !strings.Contains(r.Stdout, "Route/orders rule 0 matches") || !strings.Contains(r.Stdout, "subset v2: weight 1 of 1") {
			t.Fatalf("explain for a canary request:\n%s", r)
		}
		for _, line := range strings.Split(r.Stdout, "\n") {
			if strings.Contains(line, "version v1") && !strings.Contains(line, "not in the rule's subsets") ||
				strings.Contains(line, v2ID) && !strings.Contains(line, "may serve it") {
				t.Errorf("explain: wrong reason on %q\n%s", line, r.Stdout)
			}
		}
		t.Logf("weft explain orders --header x-canary=1:\n%s", r.Stdout)
		r = weft(t, 30*time.Second, nil, "explain", "orders", "--path", "/abort/1", "--server", cp.URL)
		if r.Code != 0 || !strings.Contains(r.Stdout, "rule 1 matches") || !strings.Contains(r.Stdout, "100% aborted with 418") {
			t.Fatalf("explain for /abort/1:\n%s", r)
		}
	})
	t.Run("abort", func(t *testing.T) {
		r := meshGet(c, "orders", "/abort/x", nil)
		if r.Status != 418 || r.Header.Get("X-Weft-Error") != "fault_injected" {
			t.Fatalf("/abort: %s, want 418 fault_injected", r)
		}
	})
	t.Run("delay", func(t *testing.T) {
		serverSum := func() float64 {
			s := 0.0
			for _, in := range []*Sidecar{v1a, v1b, v2} {
				s += metricSum(t, in, "weft_request_duration_seconds_sum", `reporter="server"`)
			}
			return s
		}
		before := serverSum()
		var client time.Duration
		for range 5 {
			r := meshGet(c, "orders", "/delay", nil)
			if !r.OK() {
				t.Fatalf("/delay: %s", r)
			}
			client += r.End.Sub(r.Start)
		}
		server := serverSum() - before
		t.Logf("5 delayed requests took %s at the client; the callees' sidecars saw %.3fs", client, server)
		if client < 5*300*time.Millisecond {
			t.Errorf("5 delayed requests took %s at the client, want ≥ 1.5s", client)
		}
		if server > 0.5 {
			t.Errorf("the callees' sidecars saw %.3fs for 5 requests, want the delay (1.5s) not there", server)
		}
	})
}

// TestRouteHashSticky: with consistent_hash on a header key, a Route's
// weighted split is chosen from the key: moving the weights from 50/50 to
// 60/40 moves only about 10% of the keys to the other subset, and every key
// that stays in its subset stays on its instance.
func TestRouteHashSticky(t *testing.T) {
	cp := StartControl(t)
	var all []*Sidecar
	version := map[string]string{}
	for _, v := range []string{"v1", "v1", "v2", "v2"} {
		s := StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--version", v}})
		all = append(all, s)
		version[s.Name] = v
	}
	cp.WaitReady("orders", 4, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", names(all)...)
	split := func(w1, w2 int) string {
		return policyYAML("orders", "orders", "consistent_hash", "header:x-user-id") + "---\n" + ordersV1V2Route + fmt.Sprintf(`  - backends: [{subset: v1, weight: %d}, {subset: v2, weight: %d}]
`, w1, w2)
	}
	ks := userKeys(400)
	applyYAML(t, cp, split(50, 50))
	before := keyMap(t, c, ks)
	if again := keyMap(t, c, ks); fmt.Sprint(again) != fmt.Sprint(before) {
		t.Fatalf("at unchanged weights keys moved")
	}
	applyYAML(t, cp, split(60, 40))
	after := keyMap(t, c, ks)
	moved, v1 := 0, 0
	for _, k := range ks {
		if version[before[k]] == "v1" {
			v1++
		}
		switch {
		case version[before[k]] != version[after[k]]:
			moved++
			if version[before[k]] != "v2" {
				t.Errorf("key %s moved from v1 (%s) to v2 (%s) when v1's weight grew", k, before[k], after[k])
			}
		case before[k] != after[k]:
			t.Errorf("key %s stayed in %s but moved from %s to %s", k, version[before[k]], before[k], after[k])
		}
	}
	t.Logf("400 keys: %d on v1 at 50/50; %d changed subsets at 60/40", v1, moved)
	// 10% of 400 is 40, σ = 6: ± 4σ.
	if moved < 16 || moved > 64 {
		t.Errorf("%d of 400 keys changed subsets, want about 40 (10%%)", moved)
	}
	if v1 < 150 || v1 > 250 {
		t.Errorf("%d of 400 keys on v1 at 50/50, want about 200", v1)
	}
}

// TestMirror: the mirrored subset receives a copy of every request while
// the primary's answers do not wait for the (slow) copies.
func TestMirror(t *testing.T) {
	cp := StartControl(t)
	v1 := StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--version", "v1"}})
	shadow := StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--version", "v2"}, AppArgs: []string{"--delay", "1s"}})
	cp.WaitReady("orders", 2, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	applyYAML(t, cp, ordersV1V2Route+`  - backends: [{subset: v1, weight: 1}]
    mirror: {subset: v2, percent: 100}
`)
	before := served(t, shadow)
	const n = 20
	var slowest time.Duration
	for i := range n {
		r := meshGet(c, "orders", "/m", nil)
		if !r.OK() || r.Reply.Name != v1.Name {
			t.Fatalf("request %d: %s, want v1's answer", i+1, r)
		}
		slowest = max(slowest, r.End.Sub(r.Start))
	}
	if slowest > 500*time.Millisecond {
		t.Errorf("slowest primary answer %s: the 1s copies slowed it", slowest)
	}
	var got int64
	if !poll(eventually, 100*time.Millisecond, func() bool { got = served(t, shadow) - before; return got >= n }) {
		t.Errorf("the mirror received %d copies of %d requests", got, n)
	}
	t.Logf("%d requests: slowest primary %s; mirror received %d copies", n, slowest, got)

	t.Run("bodies", func(t *testing.T) {
		bodyBytes := func() int64 {
			var v struct{ BodyBytes int64 }
			if err := json.Unmarshal([]byte(appControl(t, shadow, "/_control/count")), &v); err != nil {
				t.Fatal(err)
			}
			return v.BodyBytes
		}
		post := func(size int) {
			t.Helper()
			req, _ := http.NewRequest("POST", "http://orders/upload", strings.NewReader(strings.Repeat("b", size)))
			start := time.Now()
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Instance") == "" {
				t.Fatalf("POST %d bytes: %d", size, resp.StatusCode)
			}
			if d := time.Since(start); d > 700*time.Millisecond {
				t.Errorf("POST %d bytes answered after %s: the 1s copy slowed it", size, d)
			}
		}
		before, skipped := bodyBytes(), metricSum(t, client, "weft_mirror_skipped_total", `destination_service="orders"`)
		// Larger than the engine's read buffer: the held body must not
		// overwrite the head (one connection, request after request).
		for range 5 {
			post(10_000)
		}
		var got int64
		if !poll(eventually, 100*time.Millisecond, func() bool { got = bodyBytes() - before; return got >= 50_000 }) || got != 50_000 {
			t.Errorf("the mirror received %d body bytes of 5 × 10,000 (bodies up to maxBodyBytes are copied)", got)
		}
		post(100 << 10) // over the default 64 KiB: not copied
		if !poll(eventually, 100*time.Millisecond, func() bool {
			return metricSum(t, client, "weft_mirror_skipped_total", `destination_service="orders"`) >= skipped+1
		}) {
			t.Errorf("a 100 KiB body's copy was not counted in weft_mirror_skipped_total")
		}
		time.Sleep(1500 * time.Millisecond) // a copy would have arrived (1s delay)
		if got := bodyBytes() - before; got != 50_000 {
			t.Errorf("after a 100 KiB POST the mirror has %d body bytes, want 50,000 (no copy over maxBodyBytes)", got)
		}
	})
}

// TestActiveHealthCheck: with outlierDetection.healthCheck the calling
// sidecar probes every instance without any traffic; an instance whose
// health path answers 503 is ejected (reason health_check, with the
// status) and comes back once its probes pass.
func TestActiveHealthCheck(t *testing.T) {
	cp := StartControl(t)
	good1 := StartRun(t, cp, RunOpts{Service: "orders"})
	good2 := StartRun(t, cp, RunOpts{Service: "orders"})
	bad := StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--id", "orders-sick"}})
	cp.WaitReady("orders", 3, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	applyYAML(t, cp, policyDoc("orders", `  outlierDetection:
    consecutive5xx: 1000    # only the probes eject here
    healthCheck: {path: /healthz, interval: 200ms, timeout: 150ms, unhealthyThreshold: 2, healthyThreshold: 2}
`))
	waitAllServing(t, c, "orders", good1.Name, good2.Name, bad.Name)
	if e := ejected(t, client, "orders"); len(e) != 0 {
		t.Fatalf("ejected while every instance is healthy: %v", e)
	}
	appControl(t, bad, "/_control/fail?percent=100")
	var e []string
	if !poll(eventually, 50*time.Millisecond, func() bool {
		e = ejected(t, client, "orders")
		return len(e) == 1
	}) {
		t.Fatalf("the failing instance was not ejected by its probes; ejected: %v", e)
	}
	if want := "orders-sick (health check failed 2 times in a row: GET /healthz: 503"; !strings.HasPrefix(e[0], want) {
		t.Errorf("ejected %v, want %q…", e, want)
	}
	rs := <-Load(c, "orders", LoadOpts{Workers: 2, MaxPerWorker: 50, Duration: 10 * time.Second}, nil)
	if fails := failures(rs); len(fails) > 0 || countByName(rs)[bad.Name] > 0 {
		t.Errorf("while ejected: %d of %d failed, %d went to %s:%s", len(fails), len(rs), countByName(rs)[bad.Name], bad.Name, describe(fails, 3))
	}
	appControl(t, bad, "/_control/fail?percent=0")
	if !poll(eventually, 50*time.Millisecond, func() bool { return len(ejected(t, client, "orders")) == 0 }) {
		t.Fatalf("healed, but still ejected: %v", ejected(t, client, "orders"))
	}
	waitAllServing(t, c, "orders", bad.Name)
	if n := metricSum(t, client, "weft_outlier_ejections_total", `destination_service="orders"`); n < 1 {
		t.Errorf("weft_outlier_ejections_total = %v, want ≥ 1", n)
	}
}

// TestSuccessRateEjection: of three instances, one answers 503 to 30% of
// requests — never enough in a row for consecutive5xx — and success-rate
// ejection takes it out (reason success_rate on /outliers).
func TestSuccessRateEjection(t *testing.T) {
	cp := StartControl(t)
	good1 := StartRun(t, cp, RunOpts{Service: "orders"})
	good2 := StartRun(t, cp, RunOpts{Service: "orders"})
	StartRun(t, cp, RunOpts{Service: "orders", AppArgs: []string{"--fail-percent", "30"}, Flags: []string{"--id", "orders-flaky"}})
	cp.WaitReady("orders", 3, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	applyYAML(t, cp, policyDoc("orders", `  outlierDetection:
    consecutive5xx: 1000
    interval: 500ms
    baseEjectionTime: 20s
    successRate: {minRequests: 20, stdevFactor: 1}
`))
	waitAllServing(t, c, "orders", good1.Name, good2.Name)
	var e []string
	ok := poll(eventually, 10*time.Millisecond, func() bool {
		<-Load(c, "orders", LoadOpts{Workers: 4, MaxPerWorker: 50, Duration: 5 * time.Second}, nil)
		e = ejected(t, client, "orders")
		return len(e) > 0
	})
	if !ok || len(e) != 1 || !strings.HasPrefix(e[0], "orders-flaky (success rate ") {
		t.Fatalf("ejected %v, want only orders-flaky for its success rate", e)
	}
	t.Logf("ejected: %v", e)
	rs := <-Load(c, "orders", LoadOpts{Workers: 4, MaxPerWorker: 100, Duration: 10 * time.Second}, nil)
	if fails := failures(rs); len(fails) > 0 {
		t.Errorf("while ejected (20s): %d of %d failed:%s", len(fails), len(rs), describe(fails, 3))
	}
}

// TestGRPCDeadlineAndIdle: over gRPC behind two sidecars, the policy's
// timeout shorter than the caller's grpc-timeout is what the server is told
// (a smaller grpc-timeout), a call the server outlives is answered
// DEADLINE_EXCEEDED with x-weft-error: upstream_timeout, and a stream idle
// past idleTimeout is cut.
func TestGRPCDeadlineAndIdle(t *testing.T) {
	cp := StartControl(t)
	StartRun(t, cp, RunOpts{Service: "echo-grpc", AppArgs: []string{"--grpc"}})
	cp.WaitReady("echo-grpc", 1, eventually)
	client := StartClient(t, cp, nil)
	cc, err := grpc.NewClient(client.OutboundAddr(), grpc.WithAuthority("echo-grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	tc := testpb.NewTestServiceClient(cc)
	applyYAML(t, cp, policyDoc("echo-grpc", "  timeout: 1s\n  idleTimeout: 500ms\n"))

	t.Run("grpc-timeout passed on", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{FillServerId: true})
		if err != nil {
			t.Fatal(err)
		}
		var ms int
		if _, err := fmt.Sscanf(resp.ServerId, "deadline-ms=%d", &ms); err != nil || ms <= 0 || ms > 1000 {
			t.Fatalf("the server saw %q; want a grpc-timeout of at most the policy's 1s (the client sent 5s)", resp.ServerId)
		}
		t.Logf("client sent grpc-timeout 5s; the server had %dms left", ms)
	})
	t.Run("deadline exceeded", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		st, err := tc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 3_000_000}}})
		if err == nil {
			_, err = st.Recv()
		}
		took := time.Since(start)
		var weftErr string
		if st != nil {
			hdr, _ := st.Header()
			weftErr = strings.Join(append(hdr.Get("x-weft-error"), st.Trailer().Get("x-weft-error")...), "")
		}
		if status.Code(err) != codes.DeadlineExceeded || weftErr != "upstream_timeout" {
			t.Fatalf("a call the server takes 3s over: %v (x-weft-error %q), want DEADLINE_EXCEEDED upstream_timeout", err, weftErr)
		}
		if took < 900*time.Millisecond || took > 2500*time.Millisecond {
			t.Errorf("answered after %s, want about the policy's 1s", took)
		}
	})
	t.Run("idle stream cut", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := tc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 1}, {Size: 1, IntervalUs: 4_000_000}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatalf("first message: %v", err)
		}
		start := time.Now()
		_, err = st.Recv()
		took := time.Since(start)
		if err == nil || status.Code(err) == codes.OK {
			t.Fatalf("after a 4s stall the stream went on (%v), want it cut at idleTimeout 500ms", err)
		}
		if took > 3*time.Second {
			t.Errorf("stream cut after %s, want about idleTimeout 500ms (the server stalls 4s)", took)
		}
		t.Logf("stalled stream cut after %s: %v", took.Round(time.Millisecond), err)
	})
}

// TestPureClientEjections: a caller without --app-port registers no
// instance, yet its outlier ejections reach the control plane (it names
// its admin listener on its stream and is scraped): weft get services
// shows the ejected instance with the reason and the caller.
func TestPureClientEjections(t *testing.T) {
	cp := StartControl(t, "--scrape-interval", "300ms")
	good := StartRun(t, cp, RunOpts{Service: "orders"})
	StartRun(t, cp, RunOpts{Service: "orders", AppArgs: []string{"--fail-percent", "100"}, Flags: []string{"--id", "orders-bad"}})
	cp.WaitReady("orders", 2, eventually)
	client := StartSidecar(t, cp, SidecarOpts{Service: "client", Flags: []string{"--id", "client-pure"}})
	c := proxyClient(client.OutboundAddr())
	applyYAML(t, cp, policyDoc("orders", `  retries: {attempts: 2, retryOn: [5xx], backoff: {base: 1ms, max: 5ms}}
  outlierDetection: {consecutive5xx: 3, interval: 500ms, baseEjectionTime: 30s}
`))
	waitAllServing(t, c, "orders", good.Name)
	<-Load(c, "orders", LoadOpts{Workers: 2, MaxPerWorker: 50, Duration: 10 * time.Second}, nil)
	if e := ejected(t, client, "orders"); len(e) != 1 {
		t.Fatalf("the client's /outliers lists %v, want orders-bad", e)
	}
	want := "orders-bad consecutive_5xx client-pure"
	var sv []string
	if !poll(eventually, 100*time.Millisecond, func() bool {
		_, sv = controlEjections(t, cp, "orders")
		return len(sv) == 1 && sv[0] == want
	}) {
		t.Fatalf("the control plane's services show %v ejected, want %q", sv, want)
	}
	r := weft(t, 30*time.Second, nil, "get", "services", "--server", cp.URL)
	if r.Code != 0 || !regexp.MustCompile(`orders-bad.*consecutive_5xx.*client-pure`).MatchString(r.Stdout) {
		t.Errorf("weft get services does not show orders-bad ejected by client-pure:\n%s", r)
	}
	t.Logf("weft get services:\n%s", r.Stdout)
}
