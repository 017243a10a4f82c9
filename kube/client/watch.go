package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// EventType is a watch event's type.
type EventType string

// The watch event types.
const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	Bookmark EventType = "BOOKMARK"
	Error    EventType = "ERROR"
)

// Event is one watch event: the object added, changed or deleted; for a
// Bookmark, an object carrying only the resourceVersion reached; for an
// Error, a metav1.Status (see Err).
type Event struct {
	Type   EventType
	Object Object
}

// Err is the error an Error event carries (a *StatusError), nil for others.
func (e Event) Err() error {
	if e.Type != Error {
		return nil
	}
	code, _ := e.Object["code"].(int64)
	reason, _ := e.Object["reason"].(string)
	msg, _ := e.Object["message"].(string)
	return &StatusError{Code: int(code), Reason: reason, Message: msg}
}

// MaxEventBytes bounds one watch event as read from the server: an object
// is at most 1.5 MiB in etcd, so this leaves room for its encoding.
const MaxEventBytes = 16 << 20

// ErrEventTooLarge is the stream's error when one event exceeds its bound.
var ErrEventTooLarge = errors.New("watch event larger than the limit")

type rawEvent struct {
	Type   EventType `json:"type"`
	Object Object    `json:"object"`
}

// EventStream decodes a watch's stream of JSON events, each at most max
// bytes (counting what the decoder reads ahead).
type EventStream struct {
	body io.Closer
	lr   *budgetReader
	dec  *json.Decoder
	max  int64
}

// NewEventStream decodes the events of r, each at most max bytes.
func NewEventStream(r io.Reader, max int64) *EventStream {
	lr := &budgetReader{r: r}
	d := json.NewDecoder(lr)
	d.UseNumber()
	s := &EventStream{lr: lr, dec: d, max: max}
	if c, ok := r.(io.Closer); ok {
		s.body = c
	}
	return s
}

// Next returns the next event; io.EOF when the server ended the watch.
func (s *EventStream) Next() (Event, error) {
	s.lr.limit = s.dec.InputOffset() + s.max
	var ev rawEvent
	if err := s.dec.Decode(&ev); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, ErrEventTooLarge) {
			return Event{}, err
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Event{}, fmt.Errorf("watch stream cut in the middle of an event: %w", err)
		}
		return Event{}, fmt.Errorf("malformed watch event: %w", err)
	}
	switch ev.Type {
	case Added, Modified, Deleted, Bookmark, Error:
	default:
		return Event{}, fmt.Errorf("malformed watch event: type %q: want ADDED, MODIFIED, DELETED, BOOKMARK or ERROR", ev.Type)
	}
	if ev.Object == nil {
		return Event{}, fmt.Errorf("malformed watch event: %s without an object", ev.Type)
	}
	numbers(ev.Object)
	return Event(ev), nil
}

// Close ends the watch.
func (s *EventStream) Close() error {
	if s.body == nil {
		return nil
	}
	return s.body.Close()
}

// budgetReader reads from r until it has read limit bytes in all.
// It then fails with err (ErrEventTooLarge when nil).
type budgetReader struct {
	r     io.Reader
	n     int64
	limit int64
	err   error
}

func (b *budgetReader) Read(p []byte) (int, error) {
	left := b.limit - b.n
	if left <= 0 {
		if b.err != nil {
			return 0, b.err
		}
		return 0, ErrEventTooLarge
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}
