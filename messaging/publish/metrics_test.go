package publish_test

import (
	"context"
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/broker"
	"github.com/weftmesh/weft/messaging/publish"
)

// After a batch of 30 and a single publish, /metrics gives the batch
// sizes in use (messages per publish request) and no acks left pending.
func TestPublishBatchSizeMetrics(t *testing.T) {
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), MaxPayload: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	conn := messaging.NewConn(messaging.ConnConfig{Access: func() messaging.Access { return messaging.Access{URLs: b.URL()} }, Poll: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = conn.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	reg := prometheus.NewRegistry()
	metrics, err := messaging.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	p := publish.New(publish.Config{Conn: conn, Source: "test", Timeout: 2 * time.Second, Metrics: metrics})

	var lines []publish.BatchLine
	for range 30 {
		lines = append(lines, publish.BatchLine{Text: text("x"), Key: "k"})
	}
	if code, res, _ := postBatch(t, p, "sized", batchBody(lines...)); code != 200 {
		t.Fatalf("batch: %d %+v", code, res)
	}
	if a := do(p, "POST", publish.PathPrefix+"sized", strings.NewReader("one"), nil); a.code != 200 {
		t.Fatalf("single: %d %s", a.code, a.raw)
	}

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`weft_messages_publish_batch_size_bucket{topic="sized",le="1"} 1`,
		`weft_messages_publish_batch_size_bucket{topic="sized",le="20"} 1`,
		`weft_messages_publish_batch_size_bucket{topic="sized",le="50"} 2`,
		`weft_messages_publish_batch_size_sum{topic="sized"} 31`,
		`weft_messages_publish_batch_size_count{topic="sized"} 2`,
		`weft_messages_published_total{topic="sized"} 31`,
		`weft_messages_publish_acks_pending 0`,
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).Match(body) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grep(string(body), "weft_messages_publish"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
