package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/partition"
	"github.com/weftmesh/weft/resource"
)

// Window bounds, per instance and subscription: how many messages the
// sidecar holds (queued for or in delivery to its app). A slow app fills
// its window and the sidecar stops pulling; the broker keeps the rest.
const (
	minWindow       = 16
	maxWindow       = 1024
	windowPerWorker = 4
	fetchWait       = 5 * time.Second
	// busyFetchWait bounds a busy loop's fetch. A fetch holds its whole
	// request (slots and bytes) until it fills or expires, and one of a
	// slow partition (1000 msg/s over 16 partitions: ~60 msg/s each) asked
	// for its share of the window for up to fetchWait: the partitions that
	// became busy first took most of the window for seconds while the
	// others could only fetch one message per slot freed, each slot going
	// to a random waiter — keyed publish → callback p99 was 64 ms at
	// 1000 msg/s. Expiring busy fetches after 100 ms hands the unused
	// request back ten times a second (a pull request per 100 ms per busy
	// partition, nothing next to the messages); an idle loop still long
	// polls for fetchWait, on one slot. Measured with bench/messaging
	// -keys 100 at 1000 msg/s, alternating builds on the shared machine
	// (load 3.6–7): p99 21.5 / 7.8 / 147 ms before, 2.6 / 5.9 / 35 ms
	// after; CPU per message unchanged within the noise.
	busyFetchWait    = 100 * time.Millisecond
	unreachableRetry = 200 * time.Millisecond
)

// subscriber runs one subscription on one session.
type subscriber struct {
	m       *Manager
	spec    resource.SubscriptionSpec
	origin  string
	sess    *messaging.Session
	log     *slog.Logger
	url     string
	label   string // topic metric label
	timeout time.Duration
	initial time.Duration
	maxBack time.Duration
	window  int
	held    tracker
	bytes   *messaging.Budget // bytes pulled and not yet settled
	maxMsg  int64
	// busy counts the pull loops (the keyless one and one per held
	// partition) whose last fetch found messages: they share the window
	// and the byte budget. An idle loop waits for one message at a time,
	// on a slot of its own, so idle partitions hold nothing back.
	busy atomic.Int32
	// The topic's series, looked up once rather than per message.
	inFlight prometheus.Gauge
	acked    prometheus.Counter
	latency  prometheus.Observer
	batchN   prometheus.Observer // messages per callback
	lagMu    sync.Mutex
	lag      map[string]uint64 // per consumer
	lagSum   uint64
}

// item is a pulled message on its way to a worker; pt is its partition
// (nil: from the keyless consumer), key its ordering key.
type item struct {
	msg jetstream.Msg
	pt  *part
	key string
}

func newSubscriber(m *Manager, spec resource.SubscriptionSpec, origin string, sess *messaging.Session) *subscriber {
	initial, maxBack := spec.BackoffDurations()
	window := min(maxWindow, max(minWindow, windowPerWorker*spec.Concurrency))
	if b := spec.Batch; b != nil {
		// Room for every worker to fill a batch while its next one queues.
		window = min(maxBatchWindow, max(window, 2*spec.Concurrency*b.MaxMessages))
	}
	s := &subscriber{
		m: m, spec: spec, origin: origin, sess: sess,
		log:     m.log.With("topic", spec.Topic),
		url:     "http://" + m.cfg.AppAddr + spec.Path,
		label:   m.cfg.Metrics.Topic(spec.Topic),
		timeout: spec.TimeoutDuration(),
		initial: initial, maxBack: maxBack,
		window: window,
		held:   tracker{msgs: map[jetstream.Msg]time.Time{}},
		lag:    map[string]uint64{},
		maxMsg: int64(maxMessageBytes(m)),
	}
	mt := m.cfg.Metrics
	s.inFlight, s.latency = mt.InFlight.WithLabelValues(s.label), mt.Latency.WithLabelValues(s.label)
	s.acked = mt.Delivered.WithLabelValues(s.label, messaging.ResultAck)
	s.batchN = mt.CallbackBatch.WithLabelValues(s.label)
	// Every pull loop (keyless, one per partition) waits on a fetch room
	// for the largest message, so the budget must hold all of them at
	// once: HeldBytes, or more when messages may be large.
	s.bytes = messaging.NewBudget(max(messaging.HeldBytes, int64(partition.Count+2)*s.fetchLeast()))
	return s
}

// fetchLeast is the byte room a fetch needs: the largest message.
func (s *subscriber) fetchLeast() int64 { return s.maxMsg + 2*messaging.HeaderRoom }

// run sets the consumer up and consumes, starting over after any failure
// (broker restart, consumer deleted), until ctx ends.
func (s *subscriber) run(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for {
		cons, kv, err := s.setup(ctx)
		if err == nil {
			select {
			case <-s.m.cfg.AppReady:
			case <-ctx.Done():
				return
			}
			backoff = 250 * time.Millisecond
			err = s.consume(ctx, cons, kv)
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("subscription interrupted; starting over", "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *subscriber) setup(ctx context.Context) (jetstream.Consumer, jetstream.KeyValue, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	maxBytes := messaging.DefaultMaxMessageBytes
	if f := s.m.cfg.MaxMessageBytes; f != nil && f() > 0 {
		maxBytes = f()
	}
	if _, err := messaging.EnsureStream(ctx, s.sess.JS, maxBytes); err != nil {
		return nil, nil, err
	}
	kv, err := s.sess.JS.CreateOrUpdateKeyValue(ctx, messaging.LeaseBucketConfig())
	if err != nil {
		if kv, err = s.sess.JS.KeyValue(ctx, messaging.LeaseBucket); err != nil {
			return nil, nil, fmt.Errorf("partition lease bucket %s: %w", messaging.LeaseBucket, err)
		}
	}
	if err := messaging.EnsurePartitionConsumers(ctx, s.sess.JS, s.m.cfg.Service, s.spec, s.origin); err != nil {
		return nil, nil, err
	}
	cfg := messaging.ConsumerConfig(s.m.cfg.Service, s.spec, s.origin)
	cons, err := s.sess.JS.CreateOrUpdateConsumer(ctx, messaging.StreamName, cfg)
	if err != nil {
		// A consumer made with settings that cannot be changed in place:
		// use it as it is rather than not deliver at all.
		if c, gerr := s.sess.JS.Consumer(ctx, messaging.StreamName, cfg.Durable); gerr == nil {
			s.log.Warn("using the existing consumer as it is; its settings could not be updated", "consumer", cfg.Durable, "err", err)
			return c, kv, nil
		}
		return nil, nil, fmt.Errorf("consumer %s: %w", cfg.Durable, err)
	}
	return cons, kv, nil
}

// consume pulls as many messages as the window has room for, from the
// keyless consumer and from every partition this instance holds, and hands
// each to the worker its key hashes to (keyless: any worker). It returns
// when ctx ends (after in-flight deliveries finish, bounded by Grace) or
// the keyless consumer fails.
func (s *subscriber) consume(ctx context.Context, cons jetstream.Consumer, kv jetstream.KeyValue) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	hard, stopHard := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHard()
	n := s.spec.Concurrency
	slots := make(chan struct{}, s.window+1+partition.Count)
	keyless := make(chan item, s.window)
	var queues []chan item // batched callbacks: each worker's keys
	var keys *lanes        // one callback at a time: keys in delivery
	if s.spec.Batch != nil {
		queues = make([]chan item, n)
	} else {
		keys = newLanes(cap(slots))
	}
	var workers sync.WaitGroup
	for i := range n {
		workers.Add(1)
		if queues == nil {
			go func() {
				defer workers.Done()
				s.worker(ctx, hard, keys, keyless, slots)
			}()
			continue
		}
		queues[i] = make(chan item, s.window)
		go func() {
			defer workers.Done()
			s.batchWorker(ctx, hard, queues[i], keyless, slots)
		}()
	}
	progressDone := make(chan struct{})
	var progress sync.WaitGroup
	progress.Add(1)
	go func() {
		defer progress.Done()
		s.extend(progressDone)
	}()

	dispatch := func(it item) {
		s.held.add(it.msg)
		s.inFlight.Inc()
		it.key = it.msg.Headers().Get(messaging.HdrKey)
		switch {
		case it.key == "":
			keyless <- it
		case keys != nil:
			keys.add(it)
		default:
			queues[xxhash.Sum64String(it.key)%uint64(len(queues))] <- it
		}
	}
	pull := func(ctx context.Context, c jetstream.Consumer, pt *part) error {
		return s.pull(ctx, c, pt, slots, dispatch)
	}
	ps := &partitions{s: s, kv: kv, self: s.m.cfg.Instance, pull: pull, hard: hard,
		member: memberPrefix(s.m.cfg.Service, s.spec.Topic) + memberToken(s.m.cfg.Instance)}
	var owner sync.WaitGroup
	owner.Add(1)
	go func() {
		defer owner.Done()
		ps.run(ctx)
	}()
	err := pull(ctx, cons, nil)
	stop()
	owner.Wait() // no pull loop is left to send to the queues

	for _, q := range queues {
		close(q)
	}
	if keys != nil {
		close(keys.ready)
	}
	close(keyless)
	finished := make(chan struct{})
	go func() { workers.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(s.m.cfg.Grace):
		s.log.Warn("deliveries still in flight after the grace; cancelling them", "grace", s.m.cfg.Grace)
		stopHard()
		<-finished
	}
	ps.releaseAll()
	close(progressDone)
	progress.Wait()
	return err
}

// pull fetches from one consumer (a partition's when pt is set) until ctx
// ends or the consumer fails. While the consumer has messages, each fetch
// asks for this loop's share of the window and byte budget (shared with
// the other busy loops); once a fetch comes back empty, the loop waits for
// a single message, so the long poll of an idle consumer holds back one
// slot, not the window.
func (s *subscriber) pull(ctx context.Context, cons jetstream.Consumer, pt *part, slots chan struct{}, dispatch func(item)) error {
	idle := true
	defer func() {
		if !idle {
			s.busy.Add(-1)
		}
	}()
	for {
		share := 1
		if !idle {
			share = max(1, s.window/int(max(1, s.busy.Load())))
		}
		// Wait for one free slot, then take free ones up to the share.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		want := 1
	more:
		for want < share {
			select {
			case slots <- struct{}{}:
				want++
			default:
				break more
			}
		}
		// And bytes: enough for the largest message; a busy loop takes up
		// to half the budget shared among the busy loops, the rest stays
		// for the idle ones (each holds one message's worth, see newSubscriber).
		least := s.fetchLeast()
		most := least
		if !idle {
			most = max(least, s.bytes.Size()/int64(2*max(1, s.busy.Load())))
		}
		room, err := s.bytes.AcquireAll(ctx, least, most)
		if err != nil {
			for ; want > 0; want-- {
				<-slots
			}
			return nil
		}
		fctx, cancel := context.WithTimeout(ctx, fetchWait)
		expiry := jetstream.FetchContext(fctx)
		if !idle {
			// Not a context: the client would stop listening at its
			// deadline, only a few ms after the broker's expiry (90% of
			// it), and under load a message the broker sent in between
			// would be lost until AckWait — a keyed one then delivered
			// after newer ones. With FetchMaxWait the client waits for
			// the broker's expiry notice, which follows whatever it sent.
			// Stopping then waits for this fetch: at most busyFetchWait.
			expiry = jetstream.FetchMaxWait(busyFetchWait)
		}
		began := time.Now()
		batch, err := cons.Fetch(want, expiry, jetstream.FetchMaxBytes(int(min(room, math.MaxInt32))))
		got, used := 0, int64(0)
		if err == nil {
			for msg := range batch.Messages() {
				got++
				used += msgSize(msg)
				dispatch(item{msg: msg, pt: pt})
			}
			err = batch.Error()
		}
		cancel()
		s.bytes.Release(room - min(used, room))
		for range want - got {
			<-slots
		}
		switch {
		case got > 0 && idle:
			idle = false
			s.busy.Add(1)
		case got == 0 && !idle && (err == nil || errors.Is(err, context.DeadlineExceeded)):
			// A busy fetch that expired empty (the broker's expiry or,
			// first, ours): long poll again.
			idle = true
			s.busy.Add(-1)
		}
		if got == 0 && err == nil && time.Since(began) < 50*time.Millisecond {
			// An immediate empty answer (e.g. a message larger than the
			// room): do not spin.
			sleep(ctx, 50*time.Millisecond)
		}
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrBadRequest):
			return err
		default:
			// Disconnected, or the broker restarting: the client reconnects
			// by itself; pause rather than spin.
			s.log.Debug("fetch failed", "err", err)
			if !sleep(ctx, 250*time.Millisecond) {
				return nil
			}
		}
	}
}

// lanes hands keyed messages to the single-callback workers: a key's
// messages one at a time, in the order pulled, while any free worker takes
// the next key. A key in the map is in delivery at a worker, which goes on
// to the messages queued behind it (in order) before taking other work.
//
// Before, a key's messages went to the worker its hash picked, so keys
// sharing a worker waited for each other: 64 keys over 64 workers used
// about 40 of them, and one slow callback held up every key of its
// worker, not just its own. Measured with bench/messaging (flat out, 64
// publishers, alternating with the session-start build on the shared
// machine, load 2.2–5.5): publish → callback p99 38–77 ms against 74–443
// ms before (-keys 64 and -keys 100, 9 runs each), but received/s lower,
// median 4.4k against 5.7k: with every key delivered at once nothing
// queues, so every process pays a wake-up per message (CPU per message of
// all four processes up ≈ 20% in most pairs); the old dispatch's backlog
// was cheaper per message and slower for the keys stuck in it. At 1000
// msg/s no difference beyond the noise (quiet runs: p99 3.0–4.7 ms, one
// 7.4, against 2.7–5.2, one 11.6; of which 200 → callback 1.1–3.7 against
// 1.0–2.1). Batched callbacks keep worker-by-hash: a batch gathers its
// keys' messages from its own queue.
type lanes struct {
	ready chan item // the first message of a key not in delivery
	mu    sync.Mutex
	keys  map[string][]item // in delivery: the messages waiting behind
}

// newLanes: room is the most messages held at once (the pull loops' slots),
// so add never blocks.
func newLanes(room int) *lanes {
	return &lanes{ready: make(chan item, room), keys: map[string][]item{}}
}

func (l *lanes) add(it item) {
	l.mu.Lock()
	if q, busy := l.keys[it.key]; busy {
		l.keys[it.key] = append(q, it)
		l.mu.Unlock()
		return
	}
	l.keys[it.key] = nil
	l.mu.Unlock()
	l.ready <- it
}

// done ends the delivery of it and returns its key's next message, if one
// is waiting (the caller delivers it next).
func (l *lanes) done(it item) (item, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.keys[it.key]
	if len(q) == 0 {
		delete(l.keys, it.key)
		return item{}, false
	}
	next := q[0]
	q[0] = item{}
	l.keys[it.key] = q[1:]
	return next, true
}

func (s *subscriber) worker(ctx, hard context.Context, keys *lanes, keyless <-chan item, slots chan struct{}) {
	app := newAppConn(s.m.cfg.AppAddr)
	defer app.close()
	own := keys.ready
	for own != nil || keyless != nil {
		var it item
		var ok bool
		select {
		case it, ok = <-own:
			if !ok {
				own = nil
				continue
			}
		case it, ok = <-keyless:
			if !ok {
				keyless = nil
				continue
			}
		}
		for {
			s.one(ctx, hard, app, it, slots)
			if it.key == "" {
				break
			}
			if it, ok = keys.done(it); !ok {
				break
			}
		}
	}
}

// one delivers and settles a message, then frees what it held.
func (s *subscriber) one(ctx, hard context.Context, app *appConn, it item, slots chan struct{}) {
	switch {
	case it.pt == nil:
		s.handle(ctx, hard, app, it.msg, nil)
	case it.pt.begin():
		s.handle(ctx, it.pt.lost, app, it.msg, it.pt)
		it.pt.end()
	default:
		// The partition is no longer held here: its next holder
		// delivers the message again, in order.
	}
	s.bytes.Release(msgSize(it.msg))
	s.held.remove(it.msg)
	s.inFlight.Dec()
	<-slots
}

// setLag records one consumer's pending count; the gauge is their sum.
func (s *subscriber) setLag(consumer string, pending uint64) {
	s.lagMu.Lock()
	s.lagSum += pending - s.lag[consumer] // wraps correctly when it shrinks
	s.lag[consumer] = pending
	sum := s.lagSum
	s.lagMu.Unlock()
	s.m.cfg.Metrics.Lag.WithLabelValues(s.label).Set(float64(sum))
}

// handle settles one message: deliver it (retrying a keyed message in
// place so that later messages with its key wait), then ack, dead-letter
// or hand it back. Once ctx ends, messages not yet delivered are handed
// back at once. A message of a partition (pt set) is never handed back:
// the broker would redeliver it after newer ones. It is retried in place
// while the partition is held, and dropped when it no longer is; the
// partition's next holder delivers it again (see partitions.go).
func (s *subscriber) handle(ctx, hard context.Context, app *appConn, msg jetstream.Msg, pt *part) {
	giveBack := func(delay time.Duration) {
		switch {
		case pt != nil:
		case delay > 0:
			_ = msg.NakWithDelay(delay)
		default:
			_ = msg.Nak()
		}
	}
	if ctx.Err() != nil {
		giveBack(0)
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		s.log.Error("message without JetStream metadata; terminating it", "err", err)
		_ = msg.Term()
		return
	}
	h := msg.Headers()
	if f := h.Get(messaging.HdrReplayFor); f != "" && f != s.m.cfg.Service {
		_ = msg.Ack() // replayed for another subscriber of the topic
		return
	}
	s.setLag(meta.Consumer, meta.NumPending)
	key := h.Get(messaging.HdrKey)
	attempt := int(meta.NumDelivered)
	if attempt > s.spec.MaxDeliveries {
		s.deadLetter(ctx, hard, msg, meta, pt, attempt-1, "handed out more than maxDeliveries times without an answer (instances stopped mid-delivery)")
		return
	}
	var unreachableSince time.Time
	for {
		if pt != nil && !pt.holds() {
			return
		}
		v, reason, delivered := s.deliver(hard, app, msg, meta, attempt)
		if !delivered && pt != nil && !pt.holds() {
			return // the partition went elsewhere mid-delivery (see partitions.go)
		}
		if !delivered {
			// Nothing reached the app: not an attempt. Wait for it, but
			// (keyless) not for ever: after AckWait let another instance
			// try.
			if ctx.Err() != nil {
				giveBack(0)
				return
			}
			if unreachableSince.IsZero() {
				unreachableSince = time.Now()
				s.log.Warn("app not accepting deliveries; waiting", "url", s.url, "err", reason)
			}
			if pt == nil && time.Since(unreachableSince) > messaging.AckWait {
				giveBack(time.Second)
				return
			}
			if !sleep(ctx, unreachableRetry) {
				giveBack(0)
				return
			}
			continue
		}
		switch v {
		case Ack:
			s.ack(msg)
			return
		case DeadLetter:
			s.deadLetter(ctx, hard, msg, meta, pt, attempt, reason)
			return
		}
		if attempt >= s.spec.MaxDeliveries {
			s.deadLetter(ctx, hard, msg, meta, pt, attempt, fmt.Sprintf("%d attempts failed; last: %s", attempt, reason))
			return
		}
		s.m.cfg.Metrics.Delivered.WithLabelValues(s.label, messaging.ResultRetry).Inc()
		delay := messaging.Backoff(attempt, s.initial, s.maxBack)
		if key == "" && pt == nil {
			giveBack(delay)
			return
		}
		if !sleep(ctx, delay) {
			giveBack(0)
			return
		}
		attempt++
	}
}

// deliver POSTs the message to the app once. delivered is false when the
// app could not be reached at all (connection refused) or the sidecar is
// stopping.
func (s *subscriber) deliver(hard context.Context, app *appConn, msg jetstream.Msg, meta *jetstream.MsgMetadata, attempt int) (v Verdict, reason string, delivered bool) {
	h := msg.Headers()
	id := messageID(h)
	spans := s.m.cfg.Spans
	ctx := spans.Extract(hard, http.Header(h))
	ctx, span := spans.Start(ctx, "deliver "+s.spec.Topic, trace.SpanKindConsumer)
	if span.IsRecording() { // the attributes cost 7 allocations per message
		span.SetAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", s.spec.Topic),
			attribute.String("messaging.consumer.group.name", s.m.cfg.Service),
			attribute.String("messaging.message.id", id),
			attribute.Int("messaging.delivery.attempt", attempt),
			attribute.Int64("messaging.nats.stream.sequence", int64(meta.Sequence.Stream)),
		)
	}
	defer func() {
		if !span.IsRecording() {
			span.End()
			return
		}
		span.SetAttributes(attribute.String("weft.message.result", v.String()), attribute.Bool("weft.message.delivered", delivered))
		if v != Ack || !delivered {
			span.SetStatus(codes.Error, reason)
		}
		span.End()
	}()

	rh := make(http.Header, 12)
	ct := h.Get(messaging.HdrContentType)
	if ct == "" {
		ct = "application/octet-stream"
	}
	rh.Set("Content-Type", ct)
	rh.Set(messaging.HTTPMessageID, id)
	rh.Set(messaging.HTTPTopic, s.spec.Topic)
	rh.Set(messaging.HTTPAttempt, strconv.Itoa(attempt))
	rh.Set(messaging.HTTPSequence, strconv.FormatUint(meta.Sequence.Stream, 10))
	if k := h.Get(messaging.HdrKey); k != "" {
		rh.Set(messaging.HTTPKey, k)
	}
	if src := h.Get(messaging.HdrSource); src != "" {
		rh.Set(messaging.HTTPSource, src)
	}
	if ns, err := strconv.ParseInt(h.Get(messaging.HdrPublishedAt), 10, 64); err == nil {
		rh.Set(messaging.HTTPPublishedAt, time.Unix(0, ns).UTC().Format(time.RFC3339Nano))
	}
	for k, vs := range h {
		if len(k) > len(messaging.HTTPHeaderPrefix) && k[:len(messaging.HTTPHeaderPrefix)] == messaging.HTTPHeaderPrefix {
			rh[k] = vs
		}
	}
	spans.Inject(ctx, rh)

	s.batchN.Observe(1)
	status, body, err := app.post(ctx, s.spec.Path, rh, msg.Data(), time.Now().Add(s.timeout), MaxAnswerBytes)
	if err != nil {
		v, reason, delivered = s.callFailed(hard, err)
		return v, reason, delivered
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	v, reason = ParseAnswer(status, body)
	if v != Ack && reason != "" && status == http.StatusNotFound {
		reason += "; is " + s.spec.Path + " the subscription's path on the app?"
	}
	return v, reason, true
}

// callFailed reads a callback that got no answer: delivered is false when
// nothing reached the app (the sidecar stopping, the app not listening).
func (s *subscriber) callFailed(hard context.Context, err error) (v Verdict, reason string, delivered bool) {
	switch {
	case hard.Err() != nil:
		return Retry, "sidecar stopping", false
	case errors.Is(err, syscall.ECONNREFUSED):
		return Retry, "app not accepting connections on " + s.m.cfg.AppAddr, false
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Retry, fmt.Sprintf("no answer from the app within %s", s.timeout), true
	}
	return Retry, "delivery failed: " + err.Error(), true
}

// deadLetter publishes the message to the dead letter topic with why, then
// acks the original. If the dead letter cannot be stored, the original is
// handed back for later (a partition's: tried again in place while the
// partition is held): nothing is dropped.
func (s *subscriber) deadLetter(stop, ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, pt *part, attempts int, reason string) {
	for try := 1; ; try++ {
		err := s.storeDeadLetter(ctx, msg, meta, attempts, reason)
		if err == nil {
			return
		}
		s.log.Error("could not store the dead letter; the message will be redelivered", "id", messageID(msg.Headers()), "dead_letter_topic", s.spec.DeadLetterTopic, "err", err)
		delay := messaging.Backoff(try, s.initial, s.maxBack)
		if pt == nil {
			_ = msg.NakWithDelay(delay)
			return
		}
		if !sleep(stop, delay) || !pt.holds() {
			return
		}
	}
}

func (s *subscriber) storeDeadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, attempts int, reason string) error {
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	orig := msg.Headers()
	h := nats.Header{}
	for k, vs := range orig {
		if k == messaging.HdrReplayFor || k == messaging.HdrMsgID || len(k) > 5 && k[:5] == "Nats-" {
			continue
		}
		h[k] = vs
	}
	id := messageID(orig)
	// One dead letter per stored message and subscriber, even if this runs
	// twice (an instance dying between publish and ack).
	h.Set(messaging.HdrMsgID, "dlq:"+s.m.cfg.Service+":"+strconv.FormatUint(meta.Sequence.Stream, 10))
	h.Set(messaging.HdrID, id)
	h.Set(messaging.HdrDLQTopic, s.spec.Topic)
	h.Set(messaging.HdrDLQSubscriber, s.m.cfg.Service)
	h.Set(messaging.HdrDLQAttempts, strconv.Itoa(attempts))
	h.Set(messaging.HdrDLQReason, reason)
	h.Set(messaging.HdrDLQAt, time.Now().UTC().Format(time.RFC3339Nano))
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	dl := &nats.Msg{Subject: messaging.Subject(s.spec.DeadLetterTopic), Data: msg.Data(), Header: h}
	if _, err := s.sess.JS.PublishMsg(pctx, dl, jetstream.WithExpectStream(messaging.StreamName)); err != nil {
		return err
	}
	_ = msg.Ack()
	s.m.cfg.Metrics.Delivered.WithLabelValues(s.label, messaging.ResultDeadLetter).Inc()
	s.log.Warn("message dead-lettered", "id", id, "attempts", attempts, "dead_letter_topic", s.spec.DeadLetterTopic, "reason", reason)
	return nil
}

// extend tells the broker, for every message held longer than a third of
// AckWait, that it is still being worked on, so a slow app or a long
// backoff does not get it redelivered to another instance.
func (s *subscriber) extend(done <-chan struct{}) {
	every := messaging.AckWait / 3
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			for _, m := range s.held.due(now, every) {
				_ = m.InProgress()
			}
		}
	}
}

// tracker records when each held message was last reported in progress.
type tracker struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]time.Time
}

func (t *tracker) add(m jetstream.Msg) {
	t.mu.Lock()
	t.msgs[m] = time.Now()
	t.mu.Unlock()
}

func (t *tracker) remove(m jetstream.Msg) {
	t.mu.Lock()
	delete(t.msgs, m)
	t.mu.Unlock()
}

func (t *tracker) due(now time.Time, every time.Duration) []jetstream.Msg {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []jetstream.Msg
	for m, last := range t.msgs {
		if now.Sub(last) >= every {
			out = append(out, m)
			t.msgs[m] = now
		}
	}
	return out
}

// messageID is the message's own id (Weft-Id), or its dedup id for
// messages published straight to the broker.
func messageID(h nats.Header) string {
	if id := h.Get(messaging.HdrID); id != "" {
		return id
	}
	return h.Get(messaging.HdrMsgID)
}

// msgSize is what a held message counts against the byte budget.
func msgSize(m jetstream.Msg) int64 {
	n := int64(len(m.Data()) + len(m.Subject()) + len(m.Reply()))
	for k, vs := range m.Headers() {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

func maxMessageBytes(m *Manager) int {
	if f := m.cfg.MaxMessageBytes; f != nil && f() > 0 {
		return f()
	}
	return messaging.DefaultMaxMessageBytes
}
