// Package h1 is the sidecar's HTTP/1.1 forwarding engine: it reads requests
// from a downstream connection, asks a Router where each one goes, and
// relays it over a pooled upstream connection, one goroutine per downstream
// connection doing the whole exchange synchronously. It sits where
// net/http's server, httputil.ReverseProxy and http.Transport sat on the
// data path, without their per-request allocations and goroutine handoffs;
// connections it does not handle (HTTP/2 prior knowledge, Upgrade,
// CONNECT) go to a Fallback, normally an http.Server on a HandoffListener.
//
// The package imports nothing from the rest of weft: the Router is where
// discovery, balancing, mesh errors and telemetry plug in.
package h1

import (
	"net"
	"net/http"
	"time"
)

// Limits bound what a peer can make the engine hold or wait for. They apply
// to downstream requests and to upstream responses alike: a misbehaving
// upstream must not make the sidecar allocate without bound either.
type Limits struct {
	MaxHeaderBytes     int           // request or response head, start line included; default 64 KiB
	MaxHeaders         int           // field lines per head (trailers count separately); default 100
	ReadHeaderTimeout  time.Duration // from the first byte of a request head to its end; default 30s
	IdleTimeout        time.Duration // keep-alive wait for the next request; default 5m
	UpstreamIdle       time.Duration // pooled upstream connection idle; default 90s
	MaxIdlePerUpstream int           // default 256
	DialTimeout        time.Duration // default 2s

	// ExpectContinueTimeout is how long a request with "Expect:
	// 100-continue" waits for the upstream's interim or final response
	// before its body is sent anyway; default 1s. Without it an upstream
	// that ignores Expect (waiting for a body that the client holds back
	// until it sees 100 Continue) would deadlock the exchange.
	ExpectContinueTimeout time.Duration

	// BodyTimeout bounds the wait for the next bytes of a request body
	// (and, with MinBodyRate, the whole body's pace); a body that stalls
	// longer is answered 408 and the connection closed. Zero: no bound.
	// Added for slow-POST clients, which a header timeout does not stop.
	BodyTimeout time.Duration
	// MinBodyRate, in bytes per second, is the slowest average a request
	// body may keep once its first BodyTimeout has passed (a body that
	// trickles a byte now and then never stalls for BodyTimeout). Zero: no
	// floor.
	MinBodyRate int
	// TunnelIdle closes an Upgrade or CONNECT tunnel after nothing has
	// moved either way for this long; default 1h.
	TunnelIdle time.Duration
	// WriteTimeout bounds a tunnel's write that makes no progress (a peer
	// that stops reading); default 60s. Responses are bounded by the
	// listener's connection (see package sidecar).
	WriteTimeout time.Duration
}

// Defaults for zero Limits fields.
const (
	DefaultMaxHeaderBytes        = 64 << 10
	DefaultMaxHeaders            = 100
	DefaultReadHeaderTimeout     = 30 * time.Second
	DefaultIdleTimeout           = 5 * time.Minute
	DefaultUpstreamIdle          = 90 * time.Second
	DefaultMaxIdlePerUpstream    = 256
	DefaultDialTimeout           = 2 * time.Second
	DefaultExpectContinueTimeout = time.Second
	DefaultTunnelIdle            = time.Hour
	DefaultWriteTimeout          = 60 * time.Second
)

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	def(&l.MaxHeaders, DefaultMaxHeaders)
	def(&l.MaxIdlePerUpstream, DefaultMaxIdlePerUpstream)
	defD(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	defD(&l.IdleTimeout, DefaultIdleTimeout)
	defD(&l.UpstreamIdle, DefaultUpstreamIdle)
	defD(&l.DialTimeout, DefaultDialTimeout)
	defD(&l.ExpectContinueTimeout, DefaultExpectContinueTimeout)
	defD(&l.TunnelIdle, DefaultTunnelIdle)
	defD(&l.WriteTimeout, DefaultWriteTimeout)
	return l
}

// Field is one header field line, name as received (not canonicalized).
type Field struct{ Name, Value []byte }

// Request is a parsed request head. Its slices alias the connection's read
// buffer and are valid during Route and Next only. Before the request body
// is read (which reuses that buffer), the engine copies Method and Host
// into per-connection storage, so in Finish Method and Host stay valid
// (until Finish returns) while Target and Fields are nil and Path returns
// nil. The scalar fields stay valid throughout. A Router that needs more in
// Finish copies it into Decision.State during Route.
type Request struct {
	Method []byte
	// Target is the request-target as received: origin-form ("/x?y"),
	// absolute-form ("http://orders/x"), "*" for OPTIONS.
	Target []byte
	// Host is the Host header's value, or for an absolute-form target the
	// target's authority (RFC 9112 §3.2.2: the authority wins).
	Host       []byte
	ProtoMinor int     // HTTP/1.<ProtoMinor>; 0 or 1
	Fields     []Field // in order, hop-by-hop ones included; read-only
	// ContentLength is the body length; -1 when chunked or when the request
	// has no Content-Length (then it has no body).
	ContentLength int64
	Chunked       bool
	// KeepAlive is what the client asked for: HTTP/1.1 unless "Connection:
	// close", HTTP/1.0 only with "Connection: keep-alive".
	KeepAlive  bool
	RemoteAddr net.Addr
	// Held is the body when the engine held it whole (Decision.ReplayLimit)
	// — set before the first try, valid until Finish returns — else nil
	// (e.g. for a Route's mirrored copy of the request).
	Held []byte
	// Start is Result.Start, when the head had been read: a Router's
	// Route takes its time from here rather than read the clock again
	// (a clock read is 70 ns on the bench VM, each hop read it ~12 times
	// per request).
	Start time.Time

	path []byte // origin-form path+query; see Path
}

// Get returns the value of the first field named name (ASCII
// case-insensitive), or nil.
func (r *Request) Get(name string) []byte {
	for i := range r.Fields {
		if equalFold(r.Fields[i].Name, name) {
			return r.Fields[i].Value
		}
	}
	return nil
}

// Path is the origin-form path and query: Target for an origin-form
// target, the part after the authority for an absolute-form one ("/" when
// that is empty), "*" for "OPTIONS *".
func (r *Request) Path() []byte { return r.path }

// Decision is what the Router wants done with one request. The engine
// keeps one per connection: before each Route it clears every field but
// State.
type Decision struct {
	// Addr is the upstream host:port; "" means answer locally with
	// Status, Header and Body.
	Addr string
	// Set holds fields to add to the forwarded request, replacing any
	// same-named ones (ASCII case-insensitive), e.g. x-weft-source or
	// traceparent. The engine only reads Set, until Finish returns, so a
	// Router may point it at arrays it reuses (kept in State). Set may
	// name Host (replacing the received one) but not a framing or
	// hop-by-hop field (Content-Length, Transfer-Encoding, Connection,
	// Keep-Alive, Proxy-Connection, TE, Upgrade): such a Set, or one with a
	// name or value that is not valid on the wire, fails the request with
	// ErrInvalidField rather than risk a smuggled or split request.
	Set []Field

	// The local answer, for Addr "" or for an engine error (see Result).
	// Status 0 with Addr "" answers 500. Content-Length is always the
	// engine's (len(Body)); Header must not hold framing fields.
	Status int
	Header []Field
	Body   []byte

	// HeaderTimeout, when positive, bounds the wait for the upstream's
	// response head once the request has been sent (a 504 with
	// ErrUpstreamTimeout when it expires). It is not a total request
	// timeout: bodies may stream for as long as they like. Added so the
	// outbound's per-destination timeout can be kept.
	HeaderTimeout time.Duration

	// ReplayLimit, when positive, makes the engine read a request body of
	// known length up to this many bytes whole before the first try, so
	// that a Retrier can have the request sent again after an upstream
	// answered or failed. A larger, chunked or 100-continue body streams
	// as before and is never sent twice.
	ReplayLimit int

	// IdleTimeout, when positive, cuts a response body that sends nothing
	// for this long (the connections close: the response is cut short).
	IdleTimeout time.Duration

	// RespSet holds fields added to the response sent downstream (after
	// the upstream's, replacing same-named ones), on forwarded and local
	// answers alike, e.g. a load report. The same rules as for Set apply.
	// A field with an empty Value only removes the upstream's same-named
	// fields (e.g. a load report meant for the sidecar, not the app).
	RespSet []Field

	// Direct, for a CONNECT request, makes the engine dial Addr and tunnel
	// to it at once, answering 200 itself, instead of forwarding the
	// CONNECT (the inbound's tunnel to its app). See Tunneler.
	Direct bool

	// Transport, when set, carries the request instead of a connection of
	// the engine's own to Addr (the URL's host): the way to an upstream
	// that speaks another protocol, e.g. an h2c-only app. It is net/http's
	// path — allocations, no Retrier — for conversion, not speed.
	Transport http.RoundTripper

	// State is the Router's per-request state, handed back in Next and
	// Finish. The engine never writes it except to set it to nil when a
	// connection starts, so a Router can reuse one object per connection
	// (allocation-free) instead of allocating per request.
	State any
}

// Result describes a finished exchange, for in-flight counts, metrics and
// tracing.
type Result struct {
	// Status is the final status sent downstream. When Err is set and
	// HeadWritten is false, it is the status the engine will answer with
	// unless Finish sets Decision.Status.
	Status int
	// ReqBytes counts request bytes read from downstream (head and body,
	// framing included); RespBytes counts bytes written downstream for this
	// exchange (interim responses included), not counting an error answer
	// written after Finish.
	ReqBytes, RespBytes int64
	// Times on the monotonic clock; zero when not reached. Start is when the
	// request head had been read, UpstreamStart when an upstream connection
	// was in hand, UpstreamHeaders when the final response head had been
	// read, End when the last bytes were handed to the downstream's socket
	// (just before Finish when nothing was written).
	Start, UpstreamStart, UpstreamHeaders, End time.Time
	// Err is nil on success. Otherwise it wraps the cause: a dial error
	// (errors.As *net.OpError with Op "dial"), ErrUpstreamClosed,
	// ErrUpstreamTimeout, ErrMalformedResponse, ErrDownstream (the client
	// went away or failed), ErrBadRequest (a malformed request body),
	// ErrInvalidField.
	Err error
	// Attempts counts upstream connections tried (pooled or dialled).
	Attempts int
	// HeadWritten is true once the final response head was sent
	// downstream; after that an error can only close the connection, and a
	// local answer set in Finish is not used. Added so a Router can tell.
	HeadWritten bool
	// GRPCStatus is the grpc-status the forwarded response carried, in
	// its head or (winning) its chunked trailer — a gRPC-Web answer's —
	// or "" (grpcstatus.go).
	GRPCStatus string
}

// Response is an upstream's final response head as a Retrier sees it;
// Fields alias the upstream connection's buffer, valid during the call.
type Response struct {
	Status int
	Fields []Field
	// At is when the head had been read (Result.UpstreamHeaders).
	At time.Time
}

// Get returns the value of the first field named name, or nil.
func (r *Response) Get(name string) []byte {
	for i := range r.Fields {
		if equalFold(r.Fields[i].Name, name) {
			return r.Fields[i].Value
		}
	}
	return nil
}

// Retrier is an optional Router capability: it sees every try's outcome
// before anything of it goes downstream — the final response head (resp
// set, err nil) or a failure before one (resp nil; a dial failure goes to
// Next instead). It returns true, with d.Addr (and d.HeaderTimeout) set
// for the next try, to have the request sent again; the engine then drops
// that response. The engine honours true only when the request can be
// replayed: no body, or one held whole under Decision.ReplayLimit.
// Otherwise the response is relayed (or the failure answered) as usual.
type Retrier interface {
	Answered(req *Request, d *Decision, resp *Response, err error) bool
}

// Handoffer is an optional Router capability: HandOff, called before
// Route, reports that req is to be served, with the rest of its
// connection, by the Server's Fallback (as an Upgrade is). A sidecar hands
// off the requests it answers itself (messaging's /v1/publish): its
// net/http handler then reads them straight from the app's connection,
// where forwarding them would cost a loopback hop and a second parse per
// request. The request's fields alias the read buffer, valid during the
// call.
type Handoffer interface {
	HandOff(req *Request) bool
}

// Router decides where requests go. Its methods are called from the
// connection's goroutine, never concurrently for one connection.
type Router interface {
	// Route fills d for req: an upstream address or a local answer.
	Route(req *Request, d *Decision)
	// Next is called when dialing d.Addr failed (nothing was sent); it may
	// set d.Addr to another address and return true to try it, or return
	// false. The Router is responsible for bounding the attempts.
	Next(req *Request, d *Decision, err error) bool
	// Finish is called once per routed request when the exchange is over.
	// When res.Err is set and res.HeadWritten is false, a Status set in d
	// here (with Header and Body) is the answer written downstream;
	// otherwise the engine writes its own (see Server).
	Finish(req *Request, d *Decision, res *Result)
}
