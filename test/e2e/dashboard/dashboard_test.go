package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/weftmesh/weft/test/e2e/harness"
)

const manifest = `apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: orders
spec:
  service: orders
  loadBalancer:
    algorithm: least_request
  timeout: 5s
---
apiVersion: weft.dev/v1alpha1
kind: Subscription
metadata:
  name: ledger-dashtest
spec:
  service: ledger
  topic: dashtest
  path: /events
`

// The API's numbers, as far as the test reads them.
type view struct {
	Requests    float64 `json:"requests"`
	RPS         float64 `json:"rps"`
	SuccessRate float64 `json:"successRate"`
	P99Ms       float64 `json:"p99Ms"`
}

type stats struct {
	Services []struct {
		Service string `json:"service"`
		Client  *view  `json:"client"`
		Server  *view  `json:"server"`
	} `json:"services"`
}

type series struct {
	Points []struct {
		Client *view `json:"client"`
		Server *view `json:"server"`
	} `json:"points"`
}

type services struct {
	Services []struct {
		Name      string `json:"name"`
		Instances []struct {
			ID      string `json:"id"`
			Address string `json:"address"`
			Ready   bool   `json:"ready"`
		} `json:"instances"`
	} `json:"services"`
}

// TestDashboard loads every page of the dashboard in headless Chromium
// from a control plane with a live mesh (client → frontend → orders →
// inventory, every request traced), and checks each page's content against
// the API, that no page has a JavaScript error or a failed request, and
// saves a screenshot of each.
func TestDashboard(t *testing.T) {
	if _, err := chromium(); err != nil {
		t.Skipf("no Chromium to drive (%v): run scripts/deps.sh, which installs Debian's chromium, or set WEFT_CHROMIUM", err)
	}
	c := harness.StartControl(t, bins.Weft, eventually, "--scrape-interval", "1s")
	send(t, "POST", c.URL+"/api/v1/apply", manifest)
	startUnit(t, c, "inventory", bins.Weft, "demo-app", "--role", "inventory")
	startUnit(t, c, "orders", bins.Weft, "demo-app", "--role", "orders")
	startUnit(t, c, "frontend", bins.Weft, "demo-app", "--role", "frontend")
	cl := startUnit(t, c, "client") // a pure client: calls frontend, not registered
	for i := range 3 {
		send(t, "POST", c.URL+"/api/v1/topics/dashtest/publish", fmt.Sprintf(`{"n":%d}`, i))
	}
	for i := range 2 {
		send(t, "POST", c.URL+"/api/v1/topics/dashtest.dlq/publish", fmt.Sprintf(`{"dead":%d}`, i))
	}

	// Steady traffic for the whole test, about 25 requests/s.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(cl.proxy)}}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sent, failed atomic.Int64
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			code, err := get(ctx, hc, fmt.Sprintf("http://frontend/p/%d", i), nil)
			sent.Add(1)
			if ctx.Err() == nil && (err != nil || code != 200) {
				failed.Add(1)
			}
			time.Sleep(40 * time.Millisecond)
		}
	})
	t.Cleanup(func() { stop(); wg.Wait(); t.Logf("traffic: %d requests, %d failed", sent.Load(), failed.Load()) })

	// Wait for a few scrape rounds with traffic in them.
	if !harness.Poll(eventually, func() bool {
		var s series
		getJSON(t, c.URL+"/api/v1/series?service=orders&window=15m", &s)
		n := 0
		for _, p := range s.Points {
			if p.Client != nil && p.Server != nil {
				n++
			}
		}
		return n >= 4
	}) {
		t.Fatal("the control plane has no 4 scrape rounds with traffic to orders after 20s")
	}
	// One request with a known trace id, for the waterfall.
	traceID, parent := randomHex(32), randomHex(16)
	if code, err := get(ctx, hc, "http://frontend/traced", http.Header{"Traceparent": {"00-" + traceID + "-" + parent + "-01"}}); err != nil || code != 200 {
		t.Fatalf("traced request: %d %v", code, err)
	}
	// And one that fails: a service nobody runs.
	errID := randomHex(32)
	if code, err := get(ctx, hc, "http://nosuch/x", http.Header{"Traceparent": {"00-" + errID + "-" + randomHex(16) + "-01"}}); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("request to an unknown service: %d %v, want 503", code, err)
	}
	for _, id := range []string{traceID, errID} {
		if !harness.Poll(eventually, func() bool {
			code, body, _ := harness.Get(c.URL + "/api/v1/traces/" + id)
			return code == 200 && (id == errID || strings.Count(body, `"spanId"`) >= 6)
		}) {
			t.Fatalf("trace %s never reached the control plane", id)
		}
	}

	b := newBrowser(t, 1280, 1000)
	// As a user does: weft dashboard prints a one-time login URL (made with
	// the local token file), whose cookie the browser keeps.
	out, err := exec.Command(bins.Weft, "dashboard", "--server", c.URL).Output()
	login := strings.TrimSpace(string(out))
	if err != nil || !strings.Contains(login, "/login?code=") {
		t.Fatalf("weft dashboard: %v %q", err, out)
	}
	b.do(t, "opening the dashboard", chromedp.Navigate(login))
	until(t, b, "the services page", `document.querySelector('#services tbody tr[data-service]')`, eventually)

	t.Run("keyboard reaches the skip link and the navigation first", func(t *testing.T) {
		var got []string
		for range 3 {
			b.do(t, "pressing Tab", chromedp.KeyEvent("\t"))
			got = append(got, eval[string](t, b, `document.activeElement.textContent.trim()`))
		}
		if want := []string{"Skip to content", "Weft", "Services"}; !slices.Equal(got, want) {
			t.Errorf("Tab focuses %q, want %q", got, want)
		}
	})
	t.Run("services page lists the services with the API's rates", func(t *testing.T) { checkServices(t, b, c) })
	t.Run("narrow screen: no sideways scrolling", func(t *testing.T) {
		b.do(t, "emulating a phone", chromedp.EmulateViewport(390, 844))
		defer b.do(t, "back to a desktop", chromedp.EmulateViewport(1280, 1000))
		for _, page := range []string{"#/services", "#/service/orders", "#/topology"} {
			b.show(t, page, `document.querySelector('main h1')`)
			time.Sleep(500 * time.Millisecond)
			if w := eval[[]int](t, b, `[document.documentElement.scrollWidth, window.innerWidth]`); w[0] > w[1] {
				t.Errorf("%s on a 390px screen is %dpx wide: the page scrolls sideways", page, w[0])
			}
		}
		b.show(t, "#/services", `document.querySelector('#services tbody tr[data-service="orders"]')`)
		b.shot(t, "services-narrow")
		b.clean(t, "narrow")
	})
	t.Run("service page plots 15 minutes per reporter", func(t *testing.T) { checkService(t, b, c) })
	t.Run("topology shows the call graph", func(t *testing.T) { checkTopology(t, b) })
	t.Run("traces list and a waterfall of client and server spans", func(t *testing.T) { checkTraces(t, b, traceID, parent, errID) })
	t.Run("topics: lag, dead letters and replay", func(t *testing.T) { checkTopics(t, b, c) })
	t.Run("resources and the latest apply", func(t *testing.T) { checkResources(t, b) })
	t.Run("API token asked for on 401 and sent as a bearer token", func(t *testing.T) { checkAuth(t, c, b) })
}

func checkServices(t *testing.T, b *browser, c *harness.Control) {
	type row struct {
		Service string              `json:"service"`
		Ready   int                 `json:"ready"`
		Total   int                 `json:"total"`
		Values  map[string]*float64 `json:"values"`
	}
	const read = `[...document.querySelectorAll('#services tbody tr[data-service]')].map(tr => {
		const r = tr.querySelector('[data-col=ready]').dataset;
		return {service: tr.dataset.service, ready: +r.ready, total: +r.total,
			values: Object.fromEntries([...tr.querySelectorAll('td[data-col][data-value]')].map(td => [td.dataset.col, td.dataset.value === '' ? null : +td.dataset.value]))};
	})`
	until(t, b, "rates of every service", `['frontend', 'orders', 'inventory'].every(s => {
		const td = document.querySelector('#services tr[data-service="' + s + '"] td[data-col="server-rps"]');
		return td && +td.dataset.value > 0; })`, eventually)
	// Right after the page's next refresh, read the API too.
	before := eval[string](t, b, `document.getElementById('status').textContent`)
	until(t, b, "a live refresh", `document.getElementById('status').textContent !== `+jsString(before), 10*time.Second)
	var st stats
	getJSON(t, c.URL+"/api/v1/stats?window=1m", &st)
	var reg services
	getJSON(t, c.URL+"/api/v1/services", &reg)
	rows := eval[[]row](t, b, read)
	byName := map[string]row{}
	for _, r := range rows {
		byName[r.Service] = r
	}
	for _, name := range []string{"frontend", "orders", "inventory"} {
		r, ok := byName[name]
		if !ok {
			t.Errorf("services page has no row for %s: %+v", name, rows)
			continue
		}
		if r.Ready != 1 || r.Total != 1 {
			t.Errorf("%s: page says %d/%d ready, want 1/1", name, r.Ready, r.Total)
		}
		for _, s := range st.Services {
			if s.Service != name {
				continue
			}
			for side, v := range map[string]*view{"client": s.Client, "server": s.Server} {
				got := r.Values[side+"-rps"]
				switch {
				case v == nil && got != nil:
					t.Errorf("%s %s side: page shows %v rps, the API has no data", name, side, *got)
				case v != nil && got == nil:
					t.Errorf("%s %s side: page shows nothing, the API %v rps", name, side, v.RPS)
				case v != nil && math.Abs(*got-v.RPS) > 0.25*v.RPS:
					t.Errorf("%s %s side: page %.2f rps, API %.2f rps: more than 25%% apart", name, side, *got, v.RPS)
				case v != nil && (*r.Values[side+"-successRate"] != v.SuccessRate || *r.Values[side+"-p99Ms"] <= 0):
					t.Errorf("%s %s side: page success %v p99 %v, API %+v", name, side, *r.Values[side+"-successRate"], *r.Values[side+"-p99Ms"], v)
				}
			}
		}
	}
	// The frontend is called by a pure client sidecar, which names its
	// admin listener on its stream and is scraped too: both sides have
	// numbers.
	if fe := byName["frontend"]; fe.Values["client-rps"] == nil || fe.Values["server-rps"] == nil {
		t.Errorf("frontend: client side %v, server side %v; want both", fe.Values["client-rps"], fe.Values["server-rps"])
	}
	// Sorting: RPS (server side), highest first.
	b.do(t, "sorting by server RPS", chromedp.Click(chromedp.CSS(`th[data-key="server.rps"] button`)))
	if sort := eval[string](t, b, `document.querySelector('th[data-key="server.rps"]').getAttribute('aria-sort')`); sort != "descending" {
		t.Errorf("after one click on RPS: aria-sort %q, want descending", sort)
	}
	var vals []float64
	for _, r := range eval[[]row](t, b, read) {
		if v := r.Values["server-rps"]; v != nil {
			vals = append(vals, *v)
		}
	}
	if !slices.IsSortedFunc(vals, func(a, b float64) int { return -compare(a, b) }) || len(vals) < 3 {
		t.Errorf("sorted by server RPS, highest first: %v", vals)
	}
	if h := eval[string](t, b, `location.hash`); h != "#/services?sort=server.rps&dir=desc" {
		t.Errorf("the sorted view's URL is %q, want it linkable", h)
	}
	b.shot(t, "services")
	b.clean(t, "services")
}

func compare(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

var coord = regexp.MustCompile(`[ML]([-\d.]+) ([-\d.]+)`)

type drawn struct {
	Plot   string `json:"plot"`
	Series string `json:"series"`
	D      string `json:"d"`
	Points int    `json:"points"`
}

// xy parses a drawn path's coordinates.
func xy(d string) [][2]float64 {
	var out [][2]float64
	for _, m := range coord.FindAllStringSubmatch(d, -1) {
		x, _ := strconv.ParseFloat(m[1], 64)
		y, _ := strconv.ParseFloat(m[2], 64)
		out = append(out, [2]float64{x, y})
	}
	return out
}

func checkService(t *testing.T, b *browser, c *harness.Control) {
	b.show(t, "#/service/orders", `(() => { const p = document.querySelector('figure[data-plot="latency-server"] path[data-series="server p99"]'); return p && +p.dataset.points >= 4; })()`)
	paths := eval[[]drawn](t, b, `[...document.querySelectorAll('figure[data-plot] path.line')].map(p => ({plot: p.closest('figure').dataset.plot, series: p.dataset.series, d: p.getAttribute('d'), points: +p.dataset.points}))`)
	var s series
	getJSON(t, c.URL+"/api/v1/series?service=orders&window=15m", &s)
	withData := 0
	for _, p := range s.Points {
		if p.Client != nil {
			withData++
		}
	}
	const baseline = 200 - 26 // the plots' x axis: H - B in plot.js
	want := map[string][]string{
		"rate":           {"client", "server"},
		"success":        {"client", "server"},
		"latency-client": {"client p50", "client p95", "client p99"},
		"latency-server": {"server p50", "server p95", "server p99"},
	}
	got := map[string]drawn{}
	for _, p := range paths {
		got[p.Plot+"/"+p.Series] = p
	}
	for plot, names := range want {
		for _, name := range names {
			p, ok := got[plot+"/"+name]
			if !ok {
				t.Errorf("plot %s has no line %q (lines: %v)", plot, name, paths)
				continue
			}
			pts := xy(p.D)
			if len(pts) != p.Points || len(pts) < 4 {
				t.Errorf("plot %s, %s: %d points in the path data (data-points %d), want at least 4", plot, name, len(pts), p.Points)
				continue
			}
			above := 0
			for i, pt := range pts {
				if i > 0 && pt[0] <= pts[i-1][0] {
					t.Errorf("plot %s, %s: point %d at x=%v is not right of the one before (%v)", plot, name, i, pt[0], pts[i-1][0])
				}
				if pt[1] < baseline-1 {
					above++
				}
			}
			// Latency plots scale to their p99, so p50 may sit on the axis.
			if (plot == "rate" || plot == "success" || strings.HasSuffix(name, "p99")) && above < 3 {
				t.Errorf("plot %s, %s: only %d of %d points above zero: %s", plot, name, above, len(pts), p.D)
			}
			if plot == "success" && pts[len(pts)-1][1] > 11 {
				t.Errorf("success plot, %s: the last point is at y=%v, want the 100%% line (y=10) with no failed request", name, pts[len(pts)-1][1])
			}
			if plot != "rate" && math.Abs(float64(len(pts)-withData)) > 3 {
				t.Errorf("plot %s, %s: %d points drawn, the API has %d intervals with data", plot, name, len(pts), withData)
			}
		}
	}
	// Quantiles are ordered at every interval: p50 ≤ p95 ≤ p99 (in SVG
	// coordinates, y grows downwards).
	for _, side := range []string{"client", "server"} {
		ys := map[string]map[float64]float64{}
		for _, q := range []string{"p50", "p95", "p99"} {
			ys[q] = map[float64]float64{}
			for _, pt := range xy(got["latency-"+side+"/"+side+" "+q].D) {
				ys[q][pt[0]] = pt[1]
			}
		}
		for x, y50 := range ys["p50"] {
			if y95, y99 := ys["p95"][x], ys["p99"][x]; y99 > y95+0.2 || y95 > y50+0.2 {
				t.Errorf("%s latency at x=%v: y p50 %v, p95 %v, p99 %v; want p99 highest", side, x, y50, y95, y99)
			}
		}
	}
	var reg services
	getJSON(t, c.URL+"/api/v1/services", &reg)
	for _, sv := range reg.Services {
		if sv.Name != "orders" {
			continue
		}
		for _, in := range sv.Instances {
			addr := eval[string](t, b, `(document.querySelector('#instances tr[data-instance=`+jsString(in.ID)+`] td[data-col=address]') || {}).textContent || ''`)
			if addr != in.Address {
				t.Errorf("instance %s: page shows address %q, API %q", in.ID, addr, in.Address)
			}
		}
	}
	for sel, what := range map[string]string{
		`#callers tr[data-edge="frontend"]`: "frontend as a caller", `#callees tr[data-edge="inventory"]`: "inventory as a callee",
		`#config section[data-kind="TrafficPolicy"][data-name="orders"]`: "its TrafficPolicy",
	} {
		if !eval[bool](t, b, `!!document.querySelector(`+jsString(sel)+`)`) {
			t.Errorf("service page lacks %s (%s)", what, sel)
		}
	}
	yaml := eval[string](t, b, `(document.querySelector('#config pre') || {}).textContent || ''`)
	for _, line := range []string{"kind: TrafficPolicy", "  service: orders", "    algorithm: least_request", "  timeout: 5s"} {
		if !strings.Contains(yaml, line+"\n") {
			t.Errorf("the applied policy's YAML lacks %q:\n%s", line, yaml)
		}
	}
	b.shot(t, "service")
	b.clean(t, "service")
}

func checkTopology(t *testing.T, b *browser) {
	b.show(t, "#/topology", `document.querySelectorAll('#graph g.edge').length >= 3`)
	type edge struct {
		Source, Destination string
		RPS, Success        float64
	}
	edges := eval[[]edge](t, b, `[...document.querySelectorAll('#graph g.edge')].map(g => ({Source: g.dataset.source, Destination: g.dataset.destination, RPS: +g.dataset.rps, Success: +g.dataset.success}))`)
	for _, w := range [][2]string{{"client", "frontend"}, {"frontend", "orders"}, {"orders", "inventory"}} {
		i := slices.IndexFunc(edges, func(e edge) bool { return e.Source == w[0] && e.Destination == w[1] })
		if i < 0 {
			t.Errorf("topology has no edge %s → %s: %+v", w[0], w[1], edges)
			continue
		}
		if e := edges[i]; e.RPS <= 0 || e.Success != 1 {
			t.Errorf("edge %s → %s: %v rps, success %v", w[0], w[1], e.RPS, e.Success)
		}
		if label := eval[string](t, b, `document.querySelector('#graph g.edge[data-source=`+jsString(w[0])+`][data-destination=`+jsString(w[1])+`] text').textContent`); !strings.Contains(label, "rps · 100%") {
			t.Errorf("edge %s → %s is labelled %q", w[0], w[1], label)
		}
	}
	// The fourth edge is the error trace's call to a service that does not
	// exist (http://nosuch/x above): the mesh counts it under "unknown".
	if i := slices.IndexFunc(edges, func(e edge) bool { return e.Source == "client" && e.Destination == "unknown" }); i < 0 || edges[i].Success != 0 {
		t.Errorf("topology has no failed edge client → unknown (the call to nosuch): %+v", edges)
	}
	if len(edges) != 4 {
		t.Errorf("topology has %d edges, want 4: %+v", len(edges), edges)
	}
	nodes := eval[[]string](t, b, `[...document.querySelectorAll('#graph a.node')].map(a => a.dataset.service + ' ' + a.getAttribute('href'))`)
	if want := []string{"client #/service/client", "frontend #/service/frontend", "inventory #/service/inventory", "orders #/service/orders", "unknown #/service/unknown"}; !slices.Equal(nodes, want) {
		t.Errorf("topology nodes %q, want %q", nodes, want)
	}
	b.shot(t, "topology")
	b.clean(t, "topology")
}

func checkTraces(t *testing.T, b *browser, traceID, parent, errID string) {
	row := `document.querySelector('tr[data-trace="` + traceID + `"]')`
	b.show(t, "#/traces?service=inventory&limit=1000", row)
	if n := eval[int](t, b, `document.querySelectorAll('#trace-list tr[data-trace]').length`); n < 10 {
		t.Errorf("traces of inventory: %d rows, want many", n)
	}
	b.view(t, "traces")
	// A minimum duration no request reaches hides every trace.
	b.do(t, "filtering by duration", chromedp.SetValue(chromedp.ID("f-min"), "600000"), chromedp.Click(chromedp.CSS(`form[role=search] button[type=submit]`)))
	until(t, b, "the filtered list", `!document.querySelector('#trace-list tr[data-trace]')`, 10*time.Second)
	if h := eval[string](t, b, `location.hash`); !strings.Contains(h, "min=600000") {
		t.Errorf("the filtered view's URL %q lacks the filter", h)
	}
	b.do(t, "clearing the filter", chromedp.SetValue(chromedp.ID("f-min"), ""), chromedp.Click(chromedp.CSS(`form[role=search] button[type=submit]`)))
	until(t, b, "the unfiltered list", row, 10*time.Second)
	// Errors only, of any service: the failed call, and nothing that succeeded.
	b.do(t, "asking for errors only", chromedp.Evaluate[chromedp.Void](`document.getElementById('f-service').value = ''`), chromedp.Click(chromedp.ID("f-errors")))
	until(t, b, "the failed trace", `document.querySelector('tr[data-trace="`+errID+`"]') && !document.querySelector('tr[data-trace="`+traceID+`"]')`, 10*time.Second)
	if st := eval[[]string](t, b, `[...document.querySelectorAll('#trace-list tr[data-trace] td:last-child')].map(td => td.textContent)`); slices.ContainsFunc(st, func(s string) bool { return s != "error" }) {
		t.Errorf("errors only lists traces with status %q", st)
	}
	b.view(t, "traces-errors")
	b.show(t, "#/traces?service=inventory&limit=1000", row)
	b.do(t, "opening the trace", chromedp.Click(chromedp.CSS(`tr[data-trace="`+traceID+`"] a`)))
	until(t, b, "the waterfall", `document.querySelectorAll('#waterfall > li').length >= 6`, eventually)
	type span struct {
		ID      string  `json:"id"`
		Parent  string  `json:"parent"`
		Kind    string  `json:"kind"`
		Service string  `json:"service"`
		Depth   int     `json:"depth"`
		Left    float64 `json:"left"`
	}
	spans := eval[[]span](t, b, `[...document.querySelectorAll('#waterfall > li')].map(li => ({id: li.dataset.spanId, parent: li.dataset.parent, kind: li.dataset.kind, service: li.dataset.service, depth: +li.dataset.depth, left: parseFloat(li.querySelector('.bar').style.left)}))`)
	// The request's hops, then the message orders published (a producer
	// span, child of orders' server span, drawn under it).
	want := [][2]string{{"client", "client"}, {"frontend", "server"}, {"frontend", "client"}, {"orders", "server"}, {"orders", "client"}, {"inventory", "server"}}
	var hops []span
	producers := 0
	for _, s := range spans {
		switch s.Kind {
		case "client", "server":
			hops = append(hops, s)
		case "producer":
			producers++
			if s.Service != "orders" || s.Depth != 4 || s.Parent != spans[3].ID {
				t.Errorf("the publish span: %+v, want orders' at depth 4 under %s", s, spans[3].ID)
			}
		}
	}
	if len(hops) != len(want) || producers != 1 {
		t.Fatalf("waterfall has %d client and server rows and %d producer rows, want %d and 1: %+v", len(hops), producers, len(want), spans)
	}
	for i := range hops {
		if spans[i] != hops[i] {
			t.Errorf("waterfall row %d is %+v, want the hop %+v: the calls must come first, in order", i, spans[i], hops[i])
		}
	}
	prev := parent
	for i, s := range hops {
		if s.Service != want[i][0] || s.Kind != want[i][1] || s.Depth != i || s.Parent != prev {
			t.Errorf("waterfall row %d: %s %s at depth %d, parent %s; want %s %s at depth %d, parent %s", i, s.Service, s.Kind, s.Depth, s.Parent, want[i][0], want[i][1], i, prev)
		}
		if i > 0 && s.Left < hops[i-1].Left {
			t.Errorf("waterfall row %d starts (%.2f%%) before its parent (%.2f%%)", i, s.Left, hops[i-1].Left)
		}
		prev = s.ID
	}
	b.shot(t, "trace")
	b.clean(t, "traces")
}

func checkTopics(t *testing.T, b *browser, c *harness.Control) {
	sub := `section[data-topic="dashtest"] tr[data-subscriber="ledger"] td[data-col="lag"]`
	b.show(t, "#/topics", `document.querySelector('`+sub+`') && document.querySelector('section[data-topic="order.created"]')`)
	if lag := eval[string](t, b, `document.querySelector('`+sub+`').textContent`); lag != "3" {
		t.Errorf("ledger's lag on dashtest: page says %q, want 3 (no instance has taken the 3 messages)", lag)
	}
	until(t, b, "a publish rate for order.created", `parseFloat(document.querySelector('section[data-topic="order.created"] [data-col=rate]').textContent) > 0`, 10*time.Second)
	b.do(t, "opening dashtest's dead letters", chromedp.Click(chromedp.CSS(`section[data-topic="dashtest"] button`)))
	until(t, b, "two dead letters", `document.querySelectorAll('#dlq tr[data-seq]').length === 2`, eventually)
	b.shot(t, "topics")
	b.do(t, "replaying", chromedp.Click(chromedp.ID("replay")))
	until(t, b, "the replay's result", `/Replayed 2; 0 left/.test(document.getElementById('replay-result').textContent)`, eventually)
	var topics struct {
		Topics []struct {
			Name        string `json:"name"`
			Messages    uint64 `json:"messages"`
			DeadLetters uint64 `json:"deadLetters"`
		} `json:"topics"`
	}
	getJSON(t, c.URL+"/api/v1/topics", &topics)
	for _, tp := range topics.Topics {
		if tp.Name == "dashtest" && (tp.DeadLetters != 0 || tp.Messages != 5) {
			t.Errorf("after the replay the API says dashtest has %d messages and %d dead letters, want 5 and 0", tp.Messages, tp.DeadLetters)
		}
	}
	b.clean(t, "topics")
}

func checkResources(t *testing.T, b *browser) {
	b.show(t, "#/resources", `document.querySelector('tr[data-kind="Subscription"][data-name="ledger-dashtest"]') && document.querySelector('tr[data-kind="TrafficPolicy"][data-name="orders"]')`)
	if got := eval[string](t, b, `document.querySelector('table.applies tbody tr').textContent`); !strings.Contains(got, "TrafficPolicy/orders created") || !strings.Contains(got, "Subscription/ledger-dashtest created") {
		t.Errorf("the latest apply reads %q", got)
	}
	b.do(t, "opening a manifest", chromedp.Click(chromedp.CSS(`tr[data-name="ledger-dashtest"] summary`)))
	if yaml := eval[string](t, b, `document.querySelector('tr[data-name="ledger-dashtest"] pre').textContent`); !strings.Contains(yaml, "  topic: dashtest\n") {
		t.Errorf("Subscription YAML:\n%s", yaml)
	}
	b.shot(t, "resources")
	b.clean(t, "resources")
}

// checkAuth opens the dashboard in a browser of its own that never
// logged in: the API's 401 makes the page ask for a token, send it, and
// keep it for the tab; a used login code is refused.
func checkAuth(t *testing.T, c *harness.Control, _ *browser) {
	b := newBrowser(t, 1280, 1000)
	b.w.allow = func(u string, status int64) bool { return status == 401 }
	b.do(t, "opening the dashboard", chromedp.Navigate(c.URL+"/#/services"))
	until(t, b, "the token dialog", `document.getElementById('token-dialog').open`, eventually)
	// Closed without a token: the page says why it is empty, and does not
	// ask again on every refresh.
	b.do(t, "dismissing the dialog", chromedp.KeyEvent(kb.Escape))
	until(t, b, "the refusal shown", `!document.getElementById('token-dialog').open && /401/.test(document.getElementById('alert').textContent)`, 10*time.Second)
	time.Sleep(6 * time.Second) // past the services page's next refresh
	if eval[bool](t, b, `document.getElementById('token-dialog').open`) {
		t.Error("the token dialog came back on a refresh after it was dismissed")
	}
	b.w.take()
	// The next page asks again.
	b.do(t, "going to topology", chromedp.Evaluate[chromedp.Void](`location.hash = '#/topology'`))
	until(t, b, "the token dialog again", `document.getElementById('token-dialog').open`, eventually)
	b.shot(t, "token")
	token := c.Token()
	if token == "" {
		t.Fatal("no DATA-DIR/token")
	}
	b.do(t, "entering the token", chromedp.SendKeys(chromedp.ID("token-input"), token), chromedp.Click(chromedp.ID("token-submit")))
	until(t, b, "the topology, with the token", `document.querySelector('#graph g.edge')`, eventually)
	b.do(t, "going to services", chromedp.Evaluate[chromedp.Void](`location.hash = '#/services'`))
	until(t, b, "the services, with the token", `document.querySelector('#services tbody tr[data-service="orders"]')`, eventually)
	if tok := eval[string](t, b, `sessionStorage.getItem('weft.token') || ''`); tok != token {
		t.Errorf("sessionStorage holds %q, want the token", tok)
	}
	if open := eval[bool](t, b, `document.getElementById('token-dialog').open`); open {
		t.Error("the token dialog is still open")
	}
	b.clean(t, "auth")

	// A login code is good once.
	out, err := exec.Command(bins.Weft, "dashboard", "--server", c.URL).Output()
	if err != nil {
		t.Fatalf("weft dashboard: %v", err)
	}
	login := strings.TrimSpace(string(out))
	for i, want := range []int{http.StatusOK, http.StatusUnauthorized} {
		jar := &cookieJar{}
		hc := &http.Client{Jar: jar, Timeout: 5 * time.Second}
		resp, err := hc.Get(login)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("login use %d: %d, want %d", i+1, resp.StatusCode, want)
		}
		if i == 0 {
			resp, err := hc.Get(c.URL + "/api/v1/services")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("the API with the login's cookie: %d", resp.StatusCode)
			}
		}
	}
}

// cookieJar keeps every cookie (net/http/cookiejar would do; this keeps
// the test's imports to what it reads).
type cookieJar struct {
	mu sync.Mutex
	cs []*http.Cookie
}

func (j *cookieJar) SetCookies(_ *url.URL, cs []*http.Cookie) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.cs = append(j.cs, cs...)
}

func (j *cookieJar) Cookies(*url.URL) []*http.Cookie {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cs
}

func get(ctx context.Context, hc *http.Client, u string, hdr http.Header) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func randomHex(n int) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hexd[rand.IntN(16)]
	}
	b[0] = '1'
	return string(b)
}

// TestDashboardCommand: `weft dashboard` prints the dashboard's URL (a
// one-time login, with the local token) once the control plane answers,
// says why when it does not, and with --open starts $BROWSER on the URL;
// with --api-auth=false the URL is the dashboard's own.
func TestDashboardCommand(t *testing.T) {
	c := harness.StartControl(t, bins.Weft, eventually, "--broker", "off")
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bins.Weft, append([]string{"dashboard"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(nil, "--server", c.URL)
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), c.URL+"/login?code=") {
		t.Errorf("weft dashboard: %q %v, want %s/login?code=…", out, err, c.URL)
	}
	// Followed, the login lands on the dashboard with a session cookie.
	hc := &http.Client{Jar: &cookieJar{}, Timeout: 5 * time.Second}
	if resp, err := hc.Get(strings.TrimSpace(out)); err != nil || resp.StatusCode != 200 || resp.Request.URL.Path != "/ui/" {
		t.Errorf("following the login: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	open := harness.StartControl(t, bins.Weft, eventually, "--broker", "off", "--api-auth=false")
	if out, err := run(nil, "--server", open.URL); err != nil || strings.TrimSpace(out) != open.URL+"/ui/" {
		t.Errorf("weft dashboard with --api-auth=false: %q %v, want %s/ui/", out, err, open.URL)
	}
	dead := "http://" + harness.FreeAddr(t)
	if out, err := run(nil, "--server", dead); err == nil || !strings.Contains(out, "unreachable") || !strings.Contains(out, "weft control") {
		t.Errorf("weft dashboard with no control plane: %q %v, want an error saying it is unreachable", out, err)
	}
	dir := t.TempDir()
	opened := filepath.Join(dir, "opened")
	script := filepath.Join(dir, "browser")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1\" > "+opened+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := run([]string{"BROWSER=" + script}, "--open", "--server", c.URL); err != nil {
		t.Fatalf("weft dashboard --open: %v %s", err, out)
	}
	var got []byte
	harness.Poll(5*time.Second, func() bool { got, _ = os.ReadFile(opened); return len(got) > 0 })
	if !strings.HasPrefix(strings.TrimSpace(string(got)), c.URL+"/login?code=") {
		t.Errorf("the browser was started on %q, want %s/login?code=…", got, c.URL)
	}
	if out, err := run([]string{"BROWSER=/nonexistent/browser"}, "--open", "--server", c.URL); err != nil || !strings.Contains(out, "not opened") {
		t.Errorf("weft dashboard --open with no browser: %q %v, want the URL and a note", out, err)
	}
}
