package publish_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/broker"
	"github.com/weftmesh/weft/messaging/publish"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPublisher(t testing.TB, url func() string, max int) *publish.Publisher {
	t.Helper()
	conn := messaging.NewConn(messaging.ConnConfig{Access: func() messaging.Access { return messaging.Access{URLs: url()} }, Poll: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = conn.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	metrics, err := messaging.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return publish.New(publish.Config{Conn: conn, Source: "test", Timeout: 2 * time.Second, Metrics: metrics,
		MaxMessageBytes: func() int { return max }})
}

type answer struct {
	code int
	body map[string]any
	raw  string
}

func do(p http.Handler, method, path string, body io.Reader, h http.Header) answer {
	req := httptest.NewRequest(method, path, body)
	for k, v := range h {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	p.ServeHTTP(w, req)
	a := answer{code: w.Code, raw: w.Body.String()}
	_ = json.Unmarshal(w.Body.Bytes(), &a.body)
	return a
}

func TestPublish(t *testing.T) {
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), MaxPayload: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	p := newPublisher(t, b.URL, 1024)
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	manyHeaders := http.Header{}
	for i := range messaging.MaxAppHeaders + 1 {
		manyHeaders.Set("X-Msg-H"+strconv.Itoa(i), "v")
	}
	tests := []struct {
		name   string
		method string
		path   string
		body   io.Reader
		h      http.Header
		code   int
		errc   string
	}{
		{"ok", "POST", "/v1/publish/orders.created", strings.NewReader("{}"), hdr("Content-Type", "application/json", "X-Weft-Key", "u1", "X-Msg-Tenant", "acme"), 200, ""},
		{"exactly the limit", "POST", "/v1/publish/t", strings.NewReader(strings.Repeat("x", 1024)), nil, 200, ""},
		{"over the limit", "POST", "/v1/publish/t", strings.NewReader(strings.Repeat("x", 1025)), nil, 413, publish.CodeTooLarge},
		{"over the limit, length unknown", "POST", "/v1/publish/t", io.MultiReader(strings.NewReader(strings.Repeat("x", 1025))), nil, 413, publish.CodeTooLarge},
		{"empty topic", "POST", "/v1/publish/", strings.NewReader("x"), nil, 400, publish.CodeInvalidTopic},
		{"wildcard topic", "POST", "/v1/publish/a.>", strings.NewReader("x"), nil, 400, publish.CodeInvalidTopic},
		{"slash in topic", "POST", "/v1/publish/a/b", strings.NewReader("x"), nil, 400, publish.CodeInvalidTopic},
		{"GET", "GET", "/v1/publish/t", nil, nil, 405, publish.CodeMethod},
		{"unknown path", "POST", "/v1/other", strings.NewReader("x"), nil, 404, publish.CodeNotFound},
		{"key too long", "POST", "/v1/publish/t", strings.NewReader("x"), hdr("X-Weft-Key", strings.Repeat("k", 257)), 400, publish.CodeBadRequest},
		{"id with space", "POST", "/v1/publish/t", strings.NewReader("x"), hdr("X-Weft-Message-Id", "a b"), 400, publish.CodeBadRequest},
		{"too many headers", "POST", "/v1/publish/t", strings.NewReader("x"), manyHeaders, 400, publish.CodeBadRequest},
		{"control character in a header", "POST", "/v1/publish/t", strings.NewReader("x"), hdr("X-Msg-A", "a\x01b"), 400, publish.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(p, tt.method, tt.path, tt.body, tt.h)
			if a.code != tt.code || (tt.errc != "" && a.body["error"] != tt.errc) {
				t.Fatalf("%d %s, want %d %s", a.code, a.raw, tt.code, tt.errc)
			}
			if tt.code == 200 && (a.body["id"] == "" || a.body["sequence"] == nil) {
				t.Fatalf("answer %s", a.raw)
			}
		})
	}
	// A repeated id is stored once.
	h := hdr("X-Weft-Message-Id", "order-42")
	first := do(p, "POST", "/v1/publish/t", strings.NewReader("a"), h)
	again := do(p, "POST", "/v1/publish/t", strings.NewReader("a"), h)
	if first.code != 200 || again.code != 200 || again.body["duplicate"] != true || again.body["sequence"] != first.body["sequence"] {
		t.Fatalf("repeated id: %s then %s", first.raw, again.raw)
	}
}

func TestPublishNoBroker(t *testing.T) {
	p := newPublisher(t, func() string { return "" }, 1024)
	a := do(p, "POST", "/v1/publish/t", strings.NewReader("x"), nil)
	if a.code != 503 || a.body["error"] != publish.CodeBrokerUnavailable || !strings.Contains(a.raw, "no broker configured") {
		t.Fatalf("%d %s", a.code, a.raw)
	}
}
