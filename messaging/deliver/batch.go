package deliver

// Batched callbacks (Subscription spec.batch): a worker takes what it has
// queued, up to maxMessages (after waiting up to maxWait for the batch to
// fill), and POSTs it to the app as one NDJSON request, one message per
// line in the order the worker got them. A worker's queue holds every
// message of the keys that hash to it, so one key's messages are in one
// batch in order, or in consecutive batches; the next batch is not sent
// before this one is settled. What the app answers settles each message
// as a single delivery's answer would (ack, retry, dead letter), with one
// rule for order: after a keyed message is to be retried, the later
// messages of its key in the batch are retried with it, whatever their
// own answer (without counting an attempt of theirs), and a batch retried
// in place is sent again in its order.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/messaging"
)

// Batch delivery limits and names.
const (
	// BatchContentType is the body of a batched callback.
	BatchContentType = "application/x-ndjson"
	// HTTPBatchSize carries the number of lines of a batched callback.
	HTTPBatchSize = "X-Weft-Batch-Size"
	// maxBatchAnswerBytes bounds the answer read: room for a result per
	// message with a reason each.
	maxBatchAnswerBytes = 1 << 20
	// maxBatchWindow is the most messages a batching subscriber holds:
	// enough for every worker to fill a batch while the next one queues.
	maxBatchWindow = 8192
)

// BatchLine is one message of a batched callback: what a single callback
// carries in headers, and the payload, base64 (JSON's []byte).
type BatchLine struct {
	ID          string            `json:"id"`
	Topic       string            `json:"topic"`
	Key         string            `json:"key,omitempty"`
	Attempt     int               `json:"attempt"`
	Sequence    uint64            `json:"sequence"`
	Source      string            `json:"source,omitempty"`
	PublishedAt string            `json:"publishedAt,omitempty"`
	ContentType string            `json:"contentType"`
	Headers     map[string]string `json:"headers,omitempty"`
	Traceparent string            `json:"traceparent,omitempty"`
	Data        []byte            `json:"data"`
}

// batchEntry is one message of a batch on its way through the attempts.
type batchEntry struct {
	it      item
	meta    *jetstream.MsgMetadata
	key     string
	attempt int
	blocked bool // retried only because an earlier message of its key is
}

// outcome is the app's answer for one message of a batch.
type outcome struct {
	v      Verdict
	reason string
	own    bool // from the message's entry in a results list
}

// Outcomes are the verdicts on a batch's messages, in line order.
type Outcomes []outcome

// Verdict is message i's verdict and, for anything but Ack, the reason.
func (o Outcomes) Verdict(i int) (Verdict, string) { return o[i].v, o[i].reason }

// batchWorker is worker for batched subscriptions: it gathers a batch from
// its own queue and the keyless one, settles it, and frees its messages.
func (s *subscriber) batchWorker(ctx, hard context.Context, own, keyless <-chan item, slots chan struct{}) {
	maxN, wait := s.spec.Batch.MaxMessages, s.spec.Batch.Wait()
	app := newAppConn(s.m.cfg.AppAddr)
	defer app.close()
	in := inbox{own: own, keyless: keyless}
	batch := make([]item, 0, maxN)
	var timer *time.Timer // Go ≥ 1.23: Reset after Stop leaves no stale tick
	for {
		first, ok := in.next(true, nil)
		if !ok {
			return // both queues closed
		}
		batch = append(batch, first)
		// The rest: what is queued now, then (maxWait) what comes in time.
		var expired <-chan time.Time
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			expired = timer.C
		}
		for len(batch) < maxN {
			it, ok := in.next(false, nil)
			if !ok && expired != nil {
				if it, ok = in.next(true, expired); !ok {
					expired = nil // fired
				}
			}
			if !ok {
				break
			}
			batch = append(batch, it)
		}
		if expired != nil {
			timer.Stop()
		}
		s.settleBatch(ctx, hard, app, batch)
		for _, it := range batch {
			s.bytes.Release(msgSize(it.msg))
			s.held.remove(it.msg)
			s.inFlight.Dec()
			<-slots
		}
		clear(batch)
		batch = batch[:0]
	}
}

// inbox is a worker's two queues, its own (keyed) and the shared keyless
// one; a closed queue is set to nil.
type inbox struct{ own, keyless <-chan item }

// next takes the next message. block waits for one until expired fires
// (nil: for ever); otherwise only a message already queued is taken. false:
// none came, or both queues are closed.
func (in *inbox) next(block bool, expired <-chan time.Time) (item, bool) {
	for in.own != nil || in.keyless != nil {
		var it item
		var own, ok bool
		if block {
			select {
			case it, ok = <-in.own:
				own = true
			case it, ok = <-in.keyless:
			case <-expired:
				return item{}, false
			}
		} else {
			select {
			case it, ok = <-in.own:
				own = true
			case it, ok = <-in.keyless:
			default:
				return item{}, false
			}
		}
		switch {
		case ok:
			return it, true
		case own:
			in.own = nil
		default:
			in.keyless = nil
		}
	}
	return item{}, false
}

// settleBatch delivers a batch until every message is settled: acked, dead
// lettered, handed back (keyless) or dropped because its partition is no
// longer held here (its next holder delivers it again, in order).
func (s *subscriber) settleBatch(ctx, hard context.Context, app *appConn, items []item) {
	entries := make([]batchEntry, 0, len(items))
	for _, it := range items {
		if it.pt != nil && !it.pt.begin() {
			continue
		}
		if e, ok := s.admit(ctx, hard, it); ok {
			entries = append(entries, e)
		} else if it.pt != nil {
			it.pt.end()
		}
	}
	// A partition's message ends its delivery (pt.end, which a handover
	// waits for) as soon as it is settled or dropped, not with the batch:
	// another partition's retries must not hold a handover up.
	defer func() {
		for _, e := range entries {
			e.end()
		}
	}()
	var unreachableSince time.Time
	for len(entries) > 0 {
		if entries = s.stillHeld(entries); len(entries) == 0 {
			return
		}
		if ctx.Err() != nil {
			s.giveBack(entries, 0)
			return
		}
		outs, reason, delivered := s.deliverRound(hard, app, entries)
		if !delivered {
			// Nothing reached the app: not an attempt. As for a single
			// delivery, wait for it; keyless messages go back to the
			// broker after AckWait, for another instance.
			if ctx.Err() != nil {
				s.giveBack(entries, 0)
				return
			}
			if unreachableSince.IsZero() {
				unreachableSince = time.Now()
				s.log.Warn("app not accepting deliveries; waiting", "url", s.url, "err", reason)
			}
			if time.Since(unreachableSince) > messaging.AckWait {
				entries = s.giveBackKeyless(entries, time.Second)
			}
			if !sleep(ctx, unreachableRetry) {
				s.giveBack(entries, 0)
				return
			}
			continue
		}
		unreachableSince = time.Time{}
		retry := entries[:0:0]
		failedKeys := map[string]bool{}
		for i := range entries {
			e := &entries[i]
			if s.settle(ctx, hard, e, outs[i], failedKeys) {
				e.end()
				continue
			}
			retry = append(retry, *e)
		}
		if entries = retry; len(entries) == 0 {
			return
		}
		// Retried in place, in order: later messages of these keys wait in
		// the worker's queue. Only held-back ones left (the message that
		// held them was dead-lettered): at once.
		if i := slices.IndexFunc(entries, func(e batchEntry) bool { return !e.blocked }); i >= 0 &&
			!sleep(ctx, messaging.Backoff(entries[i].attempt, s.initial, s.maxBack)) {
			s.giveBack(entries, 0)
			return
		}
		for i := range entries {
			if !entries[i].blocked {
				entries[i].attempt++
			}
			entries[i].blocked = false
		}
	}
}

// settle applies the app's answer for one message of a batch: true when
// the message is settled (acked, dead-lettered, handed back), false when it
// is to be retried in place (e.blocked: only held back by an earlier
// message of its key). failedKeys are the keys with a message to retry so
// far in the batch.
func (s *subscriber) settle(ctx, hard context.Context, e *batchEntry, o outcome, failedKeys map[string]bool) bool {
	if e.key != "" && failedKeys[e.key] && o.own {
		// Held back by an earlier message of its key, whatever its own
		// answer: not an attempt of its own, or a poison message would
		// take the rest of its key down with it. (An answer for the whole
		// batch, a 5xx, is every message's own attempt.)
		e.blocked = true
		return false
	}
	switch o.v {
	case Ack:
		s.ack(e.it.msg)
		return true
	case DeadLetter:
		s.deadLetter(ctx, hard, e.it.msg, e.meta, e.it.pt, e.attempt, o.reason)
		return true
	}
	if e.key != "" {
		failedKeys[e.key] = true
	}
	if e.attempt >= s.spec.MaxDeliveries {
		// Its key's later messages in the batch were answered after a
		// failure (RETRY, as asked): they are sent again.
		s.deadLetter(ctx, hard, e.it.msg, e.meta, e.it.pt, e.attempt, fmt.Sprintf("%d attempts failed; last: %s", e.attempt, o.reason))
		return true
	}
	s.m.cfg.Metrics.Delivered.WithLabelValues(s.label, messaging.ResultRetry).Inc()
	if e.key == "" && e.it.pt == nil {
		_ = e.it.msg.NakWithDelay(messaging.Backoff(e.attempt, s.initial, s.maxBack))
		return true
	}
	return false
}

// deliverRound is one attempt at the batch, cut short when the sidecar
// stops or the lease of a partition in it is lost (the partition may be
// delivered elsewhere now; the next round leaves its messages out).
func (s *subscriber) deliverRound(hard context.Context, app *appConn, entries []batchEntry) (Outcomes, string, bool) {
	ctx, cut := context.WithCancel(hard)
	defer cut()
	var seen []*part
	for _, e := range entries {
		if pt := e.it.pt; pt != nil && !slices.Contains(seen, pt) {
			seen = append(seen, pt)
			defer context.AfterFunc(pt.lost, cut)()
		}
	}
	return s.deliverBatch(ctx, app, entries)
}

// end ends a partition's message's delivery (see part.begin).
func (e batchEntry) end() {
	if e.it.pt != nil {
		e.it.pt.end()
	}
}

// admit reads a message's metadata and settles at once what needs no
// delivery: unreadable, replayed for another subscriber, or handed out
// more than maxDeliveries times already.
func (s *subscriber) admit(ctx, hard context.Context, it item) (batchEntry, bool) {
	msg := it.msg
	if ctx.Err() != nil {
		s.giveBack([]batchEntry{{it: it}}, 0)
		return batchEntry{}, false
	}
	meta, err := msg.Metadata()
	if err != nil {
		s.log.Error("message without JetStream metadata; terminating it", "err", err)
		_ = msg.Term()
		return batchEntry{}, false
	}
	h := msg.Headers()
	if f := h.Get(messaging.HdrReplayFor); f != "" && f != s.m.cfg.Service {
		_ = msg.Ack()
		return batchEntry{}, false
	}
	s.setLag(meta.Consumer, meta.NumPending)
	attempt := int(meta.NumDelivered)
	if attempt > s.spec.MaxDeliveries {
		s.deadLetter(ctx, hard, msg, meta, it.pt, attempt-1, "handed out more than maxDeliveries times without an answer (instances stopped mid-delivery)")
		return batchEntry{}, false
	}
	return batchEntry{it: it, meta: meta, key: h.Get(messaging.HdrKey), attempt: attempt}, true
}

// stillHeld drops (and ends) the messages of partitions no longer held
// here.
func (s *subscriber) stillHeld(entries []batchEntry) []batchEntry {
	out := entries[:0]
	for _, e := range entries {
		if e.it.pt == nil || e.it.pt.holds() {
			out = append(out, e)
			continue
		}
		e.end()
	}
	return out
}

// giveBack hands keyless messages back to the broker; a partition's are
// never handed back (see handle).
func (s *subscriber) giveBack(entries []batchEntry, delay time.Duration) {
	for _, e := range entries {
		switch {
		case e.it.pt != nil:
		case delay > 0:
			_ = e.it.msg.NakWithDelay(delay)
		default:
			_ = e.it.msg.Nak()
		}
	}
}

// giveBackKeyless hands back the keyless messages and keeps the rest.
func (s *subscriber) giveBackKeyless(entries []batchEntry, delay time.Duration) []batchEntry {
	out := entries[:0]
	for _, e := range entries {
		if e.it.pt == nil && e.key == "" {
			_ = e.it.msg.NakWithDelay(delay)
			continue
		}
		out = append(out, e)
	}
	return out
}

func (s *subscriber) ack(msg jetstream.Msg) {
	_ = msg.Ack()
	s.acked.Inc()
	if ns, err := strconv.ParseInt(msg.Headers().Get(messaging.HdrPublishedAt), 10, 64); err == nil {
		s.latency.Observe(time.Since(time.Unix(0, ns)).Seconds())
	}
}

// deliverBatch POSTs the batch to the app once and returns one outcome per
// entry. delivered is false when the app could not be reached or the
// sidecar is stopping (as deliver).
func (s *subscriber) deliverBatch(hard context.Context, app *appConn, entries []batchEntry) (outs Outcomes, reason string, delivered bool) {
	spans := s.m.cfg.Spans
	ctx, span := spans.Start(hard, "deliver "+s.spec.Topic, trace.SpanKindConsumer)
	span.SetAttributes(
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", s.spec.Topic),
		attribute.String("messaging.consumer.group.name", s.m.cfg.Service),
		attribute.Int("messaging.batch.message_count", len(entries)),
	)
	defer func() {
		span.SetAttributes(attribute.Bool("weft.message.delivered", delivered))
		if !delivered || reason != "" {
			span.SetStatus(codes.Error, reason)
		}
		span.End()
	}()

	rh := http.Header{}
	rh.Set("Content-Type", BatchContentType)
	rh.Set(messaging.HTTPTopic, s.spec.Topic)
	rh.Set(HTTPBatchSize, strconv.Itoa(len(entries)))
	spans.Inject(ctx, rh)
	s.batchN.Observe(float64(len(entries)))
	status, answer, err := app.post(ctx, s.spec.Path, rh, encodeBatch(s.spec.Topic, entries), time.Now().Add(s.timeout), maxBatchAnswerBytes)
	if err != nil {
		v, reason, delivered := s.callFailed(hard, err)
		if !delivered {
			return nil, reason, false
		}
		return fill(len(entries), v, reason), reason, true
	}
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	outs = ParseBatchAnswer(status, answer, entryIDs(entries))
	for _, o := range outs {
		if o.v != Ack {
			reason = o.reason
			break
		}
	}
	if reason != "" && status == http.StatusNotFound {
		for i := range outs {
			outs[i].reason += "; is " + s.spec.Path + " the subscription's path on the app?"
		}
	}
	return outs, reason, true
}

func entryIDs(entries []batchEntry) []string {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = messageID(e.it.msg.Headers())
	}
	return ids
}

func fill(n int, v Verdict, reason string) Outcomes {
	out := make(Outcomes, n)
	for i := range out {
		out[i] = outcome{v: v, reason: reason}
	}
	return out
}

// encodeBatch writes the batch's NDJSON body: BatchLine by hand, in its
// field order, where encoding/json's reflection was a tenth of the
// subscribing sidecar's CPU in batch mode (bench/messaging -callback-batch
// 50); TestEncodeBatchIsJSON holds the two to the same output.
func encodeBatch(topic string, entries []batchEntry) []byte {
	size := 0
	for _, e := range entries {
		size += 320 + base64.StdEncoding.EncodedLen(len(e.it.msg.Data()))
	}
	b := make([]byte, 0, size)
	for _, e := range entries {
		h := e.it.msg.Headers()
		b = append(b, `{"id":`...)
		b = appendJSONString(b, messageID(h))
		b = append(b, `,"topic":`...)
		b = appendJSONString(b, topic)
		if e.key != "" {
			b = append(b, `,"key":`...)
			b = appendJSONString(b, e.key)
		}
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(e.attempt), 10)
		b = append(b, `,"sequence":`...)
		b = strconv.AppendUint(b, e.meta.Sequence.Stream, 10)
		if v := h.Get(messaging.HdrSource); v != "" {
			b = append(b, `,"source":`...)
			b = appendJSONString(b, v)
		}
		if ns, err := strconv.ParseInt(h.Get(messaging.HdrPublishedAt), 10, 64); err == nil {
			b = append(b, `,"publishedAt":"`...)
			b = time.Unix(0, ns).UTC().AppendFormat(b, time.RFC3339Nano)
			b = append(b, '"')
		}
		ct := h.Get(messaging.HdrContentType)
		if ct == "" {
			ct = "application/octet-stream"
		}
		b = append(b, `,"contentType":`...)
		b = appendJSONString(b, ct)
		first := true
		for k, vs := range h {
			if len(k) > len(messaging.HTTPHeaderPrefix) && strings.HasPrefix(k, messaging.HTTPHeaderPrefix) && len(vs) > 0 {
				if first {
					b = append(b, `,"headers":{`...)
					first = false
				} else {
					b = append(b, ',')
				}
				b = appendJSONString(b, k)
				b = append(b, ':')
				b = appendJSONString(b, vs[0])
			}
		}
		if !first {
			b = append(b, '}')
		}
		if v := h.Get("Traceparent"); v != "" {
			b = append(b, `,"traceparent":`...)
			b = appendJSONString(b, v)
		}
		b = append(b, `,"data":"`...)
		b = base64.StdEncoding.AppendEncode(b, e.it.msg.Data())
		b = append(b, "\"}\n"...)
	}
	return b
}

// appendJSONString appends s as a JSON string, as encoding/json writes it
// without HTML escaping: invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

// ParseBatchAnswer turns the app's answer to a batched callback into one
// outcome per message, ids being the batch's message ids in line order.
//
//   - 2xx with {"results": [...]}: one entry per line, in line order, each
//     {"status": "SUCCESS" | "RETRY" | "DEADLETTER", "reason": "...", "id": "..."}
//     (status as for a single delivery; reason optional, recorded on a
//     dead letter; id optional, and when given it must be the line's).
//     A results list of another length, or an id that is not its line's,
//     retries the whole batch: the sidecar cannot tell which answer is
//     whose.
//   - anything else: ParseAnswer's verdict for every message, so a 2xx
//     acks the whole batch, {"status":"RETRY"} or a 5xx retries it, a 4xx
//     dead-letters it.
func ParseBatchAnswer(status int, body []byte, ids []string) Outcomes {
	if status >= 200 && status < 300 {
		if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '{' {
			var a struct {
				Results *[]struct {
					ID     *string `json:"id"`
					Status *string `json:"status"`
					Reason string  `json:"reason"`
				} `json:"results"`
			}
			if json.Unmarshal(t, &a) == nil && a.Results != nil {
				rs := *a.Results
				if len(rs) != len(ids) {
					return fill(len(ids), Retry, fmt.Sprintf("app answered %d results for a batch of %d messages", len(rs), len(ids)))
				}
				out := make(Outcomes, len(ids))
				for i, r := range rs {
					if r.ID != nil && *r.ID != ids[i] {
						return fill(len(ids), Retry, fmt.Sprintf("app answered result %d for id %s, but line %d is %s", i+1, quote(*r.ID), i+1, quote(ids[i])))
					}
					v, reason := Ack, ""
					if r.Status != nil {
						v, reason = statusVerdict(*r.Status)
					}
					if v != Ack && strings.TrimSpace(r.Reason) != "" {
						reason += ": " + quote(strings.TrimSpace(r.Reason))
					}
					out[i] = outcome{v, reason, true}
				}
				return out
			}
		}
	}
	v, reason := ParseAnswer(status, body)
	return fill(len(ids), v, reason)
}
