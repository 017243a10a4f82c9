package publish

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/proxy"
)

// BatchPrefix is where the batch endpoint is mounted: POST
// /v1/publish-batch/{topic} with one message per line (NDJSON), stored in
// order; see docs/messaging.md. A path of its own rather than a header on
// /v1/publish, so an app's single publishes stay exactly as they were
// (any body, any Content-Type).
const BatchPrefix = "/v1/publish-batch/"

// Limits on a batch.
const (
	MaxBatchMessages = 1000
	MaxBatchBytes    = 16 << 20
)

// BatchLine is one line of a batch: the message's payload (data, base64,
// or text, UTF-8) and what a single publish carries in headers.
type BatchLine struct {
	Data        []byte            `json:"data,omitempty"`
	Text        *string           `json:"text,omitempty"`
	Key         string            `json:"key,omitempty"`
	ID          string            `json:"id,omitempty"`
	ContentType string            `json:"contentType,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
}

// BatchResult is the answer to a batch: one entry per line, in order.
type BatchResult struct {
	// Error and Message are set when a message was not stored (or may not
	// have been: broker_timeout); the status is then the first failed
	// message's.
	Error   string         `json:"error,omitempty"`
	Message string         `json:"message,omitempty"`
	Topic   string         `json:"topic"`
	Results []BatchOutcome `json:"results"`
}

// BatchOutcome is one message of a batch: stored (sequence set) or not
// (error set).
type BatchOutcome struct {
	ID        string `json:"id"`
	Sequence  uint64 `json:"sequence,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Error     string `json:"error,omitempty"`
	Message   string `json:"message,omitempty"`
}

// ErrBatchMessageTooLarge is a batch line whose payload is over the limit.
var ErrBatchMessageTooLarge = errors.New("over the size limit")

// ParseBatch reads a batch body: at most MaxBatchMessages lines (blank
// ones skipped), each a BatchLine whose payload is at most maxMessage bytes
// and whose key, id and headers pass the checks of a single publish.
// Nothing is published from a batch that does not parse.
func ParseBatch(body []byte, maxMessage int) ([]Message, error) {
	var out []Message
	for n := 1; len(body) > 0; n++ {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if len(out) == MaxBatchMessages {
			return nil, fmt.Errorf("more than %d messages in one batch", MaxBatchMessages)
		}
		m, err := parseLine(line, maxMessage)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, errors.New("empty batch: send one JSON message per line")
	}
	return out, nil
}

func parseLine(line []byte, maxMessage int) (Message, error) {
	var l BatchLine
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&l); err != nil {
		return Message{}, fmt.Errorf("not a message object (data or text, key, id, contentType, headers): %w", err)
	}
	if d.More() {
		return Message{}, errors.New("more than one JSON value on the line")
	}
	body := l.Data
	if l.Text != nil {
		if l.Data != nil {
			return Message{}, errors.New("data and text both set: give the payload once")
		}
		body = []byte(*l.Text)
	}
	if len(body) > maxMessage {
		return Message{}, fmt.Errorf("%w: message is %d bytes, more than the %d allowed (broker.maxMessageBytes)", ErrBatchMessageTooLarge, len(body), maxMessage)
	}
	in := http.Header{}
	if l.ContentType != "" {
		in.Set("Content-Type", l.ContentType)
	}
	if l.Key != "" {
		in.Set(messaging.HTTPKey, l.Key)
	}
	if l.ID != "" {
		in.Set(messaging.HTTPMessageID, l.ID)
	}
	if len(l.Headers) > messaging.MaxAppHeaders {
		return Message{}, fmt.Errorf("%d headers: at most %d", len(l.Headers), messaging.MaxAppHeaders)
	}
	for k, v := range l.Headers {
		ck := http.CanonicalHeaderKey(k)
		if !strings.HasPrefix(ck, messaging.HTTPHeaderPrefix) || len(ck) == len(messaging.HTTPHeaderPrefix) || !validName(ck) {
			return Message{}, fmt.Errorf("header %q: a message carries only %s<name> headers", k, messaging.HTTPHeaderPrefix)
		}
		in.Add(ck, v)
	}
	hdr, err := Headers(in)
	if err != nil {
		return Message{}, err
	}
	return Message{Body: body, Header: hdr}, nil
}

// validName: a header name is a token (RFC 9110 §5.1), so it can travel
// as a NATS header and come back as an HTTP one.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// ServeBatch publishes the lines of the request's body to topic, in order:
// 200 once the broker has stored every one of them; otherwise the status
// of the first message that was not stored, with every message's outcome.
func (p *Publisher) ServeBatch(w http.ResponseWriter, r *http.Request, topic string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		(&Error{Status: http.StatusMethodNotAllowed, Code: CodeMethod, Message: "publish a batch with POST"}).write(w)
		return
	}
	msgs, release, err := p.readBatch(r, topic)
	defer release()
	if err != nil {
		var pe *Error
		if !errors.As(err, &pe) {
			pe = &Error{Status: http.StatusInternalServerError, Code: CodeBrokerError, Message: "publish failed", Err: err}
		}
		if p.cfg.Metrics != nil {
			p.cfg.Metrics.PublishFailed.WithLabelValues(p.cfg.Metrics.Topic(labelTopic(topic, pe)), pe.Code).Inc()
		}
		pe.write(w)
		return
	}
	out := p.PublishAll(p.spans.Extract(r.Context(), r.Header), topic, msgs)
	res := BatchResult{Topic: topic, Results: make([]BatchOutcome, len(out))}
	status := http.StatusOK
	for i, o := range out {
		res.Results[i] = BatchOutcome{ID: o.ID, Sequence: o.Sequence, Duplicate: o.Duplicate}
		if o.Err == nil {
			continue
		}
		pe := asError(o.Err)
		res.Results[i].Error, res.Results[i].Message = pe.Code, pe.text()
		if p.cfg.Metrics != nil {
			p.cfg.Metrics.PublishFailed.WithLabelValues(p.cfg.Metrics.Topic(topic), pe.Code).Inc()
		}
		if status == http.StatusOK {
			status = pe.Status
			res.Error = pe.Code
			res.Message = fmt.Sprintf("message %d of %d (id %s) was not stored: %s; the results say which were", i+1, len(out), o.ID, pe.text())
			if pe.Status >= 500 {
				p.log.Warn("batch publish failed", "topic", topic, "message", i+1, "err", o.Err)
			}
		}
	}
	if res.Error != "" {
		w.Header().Set(proxy.HeaderError, res.Error)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(res)
}

// readBatch checks and reads a batch request; release gives back the
// bytes it holds of the publisher's budget (call it once the batch is
// settled).
func (p *Publisher) readBatch(r *http.Request, topic string) ([]Message, func(), error) {
	none := func() {}
	if err := messaging.ValidateTopic(topic); err != nil {
		return nil, none, &Error{Status: http.StatusBadRequest, Code: CodeInvalidTopic, Message: err.Error()}
	}
	// The same TopicPolicy check as a single publish: a batch is no way
	// round it.
	if err := p.authorize(r.Context(), topic); err != nil {
		return nil, none, err
	}
	if r.ContentLength > MaxBatchBytes {
		return nil, none, batchTooLarge()
	}
	hold, err := p.hold(r, MaxBatchBytes)
	if err != nil {
		return nil, none, err
	}
	release := func() { p.budget.Release(hold) }
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBatchBytes+1))
	if err != nil {
		return nil, release, &Error{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: "reading the batch", Err: err}
	}
	if len(body) > MaxBatchBytes {
		return nil, release, batchTooLarge()
	}
	msgs, err := ParseBatch(body, p.maxBytes())
	if err != nil {
		code, status := CodeBadRequest, http.StatusBadRequest
		if errors.Is(err, ErrBatchMessageTooLarge) {
			code, status = CodeTooLarge, http.StatusRequestEntityTooLarge
		}
		return nil, release, &Error{Status: status, Code: code, Message: "batch refused, nothing published: " + err.Error()}
	}
	if o, ok := p.cfg.Conn.(interface{ Off() bool }); ok && o.Off() {
		return nil, release, &Error{Status: http.StatusServiceUnavailable, Code: CodeBrokerUnavailable, Message: messaging.ErrMessagingOff.Error()}
	}
	return msgs, release, nil
}

func batchTooLarge() *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
		Message: fmt.Sprintf("a batch is at most %d bytes; send several", MaxBatchBytes)}
}

func asError(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeBrokerError, Message: "publish failed", Err: err}
}

// text is the error's message with its cause.
func (e *Error) text() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}
