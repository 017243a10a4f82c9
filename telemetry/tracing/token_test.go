package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// The exporter sends Config.Token's answer as a bearer token, asked at
// each export: a new token (a new certificate) is sent from then on, and
// "" sends none.
func TestExportToken(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	defer srv.Close()
	var tok atomic.Value
	tok.Store("t1")
	tr, err := New(Config{Service: "orders", Endpoint: srv.URL + "/v1/traces", Sampling: 1, Token: func() string { return tok.Load().(string) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer tr.Shutdown(ctx)
	for _, next := range []string{"t2", "", ""} {
		_, span := tr.Start(ctx, "GET /", trace.SpanKindServer, time.Now())
		span.End()
		if err := tr.ForceFlush(ctx); err != nil {
			t.Fatal(err)
		}
		tok.Store(next)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"Bearer t1", "Bearer t2", ""}
	if len(got) != len(want) {
		t.Fatalf("exports carried %q; want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("exports carried %q; want %q", got, want)
		}
	}
}
