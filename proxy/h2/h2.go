// Package h2 is the sidecar's native HTTP/2 forwarding engine: it serves
// the h2 connections the HTTP/1.1 engine (proxy/h1) hands over — h2c with
// prior knowledge, and h2 over TLS on the inbound — and forwards each
// stream as a stream on a pooled, multiplexed upstream h2 connection, with
// flow control end to end. A Router (proxy.H2Outbound, proxy.H2Inbound)
// decides where each request goes through the same request pipeline as
// HTTP/1.1; the engine only moves frames.
//
// Framing and HPACK are golang.org/x/net/http2's Framer and hpack. What is
// hand-written is the stream state machine and the forwarding: a stream's
// DATA goes from one connection's read loop into a small per-stream queue
// and from there straight into a DATA frame on the other connection, with
// no http.Request, no io.Pipe and no httputil.ReverseProxy copy loop in
// between — which is where net/http's server+transport pair spends most
// of its CPU (two full HTTP/2 implementations, header maps, goroutines per
// body). Flow control credit is returned to a sender only when the other
// side has taken the bytes, so a slow reader back-pressures its writer and
// a stream buffers at most its window.
package h2

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/proxy/h1"
)

// Errors passed to Router.Answered (wrapped around their cause) and in
// Result.Err.
var (
	// ErrRefused: the upstream took nothing of the request (dial failed,
	// REFUSED_STREAM, or a GOAWAY that did not cover the stream): it may
	// go anywhere again.
	ErrRefused = errors.New("h2: upstream refused the stream")
	// ErrUpstreamTimeout: no response head within Decision.HeaderTimeout.
	ErrUpstreamTimeout = errors.New("h2: upstream response head timeout")
	// ErrUpstreamReset: the upstream reset the stream or the connection
	// failed after the request was sent.
	ErrUpstreamReset = errors.New("h2: upstream reset the stream")
	// ErrDownstreamGone: the caller reset the stream or went away.
	ErrDownstreamGone = errors.New("h2: caller reset the stream")
	// ErrStreamIdle: the response body was idle for Decision.StreamIdle.
	ErrStreamIdle = errors.New("h2: upstream response body idle timeout")
	// ErrServerClosed is returned by Serve after Shutdown.
	ErrServerClosed = errors.New("h2: server closed")
)

// Router decides each request's fate. Route and Answered run on the
// stream's own goroutine and may block (a retry's backoff).
type Router interface {
	// Route fills d: an upstream address, a local answer (Addr ""), or a
	// Handler to serve the request with net/http semantics.
	Route(r *Request, d *Decision)
	// Answered reports a try's response head (resp) or failure (err, one
	// of the errors above wrapped); true means try again at d.Addr.
	Answered(r *Request, d *Decision, resp *Response, err error) (retry bool)
	// Finish is called once when the stream is done.
	Finish(r *Request, d *Decision, res *Result)
}

// Request is one downstream stream's request head. Fields are the regular
// (non-pseudo) fields, names lower-case as HTTP/2 has them.
type Request struct {
	Method, Scheme, Authority, Path string
	Fields                          []hpack.HeaderField
	RemoteAddr                      net.Addr
	// ContentLength is -1 when unknown; EndStream: no body follows.
	ContentLength int64
	EndStream     bool

	// Protocol is an extended CONNECT's :protocol (RFC 8441, "websocket"),
	// else "" (extconnect.go).
	Protocol string
	// grpc caches GRPC() for a head requestOf parsed (known): the
	// pipeline and the Routers ask several times per call, and each ask
	// was a walk over the fields (6% of the client sidecar's CPU at max).
	grpc, known bool
}

// Get returns the first value of the named field (case-insensitive), ""
// if none.
func (r *Request) Get(name string) string { return get(r.Fields, name) }

// GRPC reports a gRPC call.
func (r *Request) GRPC() bool {
	if r.known {
		return r.grpc
	}
	return isGRPC(r.Get("content-type"))
}

func isGRPC(contentType string) bool { return strings.HasPrefix(contentType, "application/grpc") }

// Response is an upstream's response head.
type Response struct {
	Status int
	Fields []hpack.HeaderField
	// EndStream: a head with no body (a gRPC trailers-only answer).
	EndStream bool
	At        time.Time
}

// Get returns the first value of the named field, "" if none.
func (r *Response) Get(name string) string { return get(r.Fields, name) }

func get(fs []hpack.HeaderField, name string) string {
	for i := range fs {
		if len(fs[i].Name) == len(name) && strings.EqualFold(fs[i].Name, name) {
			return fs[i].Value
		}
	}
	return ""
}

// Decision is the Router's choice for a request (and, between tries, for
// the next try).
type Decision struct {
	// Addr is the upstream to forward to; "" answers locally with Status,
	// Header and Body (TrailersOnly: Header in one HEADERS frame that ends
	// the stream, as a gRPC error answer is).
	Addr          string
	HeaderTimeout time.Duration
	// StreamIdle cuts a response whose body sends nothing for this long
	// (the policy's idleTimeout; 0: never): both streams are reset.
	StreamIdle   time.Duration
	Status       int
	Header       []hpack.HeaderField
	Body         []byte
	TrailersOnly bool
	// Handler, when set, serves the request instead (requests the engine
	// does not forward itself, e.g. the sidecar's own API).
	Handler http.Handler
	// HTTP1, when set, carries the request to Addr as HTTP/1.1 on this
	// client's pooled connections instead of as an h2 stream: the way to
	// an app that speaks HTTP/1.1 (h1upstream.go).
	HTTP1 *h1.Client
	// Set replaces or adds request fields for the upstream (names
	// lower-case); Del removes request fields; RespSet adds response
	// fields for the caller; RespDel removes response fields.
	Set, RespSet []hpack.HeaderField
	Del, RespDel []string
	// ReplayLimit is how much of the body to hold for a retry (0: none).
	ReplayLimit int
	// Unreplayable is set by the engine before Answered when the body was
	// not held whole.
	Unreplayable bool
	State        any
}

// Result is what happened to a request, for telemetry.
type Result struct {
	Status     int
	GRPCStatus string // "" when the answer carried none
	Err        error
	// HeadWritten: a response head went to the caller.
	HeadWritten                    bool
	ReqBytes, RespBytes            int64
	UpstreamStart, UpstreamHeaders time.Time
	End                            time.Time
}

// Limits bound what a connection may cost. Zero fields take defaults.
type Limits struct {
	// MaxConcurrentStreams is advertised to callers and enforced
	// (REFUSED_STREAM beyond it); default 250.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a decoded header block (HPACK bombs,
	// CONTINUATION floods); default 64 KiB.
	MaxHeaderListSize uint32
	// StreamWindow and ConnWindow are the receive windows: at most this
	// much of a stream's (a connection's) data is buffered; defaults
	// 256 KiB and 1 MiB.
	StreamWindow, ConnWindow int32
	// IdleTimeout closes a downstream connection with no stream for this
	// long; default 5m. UpstreamIdle the same for pooled upstreams; 90s.
	IdleTimeout, UpstreamIdle time.Duration
	DialTimeout               time.Duration // default 2s
}

// Defaults for zero Limits fields.
const (
	DefaultMaxConcurrentStreams = 250
	DefaultMaxHeaderListSize    = 64 << 10
	DefaultStreamWindow         = 256 << 10
	DefaultConnWindow           = 1 << 20
	DefaultIdleTimeout          = 5 * time.Minute
	DefaultUpstreamIdle         = 90 * time.Second
	DefaultDialTimeout          = 2 * time.Second
)

func (l Limits) withDefaults() Limits {
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if l.MaxHeaderListSize == 0 {
		l.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	if l.StreamWindow <= 0 {
		l.StreamWindow = DefaultStreamWindow
	}
	if l.ConnWindow <= 0 {
		l.ConnWindow = DefaultConnWindow
	}
	l.ConnWindow = max(l.ConnWindow, l.StreamWindow)
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.UpstreamIdle <= 0 {
		l.UpstreamIdle = DefaultUpstreamIdle
	}
	if l.DialTimeout <= 0 {
		l.DialTimeout = DefaultDialTimeout
	}
	return l
}

// initialWindow is RFC 9113's initial flow-control window.
const initialWindow = 65535

// maxFrame is the largest frame payload the engine sends or accepts
// (RFC 9113's default; a peer's larger SETTINGS_MAX_FRAME_SIZE is not
// used: 16 KiB frames already amortise the 9-byte header).
const maxFrame = 16 << 10

// codeOf maps an error to the RST_STREAM code that tells the other side.
func codeOf(err error) http2.ErrCode {
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code
	}
	var re resetError
	if errors.As(err, &re) {
		return re.code
	}
	if errors.Is(err, ErrDownstreamGone) {
		return http2.ErrCodeCancel
	}
	return http2.ErrCodeInternal
}

// resetError is a RST_STREAM received from a peer.
type resetError struct{ code http2.ErrCode }

func (e resetError) Error() string { return "stream reset: " + e.code.String() }
