package admin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftmesh/weft/messaging"
)

func withSubjects() jetstream.StreamInfoOpt {
	return jetstream.WithSubjectFilter(messaging.SubjectPrefix + ">")
}

// maxScan bounds one scan of a dead letter topic.
const maxScan = 100000

// scan calls fn for the messages of topic from sequence from on (0: the
// start), oldest first, until fn returns false, the topic is exhausted or
// max messages were seen. It reads through a short-lived consumer of its
// own, deleted afterwards.
func scan(ctx context.Context, js jetstream.JetStream, topic string, from uint64, headersOnly bool, max int, fn func(jetstream.Msg, *jetstream.MsgMetadata) bool) error {
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     messaging.Subject(topic),
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		HeadersOnly:       headersOnly,
		InactiveThreshold: 30 * time.Second,
		MemoryStorage:     true,
		Description:       "weft scan of " + topic,
	}
	if from > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from
	}
	c, err := js.CreateConsumer(ctx, messaging.StreamName, cfg)
	if err != nil {
		return fmt.Errorf("reading %s: %w", topic, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, messaging.StreamName, c.CachedInfo().Name)
	}()
	if c.CachedInfo().NumPending == 0 {
		return nil
	}
	seen := 0
	for seen < max {
		batch, err := c.Fetch(min(256, max-seen), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			seen++
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			if !fn(m, meta) || meta.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if got == 0 {
			return nil
		}
	}
	return nil
}

// dlqCount caches, per dead letter topic, how many dead letters each
// subscriber has there, read incrementally (headers only).
type dlqCount struct {
	next   uint64 // next stream sequence to read
	total  uint64
	counts map[string]int
}

func (a *Admin) dlqCounts(ctx context.Context, sess *messaging.Session, topic string, stored uint64) (map[string]int, error) {
	a.mu.Lock()
	c := a.dlq[topic]
	if c == nil || c.total > stored {
		// First look, or messages went (replayed, aged out): recount.
		c = &dlqCount{counts: map[string]int{}}
		a.dlq[topic] = c
	}
	if c.total == stored {
		out := maps.Clone(c.counts)
		a.mu.Unlock()
		return out, nil
	}
	next := c.next
	a.mu.Unlock()
	if stored == 0 {
		return map[string]int{}, nil
	}
	fresh := map[string]int{}
	var n, last uint64
	err := scan(ctx, sess.JS, topic, next, true, maxScan, func(m jetstream.Msg, meta *jetstream.MsgMetadata) bool {
		fresh[m.Headers().Get(messaging.HdrDLQSubscriber)]++
		n++
		last = meta.Sequence.Stream
		return true
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dlq[topic] == c && err == nil {
		for k, v := range fresh {
			c.counts[k] += v
		}
		c.total += n
		if last > 0 {
			c.next = last + 1
		}
	}
	out := maps.Clone(c.counts)
	for k, v := range fresh {
		if err != nil {
			out[k] += v
		}
	}
	return out, err
}

func (a *Admin) forgetDLQ(topic string) {
	a.mu.Lock()
	delete(a.dlq, topic)
	a.mu.Unlock()
}

func deadLetterJSON(m jetstream.Msg, meta *jetstream.MsgMetadata, dlqTopic string) DeadLetterJSON {
	h := m.Headers()
	attempts, _ := strconv.Atoi(h.Get(messaging.HdrDLQAttempts))
	data := m.Data()
	d := DeadLetterJSON{
		Sequence: meta.Sequence.Stream, ID: h.Get(messaging.HdrID), Topic: h.Get(messaging.HdrDLQTopic),
		DeadLetterTopic: dlqTopic, Subscriber: h.Get(messaging.HdrDLQSubscriber), Attempts: attempts,
		Reason: h.Get(messaging.HdrDLQReason), At: h.Get(messaging.HdrDLQAt), Size: len(data),
	}
	if len(data) > PayloadPreview {
		data, d.Truncated = data[:PayloadPreview], true
	}
	d.Payload = strings.ToValidUTF8(string(data), "\uFFFD")
	return d
}

// dlqCall is what both DLQ endpoints start from: the topic, the limit, a
// broker session, a bounded context and the dead letter topics to read.
type dlqCall struct {
	topic  string
	limit  int
	sess   *messaging.Session
	ctx    context.Context
	cancel context.CancelFunc
	topics []string
}

// startDLQ validates a DLQ request and opens what it needs; on false it
// has answered the error already.
func (a *Admin) startDLQ(w http.ResponseWriter, r *http.Request, defLimit int, timeout time.Duration) (*dlqCall, bool) {
	c := &dlqCall{topic: r.PathValue("topic")}
	if err := messaging.ValidateTopic(c.topic); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return nil, false
	}
	var err error
	if c.limit, err = limitParam(r, defLimit); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return nil, false
	}
	var ok bool
	if c.sess, ok = a.session(w, r); !ok {
		return nil, false
	}
	c.ctx, c.cancel = context.WithTimeout(r.Context(), timeout)
	if c.topics, err = a.dlqTopics(c.ctx, c.sess, r, c.topic); err != nil {
		c.cancel()
		writeErr(w, http.StatusBadRequest, err)
		return nil, false
	}
	return c, true
}

func (a *Admin) listDLQ(w http.ResponseWriter, r *http.Request) {
	c, ok := a.startDLQ(w, r, DefaultDLQLimit, 20*time.Second)
	if !ok {
		return
	}
	defer c.cancel()
	topic, limit, sess, ctx, topics := c.topic, c.limit, c.sess, c.ctx, c.topics
	out := DeadLettersJSON{Topic: topic, DeadLetterTopics: topics, Messages: []DeadLetterJSON{}}
	snap, err := a.collect(ctx, sess)
	if err != nil {
		writeErr(w, http.StatusBadGateway, err)
		return
	}
	for _, dt := range topics {
		out.Total += snap.subjects[dt]
		if snap.subjects[dt] == 0 || len(out.Messages) >= limit {
			continue
		}
		err := scan(ctx, sess.JS, dt, 0, false, limit-len(out.Messages), func(m jetstream.Msg, meta *jetstream.MsgMetadata) bool {
			out.Messages = append(out.Messages, deadLetterJSON(m, meta, dt))
			return len(out.Messages) < limit
		})
		if err != nil {
			writeErr(w, http.StatusBadGateway, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// replayDLQ publishes dead letters back to the topic they came from, for
// the subscriber that gave up on them only (other subscribers of the topic
// skip a replayed message), and removes each from the dead letter topic
// once it is stored again.
func (a *Admin) replayDLQ(w http.ResponseWriter, r *http.Request) {
	c, ok := a.startDLQ(w, r, MaxDLQLimit, 60*time.Second)
	if !ok {
		return
	}
	defer c.cancel()
	topic, limit, sess, ctx, topics := c.topic, c.limit, c.sess, c.ctx, c.topics
	stream, err := sess.JS.Stream(ctx, messaging.StreamName)
	if err != nil {
		writeErr(w, http.StatusBadGateway, err)
		return
	}
	out := ReplayJSON{Topic: topic, DeadLetterTopics: topics}
	for _, dt := range topics {
		defer a.forgetDLQ(dt)
		err := scan(ctx, sess.JS, dt, 0, false, limit-out.Replayed-out.Failed, func(m jetstream.Msg, meta *jetstream.MsgMetadata) bool {
			if err := replayOne(ctx, sess.JS, stream, m, meta, topic); err != nil {
				out.Failed++
				if len(out.Errors) < 10 {
					out.Errors = append(out.Errors, fmt.Sprintf("sequence %d: %v", meta.Sequence.Stream, err))
				}
			} else {
				out.Replayed++
			}
			return out.Replayed+out.Failed < limit && ctx.Err() == nil
		})
		if err != nil {
			out.Errors = append(out.Errors, err.Error())
		}
	}
	if snap, err := a.collect(ctx, sess); err == nil {
		for _, dt := range topics {
			out.Remaining += snap.subjects[dt]
		}
	}
	a.log.Info("dead letters replayed", "topic", topic, "replayed", out.Replayed, "failed", out.Failed)
	code := http.StatusOK
	if out.Failed > 0 && out.Replayed == 0 {
		code = http.StatusBadGateway
	}
	writeJSON(w, code, out)
}

func replayOne(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, m jetstream.Msg, meta *jetstream.MsgMetadata, topic string) error {
	src := m.Headers()
	to := src.Get(messaging.HdrDLQTopic)
	if to == "" {
		to = topic
	}
	if err := messaging.ValidateTopic(to); err != nil {
		return err
	}
	h := nats.Header{}
	for k, vs := range src {
		if strings.HasPrefix(k, "Weft-Dlq-") || strings.HasPrefix(k, "Nats-") {
			continue
		}
		h[k] = vs
	}
	if sub := src.Get(messaging.HdrDLQSubscriber); sub != "" {
		h.Set(messaging.HdrReplayFor, sub)
	}
	// A new id: the original one may still be in the dedup window.
	h.Set(messaging.HdrMsgID, "replay:"+strconv.FormatUint(meta.Sequence.Stream, 10)+":"+src.Get(messaging.HdrID))
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(pctx, &nats.Msg{Subject: messaging.SubjectFor(to, h.Get(messaging.HdrKey)), Data: m.Data(), Header: h}, jetstream.WithExpectStream(messaging.StreamName)); err != nil {
		return err
	}
	return stream.DeleteMsg(pctx, meta.Sequence.Stream)
}
