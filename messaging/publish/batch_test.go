package publish_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/broker"
	"github.com/weftmesh/weft/messaging/publish"
)

func batchBody(lines ...publish.BatchLine) string {
	var b strings.Builder
	for _, l := range lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func text(s string) *string { return &s }

func postBatch(t *testing.T, p http.Handler, topic, body string) (int, publish.BatchResult, http.Header) {
	t.Helper()
	req := httptest.NewRequest("POST", publish.BatchPrefix+topic, strings.NewReader(body))
	w := httptest.NewRecorder()
	p.ServeHTTP(w, req)
	var res publish.BatchResult
	_ = json.Unmarshal(w.Body.Bytes(), &res)
	return w.Code, res, w.Header()
}

// stored reads back every message of topic's subjects, in stream order.
func stored(t *testing.T, url, subject string) []*nats.Msg {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, messaging.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []*nats.Msg
	for {
		b, err := c.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			out = append(out, &nats.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()})
		}
		if n == 0 {
			return out
		}
	}
}

// A batch is stored in line order, every line acknowledged with its own
// sequence; messages of one key keep their order in their partition.
func TestPublishBatchOrder(t *testing.T) {
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), MaxPayload: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	p := newPublisher(t, b.URL, 1024)
	var lines []publish.BatchLine
	for i := range 300 {
		l := publish.BatchLine{Text: text(fmt.Sprint(i)), Key: fmt.Sprintf("k%d", i%7), Headers: map[string]string{"x-msg-n": fmt.Sprint(i)}}
		if i%5 == 0 {
			l = publish.BatchLine{Data: []byte{byte(i), 0, 0xff}, ID: fmt.Sprintf("id-%d", i)}
		}
		lines = append(lines, l)
	}
	code, res, _ := postBatch(t, p, "orders", batchBody(lines...))
	if code != 200 || res.Error != "" || len(res.Results) != len(lines) {
		t.Fatalf("%d %+v", code, res)
	}
	for i, r := range res.Results {
		if r.Error != "" || r.ID == "" || (i > 0 && r.Sequence <= res.Results[i-1].Sequence) {
			t.Fatalf("result %d: %+v after %+v", i, r, res.Results[max(i-1, 0)])
		}
		if i%5 == 0 && r.ID != fmt.Sprintf("id-%d", i) {
			t.Fatalf("result %d has id %s", i, r.ID)
		}
	}
	msgs := stored(t, b.URL(), "weft.t.orders.>")
	last := map[string]int{}
	keyed := 0
	for _, m := range msgs {
		k := m.Header.Get(messaging.HdrKey)
		var n int
		fmt.Sscan(string(m.Data), &n)
		if m.Header.Get("X-Msg-N") != string(m.Data) {
			t.Fatalf("message %q carries X-Msg-N %q", m.Data, m.Header.Get("X-Msg-N"))
		}
		if prev, ok := last[k]; ok && n <= prev {
			t.Fatalf("key %s: %d stored after %d", k, n, prev)
		}
		last[k] = n
		keyed++
	}
	if keyed != 240 {
		t.Fatalf("%d keyed messages stored, want 240", keyed)
	}
	// Sending the batch again stores nothing new for the lines with ids.
	code, res, _ = postBatch(t, p, "orders", batchBody(lines[0], lines[5]))
	if code != 200 || !res.Results[0].Duplicate || !res.Results[1].Duplicate {
		t.Fatalf("repeated ids: %d %+v", code, res)
	}
}

func TestPublishBatchRefused(t *testing.T) {
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), MaxPayload: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	p := newPublisher(t, b.URL, 16)
	ok := batchBody(publish.BatchLine{Text: text("fine")})
	many := strings.Repeat(`{"text":"x"}`+"\n", publish.MaxBatchMessages+1)
	tests := []struct {
		name, topic, body string
		code              int
		errc              string
	}{
		{"empty", "t", "\n\n", 400, publish.CodeBadRequest},
		{"not JSON", "t", ok + "hello\n", 400, publish.CodeBadRequest},
		{"unknown field", "t", `{"text":"a","payload":"b"}`, 400, publish.CodeBadRequest},
		{"data and text", "t", `{"text":"a","data":"YQ=="}`, 400, publish.CodeBadRequest},
		{"bad base64", "t", `{"data":"!!"}`, 400, publish.CodeBadRequest},
		{"two values on a line", "t", `{"text":"a"} {"text":"b"}`, 400, publish.CodeBadRequest},
		{"not an X-Msg header", "t", `{"text":"a","headers":{"Authorization":"x"}}`, 400, publish.CodeBadRequest},
		{"header name with a space", "t", `{"text":"a","headers":{"X-Msg-a b":"x"}}`, 400, publish.CodeBadRequest},
		{"key with a control character", "t", `{"text":"a","key":"a\u0001"}`, 400, publish.CodeBadRequest},
		{"too large", "t", ok + `{"text":"` + strings.Repeat("x", 17) + `"}`, 413, publish.CodeTooLarge},
		{"too many", "t", many, 400, publish.CodeBadRequest},
		{"bad topic", "a.>", ok, 400, publish.CodeInvalidTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, h := postBatch(t, p, tt.topic, tt.body)
			if code != tt.code || h.Get("X-Weft-Error") != tt.errc {
				t.Fatalf("%d %s, want %d %s", code, h.Get("X-Weft-Error"), tt.code, tt.errc)
			}
		})
	}
	// Nothing of a refused batch was stored.
	if msgs := stored(t, b.URL(), "weft.t.>"); len(msgs) != 0 {
		t.Fatalf("%d messages stored from refused batches", len(msgs))
	}
}

// The broker stops in the middle of batches: every message the answers
// report stored (a sequence, no error) is in the stream after the broker
// restarts, and no batch answered 200 unless all its messages were acked.
func TestPublishBatchBrokerStops(t *testing.T) {
	dir := t.TempDir()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", StoreDir: dir, MaxPayload: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	url := b.URL()
	p := newPublisher(t, func() string { return url }, 1024)
	lines := make([]publish.BatchLine, 500)
	for i := range lines {
		lines[i] = publish.BatchLine{Text: text(strings.Repeat("m", 200)), Key: fmt.Sprintf("k%d", i%10)}
	}
	body := batchBody(lines...)
	type answer struct {
		code int
		res  publish.BatchResult
	}
	answers := make(chan answer, 1000)
	done := make(chan struct{})
	// Batches go on until one fails: the broker is stopped while they
	// flow, so one that was under way or the next one after it must fail
	// (a loop that also stopped at b.Close could end on a batch that was
	// stored just before, and see no failure at all).
	go func() {
		defer close(done)
		for i := 0; i < cap(answers); i++ {
			code, res, _ := postBatch(t, p, "cut", body)
			answers <- answer{code, res}
			if code != 200 {
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	b.Close()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("batches still answered 200 a minute after the broker stopped")
	}
	close(answers)
	acked := map[string]uint64{}
	failedBatches := 0
	for a := range answers {
		if a.code != 200 {
			failedBatches++
		}
		for _, r := range a.res.Results {
			if r.Error == "" {
				if a.code == 200 || r.Sequence > 0 {
					acked[r.ID] = r.Sequence
				}
			} else if a.code == 200 {
				t.Fatalf("batch answered 200 with a failed message: %+v", r)
			}
		}
	}
	if failedBatches == 0 {
		t.Fatal("no batch failed: the broker stopped after the publishing")
	}
	b2, err := broker.New(broker.Config{Addr: strings.TrimPrefix(url, "nats://"), StoreDir: dir, MaxPayload: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b2.Close)
	have := map[string]bool{}
	for _, m := range stored(t, b2.URL(), "weft.t.cut.>") {
		have[m.Header.Get(messaging.HdrID)] = true
	}
	for id := range acked {
		if !have[id] {
			t.Fatalf("message %s was answered as stored but is not in the stream (%d acked, %d stored)", id, len(acked), len(have))
		}
	}
	t.Logf("%d messages acked, %d stored, %d batches cut", len(acked), len(have), failedBatches)
}
