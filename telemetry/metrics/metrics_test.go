package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// gather returns request counts by label set "rep,src,dst,code,grpc".
func gather(t *testing.T, r *Recorder) map[string]float64 {
	t.Helper()
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != RequestsTotal {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[labelKey(m)] = m.GetCounter().GetValue()
		}
	}
	return out
}

func labelKey(m *dto.Metric) string {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return strings.Join([]string{l[LabelReporter], l[LabelSource], l[LabelDestination], l[LabelCode], l[LabelGRPCStatus]}, ",")
}

func TestRequestLabels(t *testing.T) {
	tests := []struct {
		name      string
		rep       Reporter
		src, dst  string
		code      int
		grpc      string
		wantLabel string
	}{
		{"plain", Client, "frontend", "orders", 200, "", "client,frontend,orders,200,"},
		{"server", Server, "frontend", "orders", 503, "", "server,frontend,orders,503,"},
		{"grpc ok", Client, "a", "b", 200, "0", "client,a,b,200,0"},
		{"grpc code", Client, "a", "b", 200, "14", "client,a,b,200,14"},
		{"grpc junk", Client, "a", "b", 200, "boom", "client,a,b,200,other"},
		{"grpc out of range", Client, "a", "b", 200, "17", "client,a,b,200,other"},
		{"unknown status", Client, "a", "b", 299, "", "client,a,b,other,"},
		{"huge status", Client, "a", "b", 123456, "", "client,a,b,other,"},
		{"negative status", Client, "a", "b", -1, "", "client,a,b,other,"},
		{"client gone", Client, "a", "b", 499, "", "client,a,b,499,"},
		{"no response", Server, "a", "b", 0, "", "server,a,b,0,"},
		{"bad source name", Server, "Evil Name!", "b", 200, "", "server,unknown,b,200,"},
		{"long source name", Server, strings.Repeat("a", 64), "b", 200, "", "server,unknown,b,200,"},
		{"unknown", Client, "a", Unknown, 503, "", "client,a,unknown,503,"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(Options{})
			r.Request(tt.rep, tt.src, tt.dst, tt.code, tt.grpc, time.Millisecond, 10*time.Microsecond)
			r.Request(tt.rep, tt.src, tt.dst, tt.code, tt.grpc, time.Millisecond, 10*time.Microsecond)
			got := gather(t, r)
			if len(got) != 1 || got[tt.wantLabel] != 2 {
				t.Fatalf("series = %v, want {%s: 2}", got, tt.wantLabel)
			}
		})
	}
}

func TestSeriesBounded(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		n          int
		src        func(i int) string
		dst        func(i int) string
		code       func(i int) int
		maxSeries  int
		wantOthers bool
	}{
		{"random sources", Options{MaxSeries: 50, MaxNames: 1000}, 10000,
			func(i int) string { return fmt.Sprintf("svc-%d", i) }, func(int) string { return "orders" },
			func(int) int { return 200 }, 50 + 12, true},
		{"names cap", Options{MaxSeries: 1000, MaxNames: 10}, 10000,
			func(i int) string { return fmt.Sprintf("svc-%d", i) }, func(int) string { return "orders" },
			func(int) int { return 200 }, 10 + 12, true},
		{"random codes", Options{}, 10000,
			func(int) string { return "a" }, func(int) string { return "b" },
			func(i int) int { return i }, 70, false},
		{"garbage names", Options{}, 10000,
			func(i int) string { return fmt.Sprintf("Bad_%d", i) }, func(int) string { return "b" },
			func(int) int { return 200 }, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.opts)
			for i := range tt.n {
				r.Request(Server, tt.src(i), tt.dst(i), tt.code(i), "", time.Millisecond, 0)
			}
			got := gather(t, r)
			total := 0.0
			others := false
			for k, v := range got {
				total += v
				others = others || strings.Contains(k, ","+Other+","+Other+",")
			}
			if len(got) > tt.maxSeries {
				t.Errorf("%d series, want at most %d", len(got), tt.maxSeries)
			}
			if int(total) != tt.n {
				t.Errorf("requests counted %v, want %d (none lost to the cap)", total, tt.n)
			}
			if others != tt.wantOthers {
				t.Errorf("overflow series present = %v, want %v", others, tt.wantOthers)
			}
			if cached := len(*r.series.Load()); cached > tt.maxSeries {
				t.Errorf("cache holds %d keys, want at most %d", cached, tt.maxSeries)
			}
		})
	}
}

func TestHistogramAgreesWithCounter(t *testing.T) {
	r := New(Options{})
	for i := range 1000 {
		r.Request(Client, "a", "b", 200, "", time.Duration(i)*time.Millisecond, time.Duration(i)*time.Microsecond)
	}
	mfs, _ := r.Registry().Gather()
	var count uint64
	var overhead uint64
	for _, mf := range mfs {
		switch mf.GetName() {
		case RequestDuration:
			count = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		case ProxyOverhead:
			for _, m := range mf.GetMetric() {
				overhead += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if count != 1000 || overhead != 1000 {
		t.Fatalf("histogram count %d, overhead count %d, want 1000 each", count, overhead)
	}
}

func TestHandlerServesText(t *testing.T) {
	r := New(Options{})
	r.Request(Client, "frontend", "orders", 200, "", 2*time.Millisecond, 0)
	sent, recv := r.TCPConn(Client, "frontend", "db")
	sent.Add(10)
	recv.Add(20)
	w := httptest.NewRecorder()
	r.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(w.Body)
	for _, want := range []string{
		`weft_requests_total{destination_service="orders",grpc_status="",reporter="client",response_code="200",source_service="frontend"} 1`,
		`weft_request_duration_seconds_bucket{destination_service="orders",grpc_status="",reporter="client",response_code="200",source_service="frontend",le="0.0025"} 1`,
		`weft_proxy_overhead_seconds_count{reporter="client"} 1`,
		`weft_tcp_connections_total{destination_service="db",reporter="client",source_service="frontend"} 1`,
		`weft_tcp_bytes_total{destination_service="db",direction="received",reporter="client",source_service="frontend"} 20`,
		`process_start_time_seconds`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the text format", ct)
	}
}

func FuzzGRPCCode(f *testing.F) {
	for _, s := range []string{"", "0", "9", "10", "16", "17", "99", "-1", "abc", "1\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g := grpcCode(s)
		if g < -1 || g > grpcOther {
			t.Fatalf("grpcCode(%q) = %d", s, g)
		}
		if l := grpcLabel(g); s != "" && l != Other && l != s {
			t.Fatalf("grpcCode(%q) labels as %q", s, l)
		}
	})
}

// BenchmarkRecord is the per-request cost once the series exists: the
// path every proxied request takes.
func BenchmarkRecord(b *testing.B) {
	r := New(Options{})
	dsts := []string{"orders", "inventory", "payments", "users"}
	codes := []int{200, 200, 200, 404, 503}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Request(Client, "frontend", dsts[i&3], codes[i%5], "", 1500*time.Microsecond, 40*time.Microsecond)
			i++
		}
	})
}

// TestEjectedInstances: one series per ejected instance, replaced as a
// whole per destination, gone on re-admission, and bounded.
func TestEjectedInstances(t *testing.T) {
	r := New(Options{})
	series := func() map[string]float64 {
		out := map[string]float64{}
		mfs, err := r.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != OutlierEjectedInstance {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				out[l[LabelDestination]+"/"+l[LabelInstance]+"/"+l[LabelReason]] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	r.SetEjectedInstances("orders", []EjectedInstance{{"orders-1", "consecutive_5xx"}, {"orders-2", "success_rate"}})
	r.SetEjectedInstances("users", []EjectedInstance{{"users-1", "consecutive_gateway_errors"}})
	if got := series(); len(got) != 3 || got["orders/orders-1/consecutive_5xx"] != 1 || got["users/users-1/consecutive_gateway_errors"] != 1 {
		t.Fatalf("series %v", got)
	}
	r.SetEjectedInstances("orders", []EjectedInstance{{"orders-2", "success_rate"}})
	if got := series(); len(got) != 2 || got["orders/orders-2/success_rate"] != 1 {
		t.Fatalf("after orders-1 re-admitted: %v", got)
	}
	r.SetEjectedInstances("orders", nil)
	r.SetEjectedInstances("users", nil)
	if got := series(); len(got) != 0 {
		t.Fatalf("after all re-admitted: %v", got)
	}
	many := make([]EjectedInstance, MaxEjectedSeries+50)
	for i := range many {
		many[i] = EjectedInstance{fmt.Sprintf("i-%d", i), "consecutive_5xx"}
	}
	r.SetEjectedInstances("big", many)
	r.SetEjectedInstances("other", many[:1])
	if got := series(); len(got) != MaxEjectedSeries {
		t.Fatalf("%d series, want at most %d", len(got), MaxEjectedSeries)
	}
	r.SetEjectedInstances("big", nil)
	r.SetEjectedInstances("other", many[:1])
	if got := series(); len(got) != 1 {
		t.Fatalf("after big's went: %d series, want 1", len(got))
	}
}
