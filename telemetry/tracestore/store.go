// Package tracestore is the control plane's embedded trace backend: an OTLP
// receiver (HTTP POST /v1/traces with a protobuf body, and the gRPC
// TraceService) that keeps the most recent traces in a bounded in-memory
// store, and the JSON views `weft traces` and `weft trace` read.
//
//	sidecar ──OTLP──▶ Receiver ──▶ Store (newest traces, bounded) ──▶ /api/v1/traces
//
// Every bound is fixed: traces, spans per trace, spans overall, attributes
// per span and the length of each value. When full, the oldest trace goes.
package tracestore

import (
	"container/list"
	"encoding/hex"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Defaults for Options.
const (
	DefaultMaxTraces        = 5000
	DefaultMaxSpans         = 100_000
	DefaultMaxSpansPerTrace = 1000
	maxAttributes           = 32
	maxValueLen             = 256
	maxNameLen              = 256
)

// Options bound a Store.
type Options struct {
	MaxTraces        int
	MaxSpans         int // over all traces
	MaxSpansPerTrace int
}

// The JSON API's wire types (GET /api/v1/traces, /api/v1/traces/{id}).
// Ids are lowercase hex as in W3C Trace Context. Fields are only added.
type (
	Span struct {
		SpanID       string         `json:"spanId"`
		ParentSpanID string         `json:"parentSpanId"` // "" for a root span
		Service      string         `json:"service"`
		Name         string         `json:"name"`
		Kind         string         `json:"kind"` // server, client, internal, producer, consumer
		Start        time.Time      `json:"start"`
		DurationMs   float64        `json:"durationMs"`
		Attributes   map[string]any `json:"attributes"`
		Status       string         `json:"status,omitempty"` // "error" when the span failed
		Instance     string         `json:"instance,omitempty"`
	}
	Trace struct {
		TraceID string `json:"traceId"`
		Spans   []Span `json:"spans"`
	}
	Summary struct {
		TraceID     string    `json:"traceId"`
		Start       time.Time `json:"start"`
		DurationMs  float64   `json:"durationMs"`
		Spans       int       `json:"spans"`
		RootService string    `json:"rootService"`
		RootName    string    `json:"rootName"`
		Services    []string  `json:"services"`
		Error       bool      `json:"error"`
	}
	TraceList struct {
		Traces []Summary `json:"traces"`
	}
)

// Store is safe for concurrent use.
type Store struct {
	opts Options

	mu     sync.Mutex
	traces map[[16]byte]*list.Element // → *entry
	order  *list.List                 // oldest first (by first span received)
	spans  int
	// dropped counts spans refused by a bound (for the control plane's log).
	dropped int64
}

type entry struct {
	id    [16]byte
	spans []Span
	ids   map[string]struct{} // span ids, to drop duplicates
}

// New returns an empty store.
func New(o Options) *Store {
	if o.MaxTraces <= 0 {
		o.MaxTraces = DefaultMaxTraces
	}
	if o.MaxSpans <= 0 {
		o.MaxSpans = DefaultMaxSpans
	}
	if o.MaxSpansPerTrace <= 0 {
		o.MaxSpansPerTrace = DefaultMaxSpansPerTrace
	}
	return &Store{opts: o, traces: map[[16]byte]*list.Element{}, order: list.New()}
}

// Add stores one span of trace id.
func (s *Store) Add(id [16]byte, sp Span) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.traces[id]
	if !ok {
		for s.order.Len() >= s.opts.MaxTraces || (s.spans >= s.opts.MaxSpans && s.order.Len() > 0) {
			s.evictOldestLocked()
		}
		el = s.order.PushBack(&entry{id: id, ids: map[string]struct{}{}})
		s.traces[id] = el
	}
	e := el.Value.(*entry)
	if len(e.spans) >= s.opts.MaxSpansPerTrace {
		s.dropped++
		return
	}
	if _, dup := e.ids[sp.SpanID]; dup {
		return
	}
	for s.spans >= s.opts.MaxSpans && s.order.Front() != el {
		s.evictOldestLocked()
	}
	if s.spans >= s.opts.MaxSpans {
		s.dropped++
		return
	}
	e.ids[sp.SpanID] = struct{}{}
	e.spans = append(e.spans, sp)
	s.spans++
}

func (s *Store) evictOldestLocked() {
	el := s.order.Front()
	if el == nil {
		return
	}
	e := el.Value.(*entry)
	s.order.Remove(el)
	delete(s.traces, e.id)
	s.spans -= len(e.spans)
}

// Len is the number of traces and spans held.
func (s *Store) Len() (traces, spans int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.Len(), s.spans
}

// Get returns the trace with the hex id, its spans ordered by start.
func (s *Store) Get(hexID string) (Trace, bool) {
	id, ok := ParseTraceID(hexID)
	if !ok {
		return Trace{}, false
	}
	s.mu.Lock()
	el, ok := s.traces[id]
	var spans []Span
	if ok {
		spans = slices.Clone(el.Value.(*entry).spans)
	}
	s.mu.Unlock()
	if !ok {
		return Trace{}, false
	}
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].Start.Before(spans[j].Start) })
	return Trace{TraceID: hex.EncodeToString(id[:]), Spans: spans}, true
}

// List returns summaries of the newest traces (by start), those touching
// service if it is not "", at most limit.
func (s *Store) List(service string, limit int) TraceList {
	if limit <= 0 {
		limit = 20
	}
	s.mu.Lock()
	out := make([]Summary, 0, min(limit*2, s.order.Len()))
	// Newest received first; a trace's start is close to when it arrived.
	for el := s.order.Back(); el != nil && len(out) < limit*2; el = el.Prev() {
		e := el.Value.(*entry)
		if service != "" && !touches(e, service) {
			continue
		}
		out = append(out, summarize(e))
	}
	s.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.After(out[j].Start) })
	if len(out) > limit {
		out = out[:limit]
	}
	return TraceList{Traces: out}
}

func touches(e *entry, service string) bool {
	for i := range e.spans {
		if e.spans[i].Service == service {
			return true
		}
	}
	return false
}

func summarize(e *entry) Summary {
	sum := Summary{TraceID: hex.EncodeToString(e.id[:]), Spans: len(e.spans), Services: []string{}}
	var start, end time.Time
	ids := make(map[string]bool, len(e.spans))
	for i := range e.spans {
		ids[e.spans[i].SpanID] = true
	}
	var root *Span
	for i := range e.spans {
		sp := &e.spans[i]
		spEnd := sp.Start.Add(time.Duration(sp.DurationMs * float64(time.Millisecond)))
		if start.IsZero() || sp.Start.Before(start) {
			start = sp.Start
		}
		if spEnd.After(end) {
			end = spEnd
		}
		if sp.Status == "error" {
			sum.Error = true
		}
		if !slices.Contains(sum.Services, sp.Service) {
			sum.Services = append(sum.Services, sp.Service)
		}
		// The root is the earliest span whose parent is not in the trace.
		if !ids[sp.ParentSpanID] && (root == nil || sp.Start.Before(root.Start)) {
			root = sp
		}
	}
	sort.Strings(sum.Services)
	sum.Start = start
	sum.DurationMs = float64(end.Sub(start)) / float64(time.Millisecond)
	if root != nil {
		sum.RootService, sum.RootName = root.Service, root.Name
	}
	return sum
}

// ParseTraceID parses 32 hex digits (any case).
func ParseTraceID(s string) ([16]byte, bool) {
	var id [16]byte
	if len(s) != 32 {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(strings.ToLower(s))); err != nil {
		return id, false
	}
	return id, id != [16]byte{}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
