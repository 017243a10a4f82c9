package messaging

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// The batch sizes in use show on each sidecar's /metrics: after two
// batched publishes of 100 lines, the publishing sidecar's
// weft_messages_publish_batch_size counts two requests of 200 messages,
// and the subscribing sidecar's weft_message_callback_batch_size counts
// callbacks of more than one message each on average (batch.maxMessages
// 50), none above 50.
func TestBatchSizeMetrics(t *testing.T) {
	c := startControl(t)
	c.apply(subscription("sized", "sized", "sized.events", "/events/sized",
		"  concurrency: 4\n  batch: {maxMessages: 50, maxWait: 20ms}\n"))
	c.waitSubscription("sized.events", "sized")
	sub := startSub(t, c, "sized", "sized-1", nil)
	pub := startPub(t, c, "sizer")

	lines := keyedLines(10, 20)
	for i := 0; i < len(lines); i += 100 {
		chunk := lines[i : i+100]
		if !harness.Poll(eventually, func() bool { code, _, _ := publishBatch(pub.outbound, "sized.events", chunk); return code == 200 }) {
			t.Fatalf("batch %d not stored", i/100)
		}
	}
	if !harness.Poll(30*time.Second, func() bool { got, _ := acked(records(t, sub.record)); return len(got) == len(lines) }) {
		got, _ := acked(records(t, sub.record))
		t.Fatalf("%d of %d acked", len(got), len(lines))
	}

	pm := pub.metrics()
	for _, want := range []string{
		`weft_messages_publish_batch_size_bucket{topic="sized.events",le="50"} 0`,
		`weft_messages_publish_batch_size_bucket{topic="sized.events",le="100"} 2`,
		`weft_messages_publish_batch_size_sum{topic="sized.events"} 200`,
		`weft_messages_publish_batch_size_count{topic="sized.events"} 2`,
		`weft_messages_publish_acks_pending 0`,
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(pm) {
			t.Errorf("publishing sidecar's /metrics lacks %s", want)
		}
	}
	// Acked and counted: read once every message is in.
	var sum, count, le50 float64
	harness.Poll(10*time.Second, func() bool {
		sm := sub.metrics()
		sum = metricValue(sm, `weft_message_callback_batch_size_sum{topic="sized.events"}`)
		count = metricValue(sm, `weft_message_callback_batch_size_count{topic="sized.events"}`)
		le50 = metricValue(sm, `weft_message_callback_batch_size_bucket{topic="sized.events",le="50"}`)
		return sum >= float64(len(lines))
	})
	switch {
	case sum < float64(len(lines)) || count == 0:
		t.Errorf("callback batch size: sum %v, count %v; want a sum ≥ %d", sum, count, len(lines))
	case sum/count <= 1:
		t.Errorf("callbacks carried %v messages on average, want more than 1 (batch.maxMessages 50)", sum/count)
	case le50 != count:
		t.Errorf("%v of %v callbacks carried at most 50 messages", le50, count)
	}
	if t.Failed() {
		t.Logf("publisher:\n%s\nsubscriber:\n%s", grepLines(pm, "batch_size"), grepLines(sub.metrics(), "batch_size"))
	}
	t.Logf("%v callbacks for %v deliveries (%.1f per callback)", count, sum, sum/count)
}

// metricValue is the value of the sample line that starts with series, or -1.
func metricValue(text, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
