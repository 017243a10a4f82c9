package tracestore

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

func tid(i int) [16]byte {
	var id [16]byte
	copy(id[:], fmt.Sprintf("%016d", i+1))
	return id
}

func span(id string, parent string, svc string, start time.Time) Span {
	return Span{SpanID: id, ParentSpanID: parent, Service: svc, Name: "GET " + svc, Kind: "server", Start: start, DurationMs: 1, Attributes: map[string]any{}}
}

func TestStoreBounds(t *testing.T) {
	tests := []struct {
		name                  string
		opts                  Options
		traces, spansPerTrace int
		wantTraces, wantSpans int
	}{
		{"max traces", Options{MaxTraces: 10}, 100, 2, 10, 20},
		{"max spans", Options{MaxTraces: 1000, MaxSpans: 50}, 100, 2, 25, 50},
		{"per trace", Options{MaxSpansPerTrace: 3}, 2, 10, 2, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(tt.opts)
			now := time.Now()
			for i := range tt.traces {
				for j := range tt.spansPerTrace {
					s.Add(tid(i), span(fmt.Sprintf("%016x", j+1), "", "a", now))
				}
			}
			if tr, sp := s.Len(); tr != tt.wantTraces || sp != tt.wantSpans {
				t.Fatalf("holds %d traces %d spans, want %d and %d", tr, sp, tt.wantTraces, tt.wantSpans)
			}
			// The newest survive.
			if _, ok := s.Get(hex.EncodeToString(func() []byte { id := tid(tt.traces - 1); return id[:] }())); !ok {
				t.Fatal("newest trace evicted")
			}
		})
	}
}

func TestListAndGet(t *testing.T) {
	s := New(Options{})
	t0 := time.Now()
	s.Add(tid(1), span("0000000000000002", "0000000000000001", "orders", t0.Add(time.Millisecond)))
	s.Add(tid(1), span("0000000000000001", "", "frontend", t0))
	s.Add(tid(1), span("0000000000000001", "", "frontend", t0)) // duplicate
	s.Add(tid(2), span("0000000000000003", "", "inventory", t0.Add(time.Second)))
	all := s.List("", 10)
	if len(all.Traces) != 2 || all.Traces[0].RootService != "inventory" {
		t.Fatalf("list %+v, want newest (inventory) first", all.Traces)
	}
	orders := s.List("orders", 10)
	if len(orders.Traces) != 1 || orders.Traces[0].RootService != "frontend" || orders.Traces[0].Spans != 2 {
		t.Fatalf("list for orders %+v", orders.Traces)
	}
	if got := s.List("", 1); len(got.Traces) != 1 {
		t.Fatalf("limit 1 gave %d", len(got.Traces))
	}
	tr, ok := s.Get(orders.Traces[0].TraceID)
	if !ok || len(tr.Spans) != 2 || tr.Spans[0].Service != "frontend" {
		t.Fatalf("get %+v", tr)
	}
	for _, bad := range []string{"", "xyz", "00000000000000000000000000000000", orders.Traces[0].TraceID + "0"} {
		if _, ok := s.Get(bad); ok {
			t.Errorf("Get(%q) found something", bad)
		}
	}
}

func request(n int) *collectorpb.ExportTraceServiceRequest {
	var spans []*tracepb.Span
	for i := range n {
		spans = append(spans, &tracepb.Span{
			TraceId: []byte("0123456789abcdef"), SpanId: []byte(fmt.Sprintf("%08d", i+1)), ParentSpanId: nil,
			Name: "GET orders", Kind: tracepb.Span_SPAN_KIND_CLIENT, StartTimeUnixNano: 1e18, EndTimeUnixNano: 1e18 + 2e6,
			Attributes: []*commonpb.KeyValue{{Key: "http.response.status_code", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 200}}}},
			Status:     &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR},
		})
	}
	spans = append(spans, &tracepb.Span{TraceId: []byte("short"), SpanId: []byte("12345678")}) // skipped
	return &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "frontend"}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}}
}

func TestReceiverHTTP(t *testing.T) {
	body, _ := proto.Marshal(request(3))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(body)
	zw.Close()
	tests := []struct {
		name      string
		method    string
		ctype     string
		encoding  string
		body      []byte
		wantCode  int
		wantSpans int
	}{
		{"protobuf", "POST", "application/x-protobuf", "", body, 200, 3},
		{"gzip", "POST", "application/x-protobuf", "gzip", gz.Bytes(), 200, 3},
		{"json refused", "POST", "application/json", "", []byte("{}"), 415, 0},
		{"garbage", "POST", "application/x-protobuf", "", []byte("\xff\xff\xff"), 400, 0},
		{"bad gzip", "POST", "application/x-protobuf", "gzip", []byte("nope"), 400, 0},
		{"get", "GET", "", "", nil, 405, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{})
			srv := httptest.NewServer(NewReceiver(s, nil))
			defer srv.Close()
			req, _ := http.NewRequest(tt.method, srv.URL+"/v1/traces", bytes.NewReader(tt.body))
			req.Header.Set("Content-Type", tt.ctype)
			if tt.encoding != "" {
				req.Header.Set("Content-Encoding", tt.encoding)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if _, n := s.Len(); n != tt.wantSpans {
				t.Fatalf("%d spans stored, want %d", n, tt.wantSpans)
			}
			if tt.wantSpans > 0 {
				tr, _ := s.Get(hex.EncodeToString([]byte("0123456789abcdef")))
				sp := tr.Spans[0]
				if sp.Service != "frontend" || sp.Kind != "client" || sp.DurationMs != 2 || sp.Status != "error" || sp.Attributes["http.response.status_code"] != int64(200) {
					t.Fatalf("span %+v", sp)
				}
			}
		})
	}
}

func TestReceiverBodyLimit(t *testing.T) {
	s := New(Options{})
	srv := httptest.NewServer(NewReceiver(s, nil))
	defer srv.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(make([]byte, MaxRequestBytes+10)) // a zip bomb, in small
	zw.Close()
	req, _ := http.NewRequest("POST", srv.URL, &gz)
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
}

// FuzzReceiver: any body is answered without panicking, and the store
// stays within its bounds.
func FuzzReceiver(f *testing.F) {
	body, _ := proto.Marshal(request(2))
	f.Add(body)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00})
	s := New(Options{MaxTraces: 10, MaxSpans: 100, MaxSpansPerTrace: 20})
	rc := NewReceiver(s, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		req := httptest.NewRequest("POST", "/v1/traces", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/x-protobuf")
		w := httptest.NewRecorder()
		rc.ServeHTTP(w, req)
		if w.Code != 200 && w.Code != 400 {
			t.Fatalf("status %d", w.Code)
		}
		if tr, sp := s.Len(); tr > 10 || sp > 100 {
			t.Fatalf("store holds %d traces %d spans", tr, sp)
		}
		for _, sum := range s.List("", 10).Traces {
			if _, ok := s.Get(sum.TraceID); !ok {
				t.Fatalf("listed trace %s not found", sum.TraceID)
			}
		}
	})
}
