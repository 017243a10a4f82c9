package deliver_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/deliver"
	"github.com/weftmesh/weft/resource"
)

// batch records one batched callback's lines as deliveries and answers
// with handBatch.
func (e *env) batch(r *http.Request, body []byte) (int, string) {
	var ds []delivery
	for _, line := range bytes.Split(bytes.TrimSpace(body), []byte("\n")) {
		var l deliver.BatchLine
		if err := json.Unmarshal(line, &l); err != nil {
			e.t.Errorf("batch line %q: %v", line, err)
			return 400, ""
		}
		h := http.Header{}
		for k, v := range l.Headers {
			h.Set(k, v)
		}
		h.Set("Content-Type", l.ContentType)
		h.Set(messaging.HTTPSource, l.Source)
		h.Set(messaging.HTTPSequence, strconv.FormatUint(l.Sequence, 10))
		h.Set(messaging.HTTPPublishedAt, l.PublishedAt)
		ds = append(ds, delivery{ID: l.ID, Key: l.Key, Topic: l.Topic, Attempt: l.Attempt, Body: string(l.Data), Header: h})
	}
	if n, _ := strconv.Atoi(r.Header.Get(deliver.HTTPBatchSize)); n != len(ds) {
		e.t.Errorf("%s %d for %d lines", deliver.HTTPBatchSize, n, len(ds))
	}
	e.mu.Lock()
	e.got = append(e.got, ds...)
	e.batches = append(e.batches, ds)
	hand := e.handBatch
	e.mu.Unlock()
	return hand(ds)
}

func batchSpec(topic string, n int, wait string, mod func(*resource.SubscriptionSpec)) resource.SubscriptionSpec {
	return spec(topic, func(s *resource.SubscriptionSpec) {
		s.Batch = &resource.BatchSpec{MaxMessages: n, MaxWait: wait}
		if mod != nil {
			mod(s)
		}
	})
}

// Batched callbacks carry each message's metadata, at most maxMessages a
// batch, and keep per-key order while the app retries some messages by a
// per-message answer: a retried message's later messages of the same key
// are retried with it, and everything is acked in the end.
func TestBatchedCallbacksOrderAndPartialRetry(t *testing.T) {
	e := newEnv(t)
	e.subscribe(batchSpec("batched", 10, "20ms", func(s *resource.SubscriptionSpec) { s.Concurrency = 4 }))
	var mu sync.Mutex
	acked := map[string]bool{}
	next := map[string]int{} // per key, the message to be processed next
	var disorder []string
	e.handBatch = func(ds []delivery) (int, string) {
		var rs []string
		mu.Lock()
		defer mu.Unlock()
		failed := map[string]bool{}
		for _, d := range ds {
			n, _ := strconv.Atoi(strings.TrimPrefix(d.Body, "n"))
			// As the contract asks: a key's first failure fails the rest
			// of the key's messages in the batch.
			if d.Key != "" && failed[d.Key] || n%7 == 3 && d.Attempt == 1 {
				failed[d.Key] = true
				rs = append(rs, fmt.Sprintf(`{"id":%q,"status":"RETRY","reason":"later"}`, d.ID))
				continue
			}
			if d.Key != "" {
				if n != next[d.Key] {
					disorder = append(disorder, fmt.Sprintf("key %s: message %d processed when %d was next", d.Key, n, next[d.Key]))
				}
				next[d.Key] = n + 1
			}
			acked[d.ID] = true
			rs = append(rs, `{"status":"SUCCESS"}`)
		}
		return 200, `{"results":[` + strings.Join(rs, ",") + `]}`
	}
	const keys, per = 10, 20
	var wg sync.WaitGroup
	for k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				key := fmt.Sprint("k", k)
				if k == 0 {
					key = "" // one stream of keyless messages too
				}
				h := nats.Header{}
				h.Set(messaging.HdrMsgID, fmt.Sprintf("k%d-%d", k, i))
				h.Set("X-Msg-Tenant", "acme")
				if key != "" {
					h.Set(messaging.HdrKey, key)
				}
				if _, err := e.pub.Publish(t.Context(), "batched", []byte(fmt.Sprint("n", i)), h); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 30*time.Second, "every message acked", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) == keys*per })

	e.mu.Lock()
	batches := e.batches
	e.mu.Unlock()
	largest := 0
	for _, b := range batches {
		largest = max(largest, len(b))
		if len(b) > 10 {
			t.Fatalf("a batch of %d, more than maxMessages 10", len(b))
		}
	}
	if largest < 2 {
		t.Errorf("no batch held more than one message (%d batches)", len(batches))
	}
	mu.Lock()
	if len(disorder) > 0 {
		t.Fatalf("per-key order broken: %v", disorder)
	}
	mu.Unlock()
	for _, d := range e.deliveries() {
		if d.Header.Get("X-Msg-Tenant") != "acme" || d.Header.Get(messaging.HTTPSource) != "pub" || d.Header.Get(messaging.HTTPSequence) == "0" ||
			d.Header.Get(messaging.HTTPPublishedAt) == "" || d.Topic != "batched" || d.Attempt < 1 {
			t.Fatalf("delivery without its metadata: %+v", d)
		}
	}
}

// A 5xx answer retries the whole batch (attempt 2 for each message); a
// 4xx dead-letters it.
func TestBatchedCallbacksWholeBatchAnswers(t *testing.T) {
	e := newEnv(t)
	e.subscribe(batchSpec("whole", 50, "50ms", nil), batchSpec("refused", 50, "50ms", func(s *resource.SubscriptionSpec) { s.MaxDeliveries = 3 }))
	e.handBatch = func(ds []delivery) (int, string) {
		if ds[0].Topic == "refused" {
			return 422, "no thanks"
		}
		if ds[0].Attempt == 1 {
			return 503, "busy"
		}
		return 204, ""
	}
	for i := range 5 {
		e.publish("whole", "", fmt.Sprint("w", i), "x")
		e.publish("whole", "k", fmt.Sprint("wk", i), "x")
	}
	e.publish("refused", "", "r0", "x")
	waitFor(t, 20*time.Second, "every message redelivered", func() bool {
		second := map[string]bool{}
		for _, d := range e.deliveries() {
			if d.Attempt == 2 {
				second[d.ID] = true
			}
		}
		return len(second) == 10
	})
	sess, err := e.conn.Wait(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the refused message dead-lettered", func() bool {
		st, err := sess.JS.Stream(ctxT(t, time.Second), messaging.StreamName)
		if err != nil {
			return false
		}
		m, err := st.GetLastMsgForSubject(ctxT(t, time.Second), messaging.Subject("refused.dlq"))
		return err == nil && strings.Contains(m.Header.Get(messaging.HdrDLQReason), "422")
	})
}

func TestParseBatchAnswer(t *testing.T) {
	ids := []string{"a", "b", "c"}
	tests := []struct {
		name   string
		status int
		body   string
		want   string // verdicts, one letter each: a(ck), r(etry), d(eadletter)
		reason string // substring of the first non-ack reason
	}{
		{"204", 204, "", "aaa", ""},
		{"200 text", 200, "ok", "aaa", ""},
		{"whole retry", 200, `{"status":"RETRY"}`, "rrr", "RETRY"},
		{"500", 500, "boom", "rrr", "500"},
		{"404", 404, "", "ddd", "404"},
		{"per message", 200, `{"results":[{"status":"SUCCESS"},{"status":"RETRY","reason":"db down"},{"status":"DEADLETTER"}]}`, "ard", `RETRY: "db down"`},
		{"per message with ids", 200, `{"results":[{"id":"a"},{"id":"b","status":"success"},{"id":"c","status":"drop"}]}`, "aad", "DEADLETTER"},
		{"too few results", 200, `{"results":[{"status":"SUCCESS"}]}`, "rrr", "1 results for a batch of 3"},
		{"ids swapped", 200, `{"results":[{"id":"b"},{"id":"a"},{"id":"c"}]}`, "rrr", `line 1 is "a"`},
		{"unknown status", 200, `{"results":[{},{"status":"MAYBE"},{}]}`, "ara", "unknown status"},
		{"results ignored on 5xx", 503, `{"results":[{},{},{}]}`, "rrr", "503"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs := deliver.ParseBatchAnswer(tt.status, []byte(tt.body), ids)
			got, reason := "", ""
			for i := range ids {
				v, r := outs.Verdict(i)
				got += v.String()[:1]
				if reason == "" && v != deliver.Ack {
					reason = r
				}
			}
			if got != tt.want || !strings.Contains(reason, tt.reason) {
				t.Fatalf("got %s (%q), want %s (%q)", got, reason, tt.want, tt.reason)
			}
		})
	}
}

// A keyed message the app keeps refusing is dead-lettered after
// maxDeliveries attempts; the later messages of its key, retried with it
// in the meantime (the app answering RETRY for them, as it should), count
// no attempts of their own and are acked after it, in order.
func TestBatchedPoisonMessageHoldsItsKeyOnly(t *testing.T) {
	e := newEnv(t)
	e.subscribe(batchSpec("poisoned", 10, "200ms", func(s *resource.SubscriptionSpec) { s.MaxDeliveries = 3 }))
	var mu sync.Mutex
	var acked []string
	e.handBatch = func(ds []delivery) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		var rs []string
		failed := false
		for _, d := range ds {
			if d.Body == "poison" || failed {
				failed = true
				rs = append(rs, `{"status":"RETRY"}`)
				continue
			}
			acked = append(acked, d.Body)
			rs = append(rs, `{}`)
		}
		return 200, `{"results":[` + strings.Join(rs, ",") + `]}`
	}
	for i, body := range []string{"n0", "poison", "n1", "n2"} {
		e.publish("poisoned", "k", fmt.Sprint("p", i), body)
	}
	waitFor(t, 20*time.Second, "the rest of the key acked", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) == 3 })
	mu.Lock()
	if strings.Join(acked, ",") != "n0,n1,n2" {
		t.Fatalf("acked %v, want n0,n1,n2", acked)
	}
	mu.Unlock()
	for _, d := range e.deliveries() {
		if d.Body != "poison" && d.Attempt != 1 {
			t.Fatalf("%s delivered as attempt %d: held back by the poison message, it made no attempt of its own; %s", d.Body, d.Attempt, e.summary())
		}
	}
}

// summary lists the batches received, each message as body/attempt.
func (e *env) summary() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, ds := range e.batches {
		b.WriteString("[")
		for _, d := range ds {
			fmt.Fprintf(&b, " %s/%d", d.Body, d.Attempt)
		}
		b.WriteString(" ]")
	}
	return b.String()
}
