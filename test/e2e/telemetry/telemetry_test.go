package telemetry_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestChain sends exactly N requests through client → frontend → orders →
// inventory (demo apps, which forward the trace headers) and checks what
// every sidecar, the control plane and the CLI say about them.
func TestChain(t *testing.T) {
	c := startControl(t)
	accessLog := filepath.Join(t.TempDir(), "orders-access.log")
	inv := demoUnit(t, c, "inventory", "--trace-sampling", "1")
	ord := demoUnit(t, c, "orders", "--trace-sampling", "1", "--access-log", accessLog)
	fe := demoUnit(t, c, "frontend", "--trace-sampling", "1")
	cl := startUnit(t, c, "client", []string{"--trace-sampling", "1"}) // a pure client: not registered, not scraped
	hc := cl.client()

	const N = 200
	traceID, parent := randomHex(32), randomHex(16)
	for i := range N {
		h := http.Header{}
		if i == N/2 {
			h.Set("Traceparent", "00-"+traceID+"-"+parent+"-01")
		}
		code, err := call(hc, "frontend", fmt.Sprintf("/p/%d", i), h)
		if err != nil || code != 200 {
			t.Fatalf("request %d: %d %v", i, code, err)
		}
	}

	type edge struct {
		u        *unit
		rep      string
		src, dst string
	}
	edges := []edge{
		{cl, "client", "client", "frontend"}, {fe, "server", "client", "frontend"},
		{fe, "client", "frontend", "orders"}, {ord, "server", "frontend", "orders"},
		{ord, "client", "orders", "inventory"}, {inv, "server", "orders", "inventory"},
	}

	t.Run("requests_total is N on both reporters of every edge", func(t *testing.T) {
		// A request is recorded as its response ends: allow the last ones to land.
		harness.Poll(5*time.Second, func() bool {
			for _, e := range edges {
				if edgeCount(scrape(t, e.u.adminURL), e.rep, e.src, e.dst) < N {
					return false
				}
			}
			return true
		})
		for _, e := range edges {
			mfs := scrape(t, e.u.adminURL)
			if got := edgeCount(mfs, e.rep, e.src, e.dst); got != N {
				t.Errorf("%s sidecar, reporter=%s %s→%s: weft_requests_total %v, want %d", e.u.service, e.rep, e.src, e.dst, got, N)
			}
			if n, _, _ := edgeHist(mfs, e.rep, e.src, e.dst); n != N {
				t.Errorf("%s sidecar, reporter=%s %s→%s: histogram count %d, want %d", e.u.service, e.rep, e.src, e.dst, n, N)
			}
			if ov := mfs["weft_proxy_overhead_seconds"]; ov == nil {
				t.Errorf("%s sidecar: no weft_proxy_overhead_seconds", e.u.service)
			}
		}
	})

	t.Run("server-side latency within client-side, per edge", func(t *testing.T) {
		for i := 0; i < len(edges); i += 2 {
			ce, se := edges[i], edges[i+1]
			_, csum, cb := edgeHist(scrape(t, ce.u.adminURL), "client", ce.src, ce.dst)
			_, ssum, sb := edgeHist(scrape(t, se.u.adminURL), "server", se.src, se.dst)
			t.Logf("%s→%s: mean client %.3fms, server %.3fms", ce.src, ce.dst, csum/N*1000, ssum/N*1000)
			if ssum > csum {
				t.Errorf("%s→%s: server-side total %.6fs > client-side %.6fs", ce.src, ce.dst, ssum, csum)
			}
			// Each server exchange is nested in its client exchange, so at
			// every bound at least as many server observations are below it.
			for le, cn := range cb {
				if sb[le] < cn {
					t.Errorf("%s→%s: le=%v server %d < client %d", ce.src, ce.dst, le, sb[le], cn)
				}
			}
		}
	})

	t.Run("trace spans and parent links across hops", func(t *testing.T) {
		var tr traceJSON
		ok := harness.Poll(10*time.Second, func() bool {
			return getJSON(t, c.URL+"/api/v1/traces/"+traceID, &tr) == 200 && len(tr.Spans) >= 6
		})
		if !ok {
			t.Fatalf("trace %s: %d spans after 10s, want 6: %+v", traceID, len(tr.Spans), tr.Spans)
		}
		if len(tr.Spans) != 6 {
			t.Fatalf("trace has %d spans, want 6: %+v", len(tr.Spans), tr.Spans)
		}
		want := []struct{ service, kind string }{
			{"client", "client"}, {"frontend", "server"}, {"frontend", "client"},
			{"orders", "server"}, {"orders", "client"}, {"inventory", "server"},
		}
		byParent := map[string]span{}
		for _, s := range tr.Spans {
			byParent[s.ParentSpanID] = s
		}
		cur := parent // the test's own span is the root's parent
		for i, w := range want {
			s, ok := byParent[cur]
			if !ok {
				t.Fatalf("hop %d (%s %s): no span with parent %s in %+v", i, w.service, w.kind, cur, tr.Spans)
			}
			if s.Service != w.service || s.Kind != w.kind {
				t.Fatalf("hop %d: span %s is %s/%s, want %s/%s", i, s.SpanID, s.Service, s.Kind, w.service, w.kind)
			}
			if i > 0 && s.Start.Before(byID(tr, cur).Start) {
				t.Errorf("span %s starts before its parent", s.SpanID)
			}
			cur = s.SpanID
		}
		out := runCLI(t, "trace", traceID, "--server", c.URL)
		for _, want := range []string{"└─", "inventory", "orders", "frontend", "GET inventory"} {
			if !strings.Contains(out, want) {
				t.Errorf("weft trace output lacks %q:\n%s", want, out)
			}
		}
		t.Logf("weft trace:\n%s", out)
		list := runCLI(t, "traces", "--service", "inventory", "--limit", "1000", "--server", c.URL)
		if !strings.Contains(list, traceID) {
			t.Errorf("weft traces --service inventory does not list %s", traceID)
		}
	})

	t.Run("control plane stats and weft stat", func(t *testing.T) {
		type view struct {
			Requests    float64 `json:"requests"`
			SuccessRate float64 `json:"successRate"`
			P50Ms       float64 `json:"p50Ms"`
		}
		type stats struct {
			Edges []struct {
				Source      string `json:"source"`
				Destination string `json:"destination"`
				Client      *view  `json:"client"`
				Server      *view  `json:"server"`
			} `json:"edges"`
		}
		find := func(st stats, src, dst string) (c, s *view) {
			for _, e := range st.Edges {
				if e.Source == src && e.Destination == dst {
					return e.Client, e.Server
				}
			}
			return nil, nil
		}
		var st stats
		ok := harness.Poll(10*time.Second, func() bool {
			getJSON(t, c.URL+"/api/v1/stats?window=5m", &st)
			for _, p := range [][2]string{{"frontend", "orders"}, {"orders", "inventory"}} {
				cv, sv := find(st, p[0], p[1])
				if cv == nil || sv == nil || cv.Requests < N || sv.Requests < N {
					return false
				}
			}
			return true
		})
		if !ok {
			t.Fatalf("control plane stats never reached %d per edge: %+v", N, st)
		}
		for _, p := range [][2]string{{"frontend", "orders"}, {"orders", "inventory"}} {
			cv, sv := find(st, p[0], p[1])
			if cv.Requests != N || sv.Requests != N || cv.SuccessRate != 1 || sv.P50Ms > cv.P50Ms {
				t.Errorf("%s→%s: client %+v server %+v", p[0], p[1], cv, sv)
			}
		}
		// A pure client names its admin listener on its stream, so it is
		// scraped like every other sidecar.
		if cv, sv := find(st, "client", "frontend"); cv == nil || cv.Requests != N || sv == nil || sv.Requests != N {
			t.Errorf("client→frontend: client view %+v, server %+v; want %d requests in each", cv, sv, N)
		}
		out := runCLI(t, "stat", "--server", c.URL, "--window", "5m")
		for _, want := range []string{"CLIENT VIEW", "SERVER VIEW", "orders", "→ inventory", "100.00%"} {
			if !strings.Contains(out, want) {
				t.Errorf("weft stat lacks %q:\n%s", want, out)
			}
		}
		t.Logf("weft stat:\n%s", out)
		var js map[string]any
		if err := json.Unmarshal([]byte(runCLI(t, "stat", "orders", "-o", "json", "--server", c.URL)), &js); err != nil {
			t.Errorf("weft stat -o json: %v", err)
		}
		top := runCLI(t, "top", "-n", "1", "--server", c.URL, "--window", "5m")
		if !strings.Contains(top, "→ orders") {
			t.Errorf("weft top lacks the frontend → orders edge:\n%s", top)
		}
	})

	t.Run("access log", func(t *testing.T) {
		var lines []map[string]any
		harness.Poll(5*time.Second, func() bool {
			lines = readJSONLines(t, accessLog)
			return len(lines) >= 2*N
		})
		if len(lines) != 2*N {
			t.Fatalf("%d access log lines, want %d (server and client side of orders)", len(lines), 2*N)
		}
		reps := map[string]int{}
		traced := 0
		for _, l := range lines {
			reps[l["reporter"].(string)]++
			if l["response_code"] != 200.0 || l["duration_ms"] == nil || l["method"] != "GET" || l["path"] == nil {
				t.Fatalf("line %v", l)
			}
			if l["trace_id"] == traceID {
				traced++
			}
		}
		if reps["server"] != N || reps["client"] != N || traced != 2 {
			t.Errorf("reporters %v, lines of the traced request %d (want %d each, 2)", reps, traced, N)
		}
	})
}

func byID(tr traceJSON, id string) span {
	for _, s := range tr.Spans {
		if s.SpanID == id {
			return s
		}
	}
	return span{}
}

func readJSONLines(t testing.TB, path string) []map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestSamplingZero: with --trace-sampling 0 nothing is exported, even for
// requests that arrive with a sampled traceparent.
func TestSamplingZero(t *testing.T) {
	c := startControl(t)
	demoUnit(t, c, "inventory", "--trace-sampling", "0")
	cl := startUnit(t, c, "client", []string{"--trace-sampling", "0"})
	hc := cl.client()
	for i := range 50 {
		h := http.Header{}
		if i%2 == 0 {
			h.Set("Traceparent", "00-"+randomHex(32)+"-"+randomHex(16)+"-01")
		}
		if code, err := call(hc, "inventory", "/stock/sku-1", h); err != nil || code != 200 {
			t.Fatalf("request %d: %d %v", i, code, err)
		}
	}
	time.Sleep(2500 * time.Millisecond) // > the 1 s batch timeout
	var list traceList
	getJSON(t, c.URL+"/api/v1/traces?limit=1000", &list)
	if len(list.Traces) != 0 {
		t.Fatalf("sampling 0 exported %d traces", len(list.Traces))
	}
}

// TestDeadCollector: an OTLP endpoint that accepts connections and never
// answers changes neither request success nor latency beyond noise.
func TestDeadCollector(t *testing.T) {
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := hole.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn) // held open, never read from
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	c := startControl(t)
	dead := "http://" + hole.Addr().String() + "/v1/traces"
	// Mesh A exports nowhere; mesh B exports every span to the black hole.
	startUnit(t, c, "inv-a", []string{"--otlp-endpoint", "none"}, bins.Weft, "demo-app", "--role", "inventory")
	startUnit(t, c, "inv-b", []string{"--otlp-endpoint", dead, "--trace-sampling", "1"}, bins.Weft, "demo-app", "--role", "inventory")
	ca := startUnit(t, c, "client-a", []string{"--otlp-endpoint", "none"}).client()
	cb := startUnit(t, c, "client-b", []string{"--otlp-endpoint", dead, "--trace-sampling", "1"}).client()
	const M = 400
	var la, lb []time.Duration
	for i := range M {
		for _, x := range []struct {
			hc   *http.Client
			host string
			lat  *[]time.Duration
		}{{ca, "inv-a", &la}, {cb, "inv-b", &lb}} {
			start := time.Now()
			code, err := call(x.hc, x.host, "/stock/sku-1", nil)
			if err != nil || code != 200 {
				t.Fatalf("request %d to %s: %d %v", i, x.host, code, err)
			}
			*x.lat = append(*x.lat, time.Since(start))
		}
	}
	pa50, pa99 := pct(la, 0.5), pct(la, 0.99)
	pb50, pb99 := pct(lb, 0.5), pct(lb, 0.99)
	t.Logf("no export: p50 %v p99 %v; dead collector: p50 %v p99 %v", pa50, pa99, pb50, pb99)
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	if n == 0 {
		t.Error("the sidecars never tried the dead collector")
	}
	// Noise on a shared box is large; a request waiting on export would
	// take the export timeout (seconds).
	if pb50 > 2*pa50+5*time.Millisecond || pb99 > 3*pa99+20*time.Millisecond {
		t.Errorf("the dead collector slowed requests: p50 %v vs %v, p99 %v vs %v", pb50, pa50, pb99, pa99)
	}
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(math.Ceil(q*float64(len(s))))-1]
}

// TestSeriesBounded: 100k requests with random paths and random Host
// headers, and spoofed x-weft-source values, leave the series bounded.
func TestSeriesBounded(t *testing.T) {
	// Permissive: a tenth of the requests go in plaintext straight at the
	// inbound port with spoofed callers, which a strict mesh (the default)
	// refuses before any metric.
	c := startControl(t, "--mtls", "permissive")
	ord := startUnit(t, c, "orders", nil, bins.App)
	cl := startUnit(t, c, "client", nil)
	var inbound string
	harness.Poll(eventually, func() bool {
		var sv struct {
			Services []struct {
				Name      string `json:"name"`
				Instances []struct {
					Address string `json:"address"`
					Ready   bool   `json:"ready"`
				} `json:"instances"`
			} `json:"services"`
		}
		getJSON(t, c.URL+"/api/v1/services", &sv)
		for _, s := range sv.Services {
			if s.Name == "orders" && len(s.Instances) == 1 && s.Instances[0].Ready {
				inbound = s.Instances[0].Address
			}
		}
		return inbound != ""
	})
	const total = 100_000
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := cl.client()
			direct := &http.Client{Timeout: 10 * time.Second}
			for {
				i := sent.Add(1)
				if i > total {
					return
				}
				var code int
				var err error
				switch {
				case i%10 < 6: // random path to a real service
					code, err = call(hc, "orders", "/"+randomHex(12)+"/"+randomHex(8), nil)
				case i%10 < 9: // random Host: no such service
					code, err = call(hc, "svc-"+randomHex(10), "/x", nil)
				default: // straight at the inbound, claiming a random caller
					req, _ := http.NewRequest("GET", "http://"+inbound+"/"+randomHex(6), nil)
					req.Host = "orders"
					req.Header.Set("X-Weft-Source", fmt.Sprintf("caller-%d-%d", w, rand.IntN(1<<30)))
					resp, derr := direct.Do(req)
					err = derr
					if derr == nil {
						code = resp.StatusCode
						resp.Body.Close()
					}
				}
				if err != nil || (code != 200 && code != 503) {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests in %v (%d unexpected answers)", total, time.Since(start).Round(time.Millisecond), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	cm, om := scrape(t, cl.adminURL), scrape(t, ord.adminURL)
	cs, os_ := seriesCount(cm, "weft_requests_total"), seriesCount(om, "weft_requests_total")
	t.Logf("series: client sidecar %d, orders sidecar %d", cs, os_)
	// Client: frontend→orders 200, →unknown 503. Orders: its callers
	// (client, and the spoofed names up to the 500-name cap plus an
	// "other" series per status class).
	if cs > 5 {
		t.Errorf("client sidecar has %d request series, want a handful", cs)
	}
	if os_ > 520 {
		t.Errorf("orders sidecar has %d request series, want at most ~500 (the name cap)", os_)
	}
	if edgeCount(cm, "client", "client", "unknown") == 0 {
		t.Error("requests to random hosts were not recorded as destination unknown")
	}
}

// TestPrometheus: a real Prometheus server scrapes a running mesh and
// answers histogram_quantile over weft_request_duration_seconds.
func TestPrometheus(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("prometheus not installed (make deps installs it)")
		}
		t.Fatal("prometheus not installed; scripts/deps.sh installs it")
	}
	c := startControl(t)
	inv := demoUnit(t, c, "inventory")
	ord := demoUnit(t, c, "orders")
	cl := startUnit(t, c, "client", nil)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: weft
    static_configs: [{targets: [%q, %q, %q]}]
`, inv.admin, ord.admin, cl.admin)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	web := harness.FreeAddr(t)
	harness.Start(t, "prometheus", prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+web)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		hc := cl.client()
		for ctx.Err() == nil {
			_, _ = call(hc, "orders", "/orders/7", nil)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	type result struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	query := func(q string) []result {
		var out struct {
			Status string `json:"status"`
			Data   struct {
				Result []result `json:"result"`
			} `json:"data"`
		}
		code, body, err := harness.Get("http://" + web + "/api/v1/query?query=" + urlEscape(q))
		if err != nil || code != 200 {
			return nil
		}
		_ = json.Unmarshal([]byte(body), &out)
		return out.Data.Result
	}
	q := `histogram_quantile(0.9, sum by (le, destination_service) (rate(weft_request_duration_seconds_bucket{reporter="server"}[10s])))`
	var res []result
	ok := harness.Poll(40*time.Second, func() bool {
		res = query(q)
		for _, r := range res {
			if r.Metric["destination_service"] == "inventory" {
				v, _ := r.Value[1].(string)
				var f float64
				fmt.Sscan(v, &f)
				return f > 0 && !math.IsNaN(f) && f < 10
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("Prometheus %s = %+v", q, res)
	}
	t.Logf("Prometheus: %s = %+v", q, res)
	if r := query(`sum(weft_requests_total{reporter="client",destination_service="orders"})`); len(r) != 1 {
		t.Errorf("sum(weft_requests_total) = %+v", r)
	}
}

func urlEscape(s string) string {
	r := strings.NewReplacer("%", "%25", " ", "%20", "{", "%7B", "}", "%7D", "\"", "%22", "=", "%3D", "(", "%28", ")", "%29", "[", "%5B", "]", "%5D", ",", "%2C", "+", "%2B", "&", "%26")
	return r.Replace(s)
}

// TestOTLPToAnotherReceiver: --otlp-endpoint sends spans to any OTLP
// receiver, over gRPC and over HTTP — here a second control plane.
func TestOTLPToAnotherReceiver(t *testing.T) {
	c1, c2 := startControl(t), startControl(t)
	// c2's receiver wants a token (--api-auth): an exporter other than its
	// own sidecars sends an admin one, here through the OTLP exporters'
	// standard environment variable.
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer "+c2.Token())
	demoUnit(t, c1, "inventory", "--trace-sampling", "1", "--otlp-endpoint", "grpc://"+c2.GRPCAddr)
	cl := startUnit(t, c1, "client", []string{"--trace-sampling", "1", "--otlp-endpoint", "http://" + c2.HTTPAddr + "/v1/traces"})
	traceID := randomHex(32)
	h := http.Header{"Traceparent": {"00-" + traceID + "-" + randomHex(16) + "-01"}}
	if code, err := call(cl.client(), "inventory", "/stock/sku-9", h); err != nil || code != 200 {
		t.Fatalf("request: %d %v", code, err)
	}
	var tr traceJSON
	if !harness.Poll(10*time.Second, func() bool {
		return getJSON(t, c2.URL+"/api/v1/traces/"+traceID, &tr) == 200 && len(tr.Spans) == 2
	}) {
		t.Fatalf("second control plane holds %+v, want the client (HTTP) and server (gRPC) spans", tr)
	}
	var none traceList
	getJSON(t, c1.URL+"/api/v1/traces", &none)
	if len(none.Traces) != 0 {
		t.Errorf("the first control plane received %d traces; --otlp-endpoint should win", len(none.Traces))
	}
}

// TestGRPCAndTCP: gRPC calls are labelled with grpc_status (from the
// trailer, or the header of a trailers-only answer), and raw TCP tunnels
// count connections and bytes.
func TestGRPCAndTCP(t *testing.T) {
	c := startControl(t)
	echo := startUnit(t, c, "echo-grpc", nil, bins.App, "--grpc")
	tcp := startUnit(t, c, "echo-tcp", nil, bins.App, "--tcp-echo")
	up := harness.FreeAddr(t)
	cl := startUnit(t, c, "client", []string{"--upstream", "echo-tcp=" + up})

	cc, err := grpc.NewClient(cl.out, grpc.WithAuthority("echo-grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tc := testpb.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if _, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no"}})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("status %v, want NotFound", err)
		}
	}
	grpcCounts := func(u *unit, rep string) map[string]float64 {
		out := map[string]float64{}
		for _, m := range scrape(t, u.adminURL)["weft_requests_total"].GetMetric() {
			l := labelsOf(m)
			if l["reporter"] == rep && l["destination_service"] == "echo-grpc" {
				out[l["grpc_status"]] += m.GetCounter().GetValue()
			}
		}
		return out
	}
	want := map[string]float64{"0": 3, "5": 2}
	for _, x := range []struct {
		u   *unit
		rep string
	}{{cl, "client"}, {echo, "server"}} {
		var got map[string]float64
		harness.Poll(5*time.Second, func() bool { got = grpcCounts(x.u, x.rep); return fmt.Sprint(got) == fmt.Sprint(want) })
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s reporter: grpc_status counts %v, want %v", x.rep, got, want)
		}
	}

	conn, err := net.Dial("tcp", up)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello through the mesh\n")
	conn.Write(msg)
	buf := make([]byte, len(msg))
	if _, err := io_ReadFull(conn, buf); err != nil || string(buf) != string(msg) {
		t.Fatalf("echo: %q %v", buf, err)
	}
	conn.Close()
	for _, x := range []struct {
		u   *unit
		rep string
	}{{cl, "client"}, {tcp, "server"}} {
		ok := harness.Poll(5*time.Second, func() bool {
			mfs := scrape(t, x.u.adminURL)
			conns, bytesSent := 0.0, 0.0
			for _, m := range mfs["weft_tcp_connections_total"].GetMetric() {
				if l := labelsOf(m); l["reporter"] == x.rep && l["source_service"] == "client" && l["destination_service"] == "echo-tcp" {
					conns += m.GetCounter().GetValue()
				}
			}
			for _, m := range mfs["weft_tcp_bytes_total"].GetMetric() {
				if l := labelsOf(m); l["reporter"] == x.rep && l["direction"] == "sent" && l["destination_service"] == "echo-tcp" {
					bytesSent += m.GetCounter().GetValue()
				}
			}
			return conns == 1 && bytesSent == float64(len(msg))
		})
		if !ok {
			t.Errorf("%s reporter: tunnel not counted as 1 connection, %d bytes sent", x.rep, len(msg))
		}
	}
}

func io_ReadFull(c net.Conn, b []byte) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
