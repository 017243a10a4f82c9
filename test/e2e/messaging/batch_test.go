package messaging

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

type batchLine struct {
	Text string `json:"text"`
	Key  string `json:"key,omitempty"`
	ID   string `json:"id"`
}

type batchAnswer struct {
	Error   string `json:"error"`
	Results []struct {
		ID       string `json:"id"`
		Sequence uint64 `json:"sequence"`
		Error    string `json:"error"`
	} `json:"results"`
}

// keyedLines are per messages for each of keys keys, line order n by n:
// body n, key acct-KK, id kKK-NN.
func keyedLines(keys, per int) []batchLine {
	var lines []batchLine
	for n := range per {
		for k := range keys {
			lines = append(lines, batchLine{Text: strconv.Itoa(n), Key: fmt.Sprintf("acct-%02d", k), ID: fmt.Sprintf("k%02d-%02d", k, n)})
		}
	}
	return lines
}

// publishBatch POSTs lines to the sidecar's batch endpoint.
func publishBatch(outbound int, topic string, lines []batchLine) (int, batchAnswer, error) {
	var b strings.Builder
	for _, l := range lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	code, body, err := httpDo("POST", "http://"+harness.Addr(outbound)+"/v1/publish-batch/"+topic, []byte(b.String()), nil)
	var a batchAnswer
	if err == nil {
		err = json.Unmarshal(body, &a)
	}
	return code, a, err
}

// Batches of keyed messages through the publishing sidecar (one request,
// many messages, acks in flight together) are delivered in per-key order
// by a subscriber that pipelines callbacks over 8 workers while the app
// asks for retries: every message acked, one key's messages one at a time,
// in the order of the batch lines.
func TestBatchPublishKeyOrder(t *testing.T) {
	const keys, per, batches = 40, 25, 10 // 10 batches of 100 lines
	c := startControl(t)
	c.apply(subscription("ledger", "ledger", "batch.changed", "/events/changed",
		"  concurrency: 8\n  backoff: {initial: 20ms, max: 100ms}\n"))
	c.waitSubscription("batch.changed", "ledger")
	sub := startSub(t, c, "ledger", "ledger-1", nil, "--retry-first-every", "13")
	pub := startPub(t, c, "accounts")

	lines := keyedLines(keys, per)
	size := len(lines) / batches
	for i := 0; i < len(lines); i += size {
		chunk := lines[i : i+size]
		var code int
		var a batchAnswer
		var err error
		if !harness.Poll(eventually, func() bool { code, a, err = publishBatch(pub.outbound, "batch.changed", chunk); return code == 200 }) {
			t.Fatalf("batch %d: %d %+v %v", i/size, code, a, err)
		}
		if len(a.Results) != len(chunk) {
			t.Fatalf("batch %d: %d results for %d lines", i/size, len(a.Results), len(chunk))
		}
		for j, r := range a.Results {
			if r.ID != chunk[j].ID || r.Sequence == 0 || (j > 0 && r.Sequence <= a.Results[j-1].Sequence) {
				t.Fatalf("batch %d line %d: %+v", i/size, j, r)
			}
		}
	}
	if !harness.Poll(60*time.Second, func() bool { got, _ := acked(records(t, sub.record)); return len(got) == len(lines) }) {
		got, _ := acked(records(t, sub.record))
		t.Fatalf("%d of %d acked", len(got), len(lines))
	}
	last := map[string]int{}
	retried := 0
	for _, r := range records(t, sub.record) {
		n, _ := strconv.Atoi(r.Body)
		if r.Overlap {
			t.Errorf("key %s: message %d delivered while another of the key was in delivery", r.Key, n)
		}
		if prev, ok := last[r.Key]; ok && n < prev {
			t.Errorf("key %s: message %d delivered after %d", r.Key, n, prev)
		}
		last[r.Key] = n
		if r.Answer == "retry" {
			retried++
		}
	}
	if retried == 0 {
		t.Fatal("the app asked for no retries; the test proves less than it claims")
	}
}

// The control plane and its broker are killed -9 while batches are in
// flight: no message the sidecar answered as stored (a sequence in the
// batch's answer) is lost — after the restart each is delivered — and a
// batch answered 200 had every message stored.
func TestBatchPublishThroughBrokerKill(t *testing.T) {
	c := startControl(t)
	c.apply(subscription("sink-batch", "sink", "batch.kill", "/events/in", "  concurrency: 4\n"))
	c.waitSubscription("batch.kill", "sink")
	sub := startSub(t, c, "sink", "sink-1", nil)
	pub := startPub(t, c, "source")

	var mu sync.Mutex
	stored := map[string]bool{}
	var batchesOK, batchesCut atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; ; b++ {
				select {
				case <-stop:
					return
				default:
				}
				lines := make([]batchLine, 200)
				for i := range lines {
					lines[i] = batchLine{Text: "x", Key: fmt.Sprintf("k%d", i%8), ID: fmt.Sprintf("g%d-b%04d-%03d", g, b, i)}
				}
				code, a, err := publishBatch(pub.outbound, "batch.kill", lines)
				if err != nil {
					batchesCut.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				mu.Lock()
				for _, r := range a.Results {
					if r.Error == "" && r.Sequence > 0 {
						stored[r.ID] = true
					} else if code == 200 {
						t.Errorf("batch answered 200 with message %s not stored: %+v", r.ID, r)
					}
				}
				mu.Unlock()
				if code == 200 {
					batchesOK.Add(1)
				} else {
					batchesCut.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	if !harness.Poll(eventually, func() bool { return batchesOK.Load() >= 8 }) {
		t.Fatalf("only %d batches stored", batchesOK.Load())
	}
	c.Kill()
	c.Restart()
	cutBefore := batchesCut.Load()
	if !harness.Poll(60*time.Second, func() bool { return batchesOK.Load() >= 16 }) {
		t.Fatalf("publishing did not resume after the restart: %d batches stored, %d cut", batchesOK.Load(), batchesCut.Load())
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	want := len(stored)
	mu.Unlock()
	var got map[string]int
	if !harness.Poll(90*time.Second, func() bool {
		got, _ = acked(records(t, sub.record))
		for id := range stored {
			if got[id] == 0 {
				return false
			}
		}
		return true
	}) {
		var missing []string
		for id := range stored {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		t.Fatalf("%d messages answered as stored, %d of them not delivered; some: %v", want, len(missing), missing[:min(10, len(missing))])
	}
	t.Logf("%d messages answered as stored, all delivered; %d batches stored, %d cut (%d before the restart was done)", want, batchesOK.Load(), batchesCut.Load(), cutBefore)
}
