package messaging

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// checkBatchKeyOrder checks what an app of a batching subscription sees: no
// key in two callbacks at once, and each key's messages (bodies 0, 1, 2,
// …) acked in order, each one first acked only after the one before it.
// Repeats of a message already acked (at least once) are allowed.
func checkBatchKeyOrder(t *testing.T, rs []record) (retried, largest int) {
	t.Helper()
	next := map[string]int{}
	for _, r := range rs {
		largest = max(largest, r.Batch)
		if r.Answer == "retry" || r.Answer == "fail" {
			retried++
		}
		if r.Key == "" {
			continue
		}
		n, _ := strconv.Atoi(r.Body)
		if r.Overlap {
			t.Errorf("key %s: message %d delivered while another callback had the key", r.Key, n)
		}
		if r.Answer != "ack" || n < next[r.Key] {
			continue
		}
		if n != next[r.Key] {
			t.Errorf("key %s: message %d acked before message %d", r.Key, n, next[r.Key])
		}
		next[r.Key] = n + 1
	}
	return retried, largest
}

// Keyed messages published in batches are delivered in batched callbacks
// over 8 workers, while the app asks for retries of single lines: every
// message acked, a key's messages acked in publish order, never a key in
// two callbacks at once, and callbacks really carry many messages.
func TestBatchCallbackKeyOrder(t *testing.T) {
	const keys, per = 40, 25
	c := startControl(t)
	c.apply(subscription("ledger", "ledger", "cb.changed", "/events/changed",
		"  concurrency: 8\n  backoff: {initial: 20ms, max: 100ms}\n  batch: {maxMessages: 50, maxWait: 5ms}\n"))
	c.waitSubscription("cb.changed", "ledger")
	sub := startSub(t, c, "ledger", "ledger-1", nil, "--retry-first-every", "13")
	pub := startPub(t, c, "accounts")

	lines := keyedLines(keys, per)
	for i := 0; i < len(lines); i += 100 {
		chunk := lines[i : i+100]
		if !harness.Poll(eventually, func() bool { code, _, _ := publishBatch(pub.outbound, "cb.changed", chunk); return code == 200 }) {
			t.Fatalf("batch %d not stored", i/100)
		}
	}
	if !harness.Poll(60*time.Second, func() bool { got, _ := acked(records(t, sub.record)); return len(got) == len(lines) }) {
		got, _ := acked(records(t, sub.record))
		t.Fatalf("%d of %d acked", len(got), len(lines))
	}
	rs := records(t, sub.record)
	retried, largest := checkBatchKeyOrder(t, rs)
	if retried == 0 {
		t.Fatal("the app asked for no retries; the test proves less than it claims")
	}
	if largest < 2 || largest > 50 {
		t.Fatalf("largest callback carried %d messages, want 2–50", largest)
	}
	t.Logf("%d deliveries for %d messages, %d retried, callbacks of up to %d messages, order kept", len(rs), len(lines), retried, largest)
}

// A 5xx answer to a batched callback is a failed attempt for every message
// in it: each is delivered again (attempt 2), keyed ones in order, and
// nothing is lost.
func TestBatchCallbackRedeliveryOn5xx(t *testing.T) {
	c := startControl(t)
	c.apply(subscription("sink", "sink", "cb.fail", "/events/in",
		"  concurrency: 2\n  backoff: {initial: 50ms, max: 200ms}\n  batch: {maxMessages: 20, maxWait: 100ms}\n"))
	c.waitSubscription("cb.fail", "sink")
	sub := startSub(t, c, "sink", "sink-1", nil, "--fail-first-batches", "3")
	pub := startPub(t, c, "source")

	var lines []batchLine
	for n := range 20 {
		for k := range 5 {
			key := fmt.Sprintf("k%d", k)
			if k == 0 {
				key = "" // keyless: retried through the broker
			}
			lines = append(lines, batchLine{Text: strconv.Itoa(n), Key: key, ID: fmt.Sprintf("m%d-%02d", k, n)})
		}
	}
	if !harness.Poll(eventually, func() bool { code, _, _ := publishBatch(pub.outbound, "cb.fail", lines); return code == 200 }) {
		t.Fatal("batch not stored")
	}
	if !harness.Poll(60*time.Second, func() bool { got, _ := acked(records(t, sub.record)); return len(got) == len(lines) }) {
		got, _ := acked(records(t, sub.record))
		t.Fatalf("%d of %d acked", len(got), len(lines))
	}
	rs := records(t, sub.record)
	failedIDs := map[string]bool{}
	for _, r := range rs {
		if r.Answer == "fail" {
			failedIDs[r.ID] = true
		}
	}
	if len(failedIDs) == 0 {
		t.Fatal("no callback was answered 500")
	}
	for id := range failedIDs {
		again := false
		for _, r := range rs {
			again = again || r.ID == id && r.Answer == "ack" && r.Attempt >= 2
		}
		if !again {
			t.Errorf("message %s answered 500 was not acked on a later attempt", id)
		}
	}
	checkBatchKeyOrder(t, rs)
	t.Logf("%d messages in 500-answered callbacks, all delivered again and acked", len(failedIDs))
}

// Through a kill -9 of the subscribing instance and then of the control
// plane with its broker, while messages stream in, a batching subscription
// loses nothing: every message the publishing sidecar answered 200 for is
// acked.
func TestBatchCallbackThroughKills(t *testing.T) {
	const total = 3000
	c := startControl(t)
	c.apply(subscription("sink", "sink", "cb.kill", "/events/in", "  concurrency: 4\n  batch: {maxMessages: 50, maxWait: 2ms}\n"))
	c.waitSubscription("cb.kill", "sink")
	subs := []*unit{startSub(t, c, "sink", "sink-1", nil)}
	pub := startPub(t, c, "source")

	st := publishStream(t, pub.outbound, "cb.kill", total, func(i int) string { return fmt.Sprintf("k%02d", i%20) })
	st.waitPublished(800)
	t.Logf("kill -9 of sink-1 after %d published", st.published.Load())
	subs[0].p.Kill()
	subs = append(subs, startSub(t, c, "sink", "sink-2", nil))
	st.waitPublished(1800)
	t.Logf("kill -9 of the control plane and its broker after %d published", st.published.Load())
	c.Kill()
	c.Restart()
	st.wait()
	t.Logf("%d publishes answered non-2xx and were retried (same id)", st.retries.Load())
	files := []string{subs[0].record, subs[1].record}
	var got map[string]int
	var dups int
	if !harness.Poll(90*time.Second, func() bool { got, dups = acked(records(t, files...)); return len(got) == total }) {
		var missing []string
		for i := range total {
			if id := fmt.Sprintf("m-%05d", i); got[id] == 0 && len(missing) < 20 {
				missing = append(missing, id)
			}
		}
		t.Fatalf("%d of %d messages acked; first missing: %v", len(got), total, missing)
	}
	largest := 0
	for _, r := range records(t, files...) {
		largest = max(largest, r.Batch)
	}
	if largest == 0 {
		t.Fatal("no batched callback recorded")
	}
	t.Logf("every one of %d messages acked; %d duplicate deliveries; callbacks of up to %d messages", total, dups, largest)
}

// A Subscription whose batch settings are out of bounds is refused by
// `weft apply`, with the field and the bound in the message.
func TestBatchCallbackBadConfig(t *testing.T) {
	c := startControl(t)
	for _, tt := range []struct{ batch, want string }{
		{"{maxMessages: 5000}", "spec.batch.maxMessages: 5000 is not between 1 and 1000"},
		{"{maxWait: 5ms}", "spec.batch.maxMessages: 0 is not between 1 and 1000 (set it to turn batched callbacks on)"},
		{"{maxMessages: 10, maxWait: 10s}", "spec.batch.maxWait: 10s is more than the 1s allowed"},
		{"{maxMessages: 10, maxWait: soon}", `spec.batch.maxWait: "soon" is not a duration`},
		{"{maxMessage: 10}", "unknown field"},
	} {
		f := filepath.Join(t.TempDir(), "bad.yaml")
		m := subscription("bad", "sink", "cb.bad", "/events/in", "  batch: "+tt.batch+"\n")
		if err := os.WriteFile(f, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := c.weft("apply", "-f", f)
		if err == nil || !strings.Contains(out, tt.want) {
			t.Errorf("apply of batch %s: %v\n%s\nwant a message containing %q", tt.batch, err, out, tt.want)
		}
	}
	if out, err := c.weft("get", "resources"); err != nil || strings.Contains(out, "cb.bad") {
		t.Errorf("a refused subscription was stored: %v\n%s", err, out)
	}
}
