// Package accesslog writes one JSON line per request a sidecar proxies
// (--access-log PATH, or - for standard output). The proxy hands each
// finished request's Entry to Log, which never blocks: entries go through a
// bounded queue to one writer goroutine, and are dropped (and counted) when
// the writer cannot keep up.
//
// Fields of each line (omitted when empty or unknown):
//
//	time                 start of the request, RFC 3339 with nanoseconds, UTC
//	reporter             "client" (the caller's sidecar) or "server" (the callee's)
//	source_service       calling service
//	destination_service called service ("unknown" if not registered)
//	method, authority, path, protocol   of the request (path without the query)
//	response_code        status sent to the caller (0: the caller went away first)
//	grpc_status          the grpc-status trailer, for gRPC
//	weft_error           x-weft-error of a response the mesh produced (see README)
//	duration_ms          request start to response end, as this sidecar saw it
//	upstream_ms          of which waiting on the upstream (callee's sidecar or app)
//	request_bytes        request Content-Length, when known
//	response_bytes       response body bytes sent to the caller
//	upstream_instance    instance id the request went to (client reporter)
//	upstream_address     its address
//	trace_id, span_id    this sidecar's span, when the request is traced
//	request_id           the x-request-id header, when present
package accesslog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Entry is one request. Strings are copied by value into the queue.
type Entry struct {
	Time             time.Time
	Reporter         string
	Source           string
	Destination      string
	Method           string
	Authority        string
	Path             string
	Protocol         string
	Code             int
	GRPCStatus       string
	WeftError        string
	Duration         time.Duration
	Upstream         time.Duration
	RequestBytes     int64 // -1 unknown
	ResponseBytes    int64
	UpstreamInstance string
	UpstreamAddress  string
	TraceID          string
	SpanID           string
	RequestID        string
}

// Bounds on what one line may hold, so a hostile path cannot make huge lines.
const (
	maxPath  = 2048
	maxField = 256
)

// DefaultQueue is the number of entries waiting for the writer.
const DefaultQueue = 8192

// Logger is safe for concurrent use.
type Logger struct {
	q       chan Entry
	out     io.Writer
	closer  io.Closer
	once    sync.Once
	log     *slog.Logger
	dropped atomic.Int64
	drops   prometheus.Counter
}

// Open opens dest ("-" for standard output, else a file appended to).
// Run must be called to write anything.
func Open(dest string, queue int, log *slog.Logger) (*Logger, error) {
	if dest == "" {
		return nil, errors.New("--access-log: empty destination")
	}
	if queue <= 0 {
		queue = DefaultQueue
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Logger{q: make(chan Entry, queue), log: log,
		drops: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_access_log_dropped_total",
			Help: "Access log lines dropped because the writer could not keep up."})}
	if dest == "-" {
		l.out = os.Stdout
		return l, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--access-log: %w", err)
	}
	l.out, l.closer = f, f
	return l, nil
}

// New returns a Logger writing to w (tests, embedding).
func New(w io.Writer, queue int) *Logger {
	l, _ := Open("-", queue, nil)
	l.out = w
	return l
}

// Collector is the dropped-lines counter, for the sidecar's registry.
func (l *Logger) Collector() prometheus.Collector { return l.drops }

// Dropped is how many entries were dropped.
func (l *Logger) Dropped() int64 { return l.dropped.Load() }

// Log queues e; it never blocks.
func (l *Logger) Log(e *Entry) {
	select {
	case l.q <- *e:
	default:
		l.dropped.Add(1)
		l.drops.Inc()
	}
}

// Run writes queued entries until ctx is done, then writes what is left
// and closes the file.
func (l *Logger) Run(ctx context.Context) error {
	bw := bufio.NewWriterSize(l.out, 64<<10)
	defer l.Close()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 0, 1024)
	var werr error
	write := func(e *Entry) {
		buf = Append(buf[:0], e)
		if _, err := bw.Write(buf); err != nil && werr == nil {
			werr = err
			l.log.Error("access log write failed", "err", err)
		}
	}
	for {
		select {
		case e := <-l.q:
			write(&e)
		case <-tick.C:
			_ = bw.Flush()
		case <-ctx.Done():
			for {
				select {
				case e := <-l.q:
					write(&e)
				default:
					return bw.Flush()
				}
			}
		}
	}
}

// Close closes the file; Run does it when it returns.
func (l *Logger) Close() {
	l.once.Do(func() {
		if l.closer != nil {
			l.closer.Close()
		}
	})
}

// Append appends e as one JSON line.
func Append(b []byte, e *Entry) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = field(b, "reporter", e.Reporter, maxField)
	b = field(b, "source_service", e.Source, maxField)
	b = field(b, "destination_service", e.Destination, maxField)
	b = field(b, "method", e.Method, maxField)
	b = field(b, "authority", e.Authority, maxField)
	b = field(b, "path", e.Path, maxPath)
	b = field(b, "protocol", e.Protocol, maxField)
	b = append(b, `,"response_code":`...)
	b = strconv.AppendInt(b, int64(e.Code), 10)
	b = field(b, "grpc_status", e.GRPCStatus, maxField)
	b = field(b, "weft_error", e.WeftError, maxField)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, ms(e.Duration), 'f', 3, 64)
	b = append(b, `,"upstream_ms":`...)
	b = strconv.AppendFloat(b, ms(e.Upstream), 'f', 3, 64)
	if e.RequestBytes >= 0 {
		b = append(b, `,"request_bytes":`...)
		b = strconv.AppendInt(b, e.RequestBytes, 10)
	}
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendInt(b, e.ResponseBytes, 10)
	b = field(b, "upstream_instance", e.UpstreamInstance, maxField)
	b = field(b, "upstream_address", e.UpstreamAddress, maxField)
	b = field(b, "trace_id", e.TraceID, maxField)
	b = field(b, "span_id", e.SpanID, maxField)
	b = field(b, "request_id", e.RequestID, maxField)
	return append(b, "}\n"...)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func field(b []byte, name, v string, limit int) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, `":`...)
	return appendString(b, v, limit)
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string, cut to limit bytes (on a rune
// boundary) with "…" when longer; invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string, limit int) []byte {
	cut := false
	if len(s) > limit {
		s, cut = s[:limit], true
		// Do not split the last rune.
		i := len(s) - 1
		for j := 0; i > 0 && j < utf8.UTFMax && !utf8.RuneStart(s[i]); j++ {
			i--
		}
		if !utf8.FullRuneInString(s[i:]) {
			s = s[:i]
		}
	}
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	if cut {
		b = append(b, "…"...)
	}
	return append(b, '"')
}
