// Package telemetry_test checks the mesh's telemetry from the outside, with
// real processes on loopback: the weft binary (control plane, `weft run`
// units, pure-client sidecars), the demo apps as backends (frontend → orders
// → inventory, forwarding the trace headers), the e2e testapp for gRPC, and
// a real Prometheus server. No mocks.
//
// Run: go test -count=1 -v ./test/e2e/telemetry/
package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weftmesh/weft/test/e2e/harness"
)

const eventually = 20 * time.Second

// bins are weft and the e2e testapp, built once for the package's tests.
var bins harness.Binaries

func TestMain(m *testing.M) { os.Exit(harness.Main(m, "./test/e2e/testapp", &bins)) }

// ---------------------------------------------------------------- mesh

// startControl starts a control plane without messaging, which these tests
// do not need, scraping the sidecars every second.
func startControl(t testing.TB, extra ...string) *harness.Control {
	t.Helper()
	flags := append([]string{"--scrape-interval", "1s", "--broker", "off"}, extra...)
	return harness.StartControl(t, bins.Weft, eventually, flags...)
}

type unit struct {
	service       string
	admin, out    string
	p             *harness.Proc
	adminURL      string
	outboundProxy *url.URL
}

// startUnit runs `weft run` for service with app as the app (nil: a pure
// client sidecar, `weft sidecar` without --app-port), and waits until it
// is ready (and registered, for an instance).
func startUnit(t testing.TB, c *harness.Control, service string, flags []string, app ...string) *unit {
	t.Helper()
	u := &unit{service: service, admin: harness.FreeAddr(t), out: harness.FreeAddr(t)}
	u.adminURL = "http://" + u.admin
	u.outboundProxy, _ = url.Parse("http://" + u.out)
	args := []string{"--control", c.GRPCAddr, "--service", service, "--admin", u.admin, "--outbound", u.out}
	args = append(args, flags...)
	name := service
	if len(app) == 0 {
		u.p = harness.Start(t, name+"-sidecar", bins.Weft, append([]string{"sidecar"}, args...)...)
	} else {
		args = append([]string{"run", "--inbound", "127.0.0.1:0"}, args...)
		u.p = harness.Start(t, name, bins.Weft, append(append(args, "--"), app...)...)
	}
	harness.WaitUp(t, u.p, u.adminURL+"/ready", eventually)
	return u
}

// demoUnit runs one demo app role under weft run.
func demoUnit(t testing.TB, c *harness.Control, role string, flags ...string) *unit {
	return startUnit(t, c, role, flags, bins.Weft, "demo-app", "--role", role)
}

func (u *unit) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u.outboundProxy), MaxIdleConnsPerHost: 64}}
}

func getJSON(t testing.TB, u string, out any) int {
	t.Helper()
	code, body, err := harness.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	if code == 200 {
		if err := json.Unmarshal([]byte(body), out); err != nil {
			t.Fatalf("GET %s: %v in %q", u, err, body)
		}
	}
	return code
}

// call sends one GET through u's outbound to http://host/path.
func call(hc *http.Client, host, path string, hdr http.Header) (int, error) {
	req, _ := http.NewRequest("GET", "http://"+host+path, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// ---------------------------------------------------------------- metrics

// scrape reads a sidecar's /metrics in the text format.
func scrape(t testing.TB, adminURL string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body, err := harness.Get(adminURL + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET %s/metrics: %d %v", adminURL, code, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatalf("%s/metrics is not the Prometheus text format: %v", adminURL, err)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

// edgeCount sums weft_requests_total for (reporter, src, dst) over codes.
func edgeCount(mfs map[string]*dto.MetricFamily, rep, src, dst string) float64 {
	n := 0.0
	for _, m := range mfs["weft_requests_total"].GetMetric() {
		l := labelsOf(m)
		if l["reporter"] == rep && l["source_service"] == src && l["destination_service"] == dst {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// edgeHist sums the duration histogram for (reporter, src, dst): count,
// sum and cumulative bucket counts by upper bound.
func edgeHist(mfs map[string]*dto.MetricFamily, rep, src, dst string) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = map[float64]uint64{}
	for _, m := range mfs["weft_request_duration_seconds"].GetMetric() {
		l := labelsOf(m)
		if l["reporter"] != rep || l["source_service"] != src || l["destination_service"] != dst {
			continue
		}
		h := m.GetHistogram()
		count += h.GetSampleCount()
		sum += h.GetSampleSum()
		for _, b := range h.GetBucket() {
			buckets[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	return count, sum, buckets
}

func seriesCount(mfs map[string]*dto.MetricFamily, name string) int {
	return len(mfs[name].GetMetric())
}

// ---------------------------------------------------------------- traces

type span struct {
	SpanID       string         `json:"spanId"`
	ParentSpanID string         `json:"parentSpanId"`
	Service      string         `json:"service"`
	Name         string         `json:"name"`
	Kind         string         `json:"kind"`
	Start        time.Time      `json:"start"`
	DurationMs   float64        `json:"durationMs"`
	Attributes   map[string]any `json:"attributes"`
}

type traceJSON struct {
	TraceID string `json:"traceId"`
	Spans   []span `json:"spans"`
}

type traceList struct {
	Traces []struct {
		TraceID string `json:"traceId"`
		Spans   int    `json:"spans"`
	} `json:"traces"`
}

func randomHex(n int) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hexd[rand.IntN(16)]
	}
	if strings.Trim(string(b), "0") == "" {
		b[0] = '1'
	}
	return string(b)
}

// ---------------------------------------------------------------- cli

func runCLI(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bins.Weft, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("weft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
