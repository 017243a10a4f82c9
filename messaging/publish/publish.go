// Package publish is the sidecar's publish endpoint: the app POSTs a
// message to http://127.0.0.1:<outbound>/v1/publish/<topic> and gets 200
// only once the broker has durably stored it. The body is the payload as
// is; Content-Type, the ordering key (X-Weft-Key), an idempotency key
// (X-Weft-Message-Id), the app's own headers (X-Msg-*) and the trace
// context travel with it as message headers.
package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/proxy"
)

// PathPrefix is where the endpoint is mounted on the outbound listener.
const PathPrefix = "/v1/publish/"

// Error codes, in the x-weft-error header and the JSON body.
const (
	CodeInvalidTopic      = "invalid_topic"
	CodeTooLarge          = "message_too_large"
	CodeBadRequest        = "bad_request"
	CodeBrokerUnavailable = "broker_unavailable"
	CodeBrokerTimeout     = "broker_timeout"
	CodeBrokerError       = "broker_error"
	CodeNotFound          = "not_found"
	CodeMethod            = "method_not_allowed"
	CodeBusy              = "too_many_in_flight"
	CodeDenied            = proxy.CodeDenied // a TopicPolicy does not list the service
)

// Limits on the request beyond the payload.
const (
	MaxKeyBytes       = 256
	MaxMessageIDBytes = 128
	DefaultTimeout    = 5 * time.Second
)

// Sessions is what the publisher needs of the broker connection.
type Sessions interface {
	Wait(ctx context.Context) (*messaging.Session, error)
}

var _ Sessions = (*messaging.Conn)(nil)

// Config configures a Publisher.
type Config struct {
	Conn Sessions
	// Source is the publishing service, recorded on every message.
	Source string
	// MaxMessageBytes returns the current payload limit (the control
	// plane's setting); nil or ≤ 0 means messaging.DefaultMaxMessageBytes.
	MaxMessageBytes func() int
	// Timeout bounds a publish: waiting for the broker connection and for
	// its acknowledgement (default 5s).
	Timeout time.Duration
	Metrics *messaging.Metrics // nil: not counted
	Spans   messaging.Spans    // nil: messaging.DefaultSpans()
	Logger  *slog.Logger

	// Authorize, when set, says whether Source may publish to a topic:
	// nil, an error wrapping messaging.ErrDenied (403 denied), or another
	// error (503: the policies are not known yet).
	Authorize func(ctx context.Context, topic string) error
}

// Publisher serves publishes. Safe for concurrent use.
type Publisher struct {
	cfg    Config
	log    *slog.Logger
	spans  messaging.Spans
	budget *messaging.Budget // bytes of publishes in flight

	mu  sync.Mutex // serialises replacing cur
	cur atomic.Pointer[pubSession]
}

// New returns a Publisher.
func New(cfg Config) *Publisher {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Spans == nil {
		cfg.Spans = messaging.DefaultSpans()
	}
	p := &Publisher{cfg: cfg, log: cfg.Logger, spans: cfg.Spans, budget: messaging.NewBudget(messaging.HeldBytes)}
	if cfg.Metrics != nil {
		cfg.Metrics.SetPublishAcksPending(p.acksPending)
	}
	return p
}

// acksPending is the number of messages sent to the broker whose ack has
// not come yet, on the current session.
func (p *Publisher) acksPending() int {
	if cur := p.cur.Load(); cur != nil {
		return cur.js.PublishAsyncPending()
	}
	return 0
}

// Result is the JSON answer to a successful publish.
type Result struct {
	ID       string `json:"id"`
	Topic    string `json:"topic"`
	Sequence uint64 `json:"sequence"`
	// Duplicate: a message with this id was already stored within the
	// dedup window; this one was dropped.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Error is a publish that failed, with the HTTP status it maps to.
type Error struct {
	Status  int
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func (e *Error) write(w http.ResponseWriter) {
	(&proxy.MeshError{Status: e.Status, Code: e.Code, Message: e.Message, Err: e.Err}).Write(w)
}

// ServeHTTP serves POST /v1/publish/{topic} and POST
// /v1/publish-batch/{topic}.
func (p *Publisher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if topic, ok := strings.CutPrefix(r.URL.Path, BatchPrefix); ok {
		p.ServeBatch(w, r, topic)
		return
	}
	topic, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	if !ok {
		(&Error{Status: http.StatusNotFound, Code: CodeNotFound,
			Message: fmt.Sprintf("the sidecar serves POST %s<topic> on this address; %s is not a route", PathPrefix, r.URL.Path)}).write(w)
		return
	}
	p.ServeTopic(w, r, topic)
}

// ServeTopic publishes the request's body to topic.
func (p *Publisher) ServeTopic(w http.ResponseWriter, r *http.Request, topic string) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST")
		(&Error{Status: http.StatusMethodNotAllowed, Code: CodeMethod, Message: "publish with POST"}).write(w)
		return
	}
	res, err := p.publishRequest(w, r, topic)
	if err != nil {
		var pe *Error
		if !errors.As(err, &pe) {
			pe = &Error{Status: http.StatusInternalServerError, Code: CodeBrokerError, Message: "publish failed", Err: err}
		}
		if p.cfg.Metrics != nil {
			p.cfg.Metrics.PublishFailed.WithLabelValues(p.cfg.Metrics.Topic(labelTopic(topic, pe)), pe.Code).Inc()
		}
		if pe.Status >= 500 {
			p.log.Warn("publish failed", "topic", topic, "err", err)
		}
		pe.write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(res)
}

// authorize applies the topic's TopicPolicy, if Config.Authorize is set.
func (p *Publisher) authorize(ctx context.Context, topic string) error {
	if p.cfg.Authorize == nil {
		return nil
	}
	err := p.cfg.Authorize(ctx, topic)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, messaging.ErrDenied):
		p.log.Info("publish denied", "topic", topic, "service", p.cfg.Source, "err", err)
		return &Error{Status: http.StatusForbidden, Code: CodeDenied, Message: err.Error()}
	}
	return &Error{Status: http.StatusServiceUnavailable, Code: CodeBrokerUnavailable, Message: err.Error()}
}

// An invalid topic is not a label value: it could be anything.
func labelTopic(topic string, e *Error) string {
	if e.Code == CodeInvalidTopic {
		return "invalid"
	}
	return topic
}

func (p *Publisher) maxBytes() int {
	if p.cfg.MaxMessageBytes != nil {
		if n := p.cfg.MaxMessageBytes(); n > 0 {
			return n
		}
	}
	return messaging.DefaultMaxMessageBytes
}

func (p *Publisher) publishRequest(w http.ResponseWriter, r *http.Request, topic string) (Result, error) {
	if err := messaging.ValidateTopic(topic); err != nil {
		return Result{}, &Error{Status: http.StatusBadRequest, Code: CodeInvalidTopic, Message: err.Error()}
	}
	if err := p.authorize(r.Context(), topic); err != nil {
		return Result{}, err
	}
	max := p.maxBytes()
	if r.ContentLength > int64(max) {
		return Result{}, tooLarge(r.ContentLength, max)
	}
	hold, err := p.hold(r, int64(max))
	if err != nil {
		return Result{}, err
	}
	defer p.budget.Release(hold)
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(max)+1))
	if err != nil {
		return Result{}, &Error{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: "reading the message body", Err: err}
	}
	if len(body) > max {
		return Result{}, tooLarge(-1, max)
	}
	if o, ok := p.cfg.Conn.(interface{ Off() bool }); ok && o.Off() {
		// Fail at once, and without a span: nothing was attempted.
		return Result{}, &Error{Status: http.StatusServiceUnavailable, Code: CodeBrokerUnavailable, Message: messaging.ErrMessagingOff.Error()}
	}
	hdr, err := Headers(r.Header)
	if err != nil {
		return Result{}, &Error{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: err.Error()}
	}
	parent := p.spans.Extract(r.Context(), r.Header)
	return p.Publish(parent, topic, body, hdr)
}

// hold takes the bytes of r's body from the budget of publishes in
// flight (bounding their memory): a body of unknown length may be as
// large as max. The caller releases them.
func (p *Publisher) hold(r *http.Request, max int64) (int64, error) {
	n := max
	if r.ContentLength >= 0 {
		n = r.ContentLength
	}
	wctx, cancel := context.WithTimeout(r.Context(), p.cfg.Timeout)
	defer cancel()
	if err := p.budget.Acquire(wctx, n); err != nil {
		return 0, &Error{Status: http.StatusServiceUnavailable, Code: CodeBusy,
			Message: fmt.Sprintf("publishes in flight hold the sidecar's %d bytes for %s; retry later", messaging.HeldBytes, p.cfg.Timeout)}
	}
	return n, nil
}

func tooLarge(n int64, max int) *Error {
	msg := fmt.Sprintf("message is larger than the %d bytes allowed (broker.maxMessageBytes)", max)
	if n >= 0 {
		msg = fmt.Sprintf("message is %d bytes, more than the %d allowed (broker.maxMessageBytes)", n, max)
	}
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: msg}
}

// Headers turns a publish request's headers into message headers:
// Content-Type, X-Weft-Key, X-Weft-Message-Id (or a new id) and the app's
// X-Msg-* headers, bounded.
func Headers(in http.Header) (nats.Header, error) {
	h := nats.Header{}
	if ct := in.Get("Content-Type"); ct != "" {
		if len(ct) > 256 {
			return nil, errors.New("Content-Type is longer than 256 bytes")
		}
		h.Set(messaging.HdrContentType, ct)
	}
	if k := in.Get(messaging.HTTPKey); k != "" {
		if len(k) > MaxKeyBytes || !printable(k) {
			return nil, fmt.Errorf("%s must be at most %d printable bytes", messaging.HTTPKey, MaxKeyBytes)
		}
		h.Set(messaging.HdrKey, k)
	}
	id := in.Get(messaging.HTTPMessageID)
	if id == "" {
		id = nuid.Next()
	} else if len(id) > MaxMessageIDBytes || !printable(id) || strings.ContainsRune(id, ' ') {
		return nil, fmt.Errorf("%s must be at most %d printable bytes without spaces", messaging.HTTPMessageID, MaxMessageIDBytes)
	}
	h.Set(messaging.HdrMsgID, id)
	h.Set(messaging.HdrID, id)
	n, size := 0, 0
	for k, vs := range in {
		if !strings.HasPrefix(k, messaging.HTTPHeaderPrefix) {
			continue
		}
		for _, v := range vs {
			n++
			size += len(k) + len(v)
			if !printable(v) {
				return nil, fmt.Errorf("header %s: value must be printable", k)
			}
			h.Add(k, v)
		}
	}
	if n > messaging.MaxAppHeaders || size > messaging.MaxAppHeaderBytes {
		return nil, fmt.Errorf("%d %s* headers of %d bytes: at most %d headers and %d bytes", n, messaging.HTTPHeaderPrefix, size, messaging.MaxAppHeaders, messaging.MaxAppHeaderBytes)
	}
	return h, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// Publish stores one message (hdr as built by Headers) and returns once the
// broker has acknowledged it. The publish is a span in ctx's trace, and
// that span's context travels in the message.
func (p *Publisher) Publish(ctx context.Context, topic string, body []byte, hdr nats.Header) (Result, error) {
	out := p.PublishAll(ctx, topic, []Message{{Body: body, Header: hdr}})
	return out[0].Result, out[0].Err
}

// Message is one message of PublishAll: its payload and its headers as
// built by Headers.
type Message struct {
	Body   []byte
	Header nats.Header
}

// Outcome is what became of one message of PublishAll: stored (Err nil,
// Result set) or not, or not known (a broker timeout).
type Outcome struct {
	Result
	Err error
}

// PublishAll stores msgs on topic, in order, and returns once the broker
// has acknowledged or refused each of them (or Timeout passed). The
// messages are sent back to back on the broker connection without waiting
// for each other's acks (JetStream async publish): the connection carries
// one message after the other, so the stream stores them in the order
// given, and every ack is waited for before PublishAll returns, so an
// Outcome without Err means the broker has stored the message. Concurrent
// calls share the connection's window of acks in flight.
func (p *Publisher) PublishAll(ctx context.Context, topic string, msgs []Message) []Outcome {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	out := make([]Outcome, len(msgs))
	spans := make([]trace.Span, len(msgs))
	sends := make([]*nats.Msg, len(msgs))
	for i, m := range msgs {
		mctx, span := p.spans.Start(ctx, "publish "+topic, trace.SpanKindProducer)
		span.SetAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", topic),
			attribute.String("messaging.message.id", m.Header.Get(messaging.HdrMsgID)),
			attribute.Int("messaging.message.body.size", len(m.Body)),
		)
		spans[i] = span
		sends[i] = p.message(mctx, topic, m.Body, m.Header)
		out[i].ID, out[i].Topic = m.Header.Get(messaging.HdrMsgID), topic
	}
	p.store(ctx, sends, out)
	var published prometheus.Counter
	if m := p.cfg.Metrics; m != nil {
		label := m.Topic(topic)
		published = m.Published.WithLabelValues(label)
		m.PublishBatch.WithLabelValues(label).Observe(float64(len(msgs)))
	}
	for i, span := range spans {
		if err := out[i].Err; err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(attribute.Int64("messaging.nats.stream.sequence", int64(out[i].Sequence)), attribute.Bool("messaging.duplicate", out[i].Duplicate))
			if published != nil && !out[i].Duplicate {
				published.Inc()
			}
		}
		span.End()
	}
	return out
}

// message is the broker message for one publish, with Weft's headers and
// the trace context of ctx.
func (p *Publisher) message(ctx context.Context, topic string, body []byte, hdr nats.Header) *nats.Msg {
	if p.cfg.Source != "" {
		hdr.Set(messaging.HdrSource, p.cfg.Source)
	}
	hdr.Set(messaging.HdrPublishedAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	if hdr.Get(messaging.HdrID) == "" {
		hdr.Set(messaging.HdrID, hdr.Get(messaging.HdrMsgID))
	}
	p.spans.Inject(ctx, http.Header(hdr))
	return &nats.Msg{Subject: messaging.SubjectFor(topic, hdr.Get(messaging.HdrKey)), Data: body, Header: hdr}
}

// store sends msgs and waits for their acks, filling out (Topic and ID
// already set).
func (p *Publisher) store(ctx context.Context, msgs []*nats.Msg, out []Outcome) {
	fail := func(i int, e error) {
		for ; i < len(out); i++ {
			if out[i].Err == nil {
				out[i].Err = e
			}
		}
	}
	sess, js, err := p.session(ctx)
	if err != nil {
		fail(0, &Error{Status: http.StatusServiceUnavailable, Code: CodeBrokerUnavailable, Message: "the message was not stored", Err: err})
		return
	}
	limit := sess.NC.MaxPayload()
	todo := make([]int, 0, len(msgs))
	for i, m := range msgs {
		if n := int64(len(m.Data) + headerSize(m.Header)); limit > 0 && n > limit {
			out[i].Err = &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
				Message: fmt.Sprintf("message and headers are %d bytes, more than the broker's max_payload %d", n, limit)}
			continue
		}
		todo = append(todo, i)
	}
	for try := 0; len(todo) > 0; try++ {
		futs := make([]jetstream.PubAckFuture, len(todo))
		for j, i := range todo {
			wait := time.Until(deadline(ctx))
			if wait <= 0 {
				out[i].Err = classify(context.DeadlineExceeded)
				continue
			}
			// No retries inside the client: a retried message would be
			// stored after the ones sent behind it. A missing stream is
			// handled below, once, for the whole batch.
			futs[j], err = js.PublishMsgAsync(msgs[i], jetstream.WithExpectStream(messaging.StreamName),
				jetstream.WithRetryAttempts(0), jetstream.WithStallWait(wait))
			if err != nil {
				out[i].Err = classify(err)
			}
		}
		var again []int
		for j, i := range todo {
			if futs[j] == nil {
				continue
			}
			ack, err := awaitAck(ctx, futs[j])
			switch {
			case err == nil:
				out[i].Sequence, out[i].Duplicate, out[i].Err = ack.Sequence, ack.Duplicate, nil
			case try == 0 && (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)):
				again = append(again, i)
			default:
				out[i].Err = classify(err)
			}
		}
		if len(again) == 0 {
			return
		}
		// No stream yet (a fresh external broker): create it, once, and
		// send again what it refused.
		if _, serr := messaging.EnsureStream(ctx, js, p.maxBytes()); serr != nil {
			for _, i := range again {
				out[i].Err = classify(jetstream.ErrNoStreamResponse)
			}
			return
		}
		todo = again
	}
}

func deadline(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(DefaultTimeout)
	}
	return d
}

// awaitAck waits for the broker's answer to one async publish.
func awaitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pubSession is a broker session with the publisher's own JetStream
// context: async publishes with a bounded window of acks in flight, each
// given up after the publisher's timeout (so an ack that never comes
// does not hold a slot for ever).
type pubSession struct {
	sess *messaging.Session
	js   jetstream.JetStream
}

// MaxAcksInFlight bounds the messages a sidecar has sent to the broker and
// not yet seen acknowledged; a publish beyond it waits for room (within
// its timeout).
const MaxAcksInFlight = 4096

func (p *Publisher) session(ctx context.Context) (*messaging.Session, jetstream.JetStream, error) {
	sess, err := p.cfg.Conn.Wait(ctx)
	if err != nil {
		return nil, nil, err
	}
	if cur := p.cur.Load(); cur != nil && cur.sess == sess {
		return sess, cur.js, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.cur.Load(); cur != nil && cur.sess == sess {
		return sess, cur.js, nil
	}
	js, err := jetstream.New(sess.NC, jetstream.WithPublishAsyncMaxPending(MaxAcksInFlight), jetstream.WithPublishAsyncTimeout(p.cfg.Timeout))
	if err != nil {
		return nil, nil, err
	}
	p.cur.Store(&pubSession{sess: sess, js: js})
	return sess, js, nil
}

func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// classify maps a broker error onto the endpoint's error codes.
func classify(err error) *Error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: "the broker refused the message's size", Err: err}
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: "the stream refused the message's size", Err: err}
	case errors.As(err, &apiErr):
		return &Error{Status: http.StatusBadGateway, Code: CodeBrokerError, Message: "the broker refused the message", Err: err}
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeBusy,
			Message: fmt.Sprintf("%d messages are waiting for the broker's ack; retry later", MaxAcksInFlight), Err: err}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return &Error{Status: http.StatusGatewayTimeout, Code: CodeBrokerTimeout,
			Message: "no acknowledgement from the broker in time; the message may or may not be stored (retrying with the same X-Weft-Message-Id is safe)", Err: err}
	}
	return &Error{Status: http.StatusServiceUnavailable, Code: CodeBrokerUnavailable, Message: "the message was not stored", Err: err}
}
