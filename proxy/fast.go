package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/pipeline"
	"github.com/weftmesh/weft/proxy/h1"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/metrics"
)

// The fast path: plain HTTP/1.1 requests are served by proxy/h1, a
// purpose-built forwarding engine that allocates nothing per request,
// through the routers below; everything else (h2c and gRPC, Upgrade,
// CONNECT) is handed to the net/http path (Outbound, Inbound) on the same
// listener. Both paths run every request through one pipeline (package
// pipeline), so routing, retries, breakers and errors are the same.

// FastOutbound routes the app's HTTP/1.1 calls for the h1 engine: a thin
// adapter from the engine's Router and Retrier callbacks to the request
// pipeline (Start, Try, Answered, End).
type FastOutbound struct {
	o      *Outbound
	source []byte
}

var (
	_ h1.Router  = (*FastOutbound)(nil)
	_ h1.Retrier = (*FastOutbound)(nil)
)

// Fast returns the fast-path router sharing o's pipeline, telemetry and
// counters.
func (o *Outbound) Fast() *FastOutbound {
	return &FastOutbound{o: o, source: []byte(o.source)}
}

// fastState is one connection's per-request state, reused across requests.
type fastState struct {
	call    pipeline.Call
	req     h1Request
	outcome pipeline.Outcome
	local   bool
	weftErr string
	path    string // for spans and the access log only (the engine empties the target before Finish)
	set     []h1.Field
	tel     *telemetry.Fast
	// mirror is the copy to send with the held body at Finish (nil: none).
	mirror *mirrorCopy
}

var fieldSource = []byte(HeaderSource)

func (f *FastOutbound) state(d *h1.Decision) *fastState {
	st, _ := d.State.(*fastState)
	if st == nil {
		st = &fastState{set: make([]h1.Field, 0, 4), tel: f.o.tel.NewFast()}
		d.State = st
	}
	st.local, st.weftErr, st.path, st.mirror = false, "", "", nil
	st.call = pipeline.Call{}
	st.set = st.set[:0]
	return st
}

// h1Request adapts the engine's request to pipeline.Request. Its strings
// alias the connection's buffer (unsafe.String, no copy: the fast path
// allocates nothing per request); the pipeline does not keep them.
type h1Request struct{ r *h1.Request }

var _ pipeline.Request = (*h1Request)(nil)

func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func (q *h1Request) Method() string            { return methodString(q.r.Method) }
func (q *h1Request) Authority() string         { return bytesString(q.r.Host) }
func (q *h1Request) Path() string              { return bytesString(q.r.Path()) }
func (q *h1Request) Header(name string) string { return bytesString(q.r.Get(name)) }
func (q *h1Request) RemoteIP() string          { return pipeline.RemoteIP(q.r.RemoteAddr) }

// GRPC is false: gRPC needs HTTP/2, which the net/http path serves.
func (q *h1Request) GRPC() bool { return false }

func (q *h1Request) Replayable(limit int) bool {
	r := q.r
	if !r.Chunked && r.ContentLength <= 0 {
		return true
	}
	return !r.Chunked && r.ContentLength <= int64(limit) && r.Get("Expect") == nil
}

var _ h1.Handoffer = (*FastOutbound)(nil)

// HandOff implements h1.Handoffer: requests for the sidecar itself go to
// the net/http path on the same connection, which serves them with the
// Local handler (Outbound.ServeHTTP), rather than over a loopback hop.
// Measured with bench/messaging: see messaging/publish.
func (f *FastOutbound) HandOff(req *h1.Request) bool {
	return f.o.local != nil && isLocalHostBytes(hostOnly(req.Host))
}

// Route implements h1.Router.
func (f *FastOutbound) Route(req *h1.Request, d *h1.Decision) {
	f.o.Requests.Add(1)
	st := f.state(d)
	host := hostOnly(req.Host)
	if isLocalHostBytes(host) {
		// HandOff took it when there is a Local handler and a Fallback
		// to serve it; otherwise nothing here answers it.
		st.local = true
		st.fail(d, &MeshError{Status: http.StatusNotFound, Code: CodeBadRequest, Message: "nothing is served on the sidecar's own address"})
		return
	}
	st.req.r = req
	now := req.Start
	if now.IsZero() {
		now = time.Now()
	}
	c := &st.call
	if e := f.o.pipe.Start(c, &st.req, now); e != nil {
		if c.Service != "" {
			st.begin(f.o, req, c.Service, c.Dest != nil && c.Dest.Exists, now)
		}
		st.fail(d, e)
		return
	}
	st.begin(f.o, req, c.Service, true, now)
	if !st.try(f.o.pipe, d, now) {
		return
	}
	d.ReplayLimit = c.ReplayLimit()
	d.IdleTimeout = c.Policy.IdleTimeout
	st.set = append(st.set, h1.Field{Name: fieldSource, Value: f.source})
	if st.tel != nil {
		st.set = appendTraceFields(st.set, st.tel)
	}
	d.Set = st.set
	d.RespSet = stripLoad[:]
	if c.MirrorAddr != "" && !isConnect(req) {
		f.mirror(st, req, d)
	}
}

// mirror sends the Route's copy of req: at once without a body; with one
// of at most the retry buffer limit, held whole (ReplayLimit), at Finish.
func (f *FastOutbound) mirror(st *fastState, req *h1.Request, d *h1.Decision) {
	c := &st.call
	switch limit := c.MirrorLimit(); {
	case !req.Chunked && req.ContentLength <= 0:
		f.o.mirror.sendCopy(copyH1(c.Service, req, c.MirrorAddr, st.set), nil)
	case !req.Chunked && req.ContentLength <= int64(limit) && req.Get("Expect") == nil:
		d.ReplayLimit = max(d.ReplayLimit, limit)
		st.mirror = copyH1(c.Service, req, c.MirrorAddr, st.set)
	default:
		f.o.mirror.skip(c.Service)
	}
}

// stripLoad removes the callee's load report from the answer: this
// sidecar consumed it (Answered), and the app has no use for it.
var stripLoad = [1]h1.Field{{Name: []byte(balancer.LoadHeader)}}

// try starts the pipeline's next try, pointing d at it; false when the
// pipeline answered instead.
func (st *fastState) try(p *pipeline.Pipeline, d *h1.Decision, now time.Time) bool {
	addr, timeout, e := p.Try(&st.call, now)
	if e != nil {
		st.call.Err = e
		st.fail(d, e)
		return false
	}
	d.Addr, d.HeaderTimeout = addr, timeout
	return true
}

var fieldTraceparent = []byte("traceparent")

// appendTraceFields adds the trace headers for the next hop: a new trace's
// traceparent without allocating, or a recorded span's (the SDK's header,
// converted).
func appendTraceFields(set []h1.Field, tel *telemetry.Fast) []h1.Field {
	tel.Inject()
	if tp := tel.Traceparent(); tp != nil {
		return append(set, h1.Field{Name: fieldTraceparent, Value: tp})
	}
	for k, v := range tel.Out {
		if len(v) > 0 {
			set = append(set, h1.Field{Name: []byte(k), Value: []byte(v[0])})
		}
	}
	return set
}

// begin starts the request's telemetry (client side).
func (st *fastState) begin(o *Outbound, req *h1.Request, dst string, known bool, now time.Time) {
	if st.tel == nil {
		return
	}
	for _, fl := range req.Fields {
		st.tel.TraceField(fl.Name, fl.Value)
	}
	if !known {
		dst = metrics.Unknown
	}
	st.tel.Begin(metrics.Client, methodString(req.Method), o.source, dst, now)
	if st.tel.WantsStrings() {
		st.path = pathOnly(req.Path())
	}
}

// pathOnly is the path without its query, as the access log records it.
func pathOnly(p []byte) string {
	if i := bytes.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return string(p)
}

func (st *fastState) fail(d *h1.Decision, e *MeshError) {
	d.Addr = ""
	d.Status = e.Status
	d.Header, d.Body = meshErrorAnswer(e)
	st.weftErr = e.Code
}

// Next implements h1.Router: a refused connection goes to the pipeline,
// which tries another instance (nothing was sent).
func (f *FastOutbound) Next(req *h1.Request, d *h1.Decision, err error) bool {
	st := d.State.(*fastState)
	if st.local || st.call.Endpoint == nil {
		return false
	}
	st.outcome = pipeline.Outcome{Failure: pipeline.FailConnect, Err: err}
	return f.again(st, d, time.Time{})
}

// Answered implements h1.Retrier: every try's response head or failure
// goes through the pipeline, which may want the request sent again.
func (f *FastOutbound) Answered(req *h1.Request, d *h1.Decision, resp *h1.Response, err error) bool {
	st := d.State.(*fastState)
	if st.local || st.call.Endpoint == nil {
		return false
	}
	o := &st.outcome
	*o = pipeline.Outcome{}
	now := time.Time{}
	switch {
	case resp != nil:
		now = resp.At
		o.Status = resp.Status
		o.WeftError = bytesString(resp.Get(HeaderError))
		o.Load = resp.Get(balancer.LoadHeader)
		if gs := resp.Get("grpc-status"); gs != nil {
			// A gRPC-Web trailers-only answer, as the other engines read
			// a head's grpc-status.
			if n, err := strconv.Atoi(bytesString(gs)); err == nil {
				o.HasGRPC, o.GRPCStatus = true, n
			}
		}
	case errors.Is(err, h1.ErrUpstreamTimeout):
		o.Failure, o.Err = pipeline.FailTimeout, err
	default:
		o.Failure, o.Err = pipeline.FailReset, err
	}
	return f.again(st, d, now)
}

// again hands the try's outcome to the pipeline (now: when it came; zero
// for the present) and starts the next try if the pipeline wants one.
func (f *FastOutbound) again(st *fastState, d *h1.Decision, now time.Time) bool {
	p := f.o.pipe
	if now.IsZero() {
		now = time.Now()
	}
	retry, wait := p.Answered(&st.call, &st.outcome, now)
	st.outcome.WeftError, st.outcome.Load = "", nil // they alias the upstream's buffer
	if !retry {
		return false
	}
	if wait > 0 {
		time.Sleep(wait) // this request's own goroutine: nothing else waits on it
	}
	return st.try(p, d, time.Now())
}

// Finish implements h1.Router.
func (f *FastOutbound) Finish(req *h1.Request, d *h1.Decision, res *h1.Result) {
	st := d.State.(*fastState)
	if st.local {
		return
	}
	c := &st.call
	if res.Err != nil && !res.HeadWritten && c.Dest != nil {
		var op *net.OpError
		switch {
		case h1.BodyTimedOut(res.Err):
			st.fail(d, BodyTimeoutError())
		case errors.Is(res.Err, h1.ErrBadRequest), errors.Is(res.Err, h1.ErrDownstream):
		case c.Err != nil:
			st.fail(d, c.Err)
		case errors.As(res.Err, &op) && op.Op == "dial":
			st.fail(d, &MeshError{Status: http.StatusServiceUnavailable, Code: CodeConnectFailed, Service: c.Service,
				Message: fmt.Sprintf("could not reach an instance of %q", c.Service), Err: res.Err})
		case errors.Is(res.Err, h1.ErrUpstreamTimeout):
			st.fail(d, &MeshError{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout, Service: c.Service,
				Message: fmt.Sprintf("no response within %s", c.Policy.Timeout)})
		default:
			st.fail(d, &MeshError{Status: http.StatusBadGateway, Code: CodeUpstreamReset, Service: c.Service,
				Message: "the upstream failed the request", Err: res.Err})
		}
		res.Status = d.Status
	}
	if st.mirror != nil {
		if req.Held != nil && int64(len(req.Held)) == req.ContentLength {
			f.o.mirror.sendCopy(st.mirror, req.Held)
		} else {
			f.o.mirror.skip(c.Service)
		}
		st.mirror = nil
	}
	f.o.pipe.End(c)
	if st.tel != nil && c.Service != "" {
		end(st.tel, st.weftErr, st.path, req, res, c.Last)
	}
}

// FastInbound routes other sidecars' HTTP/1.1 calls to the app.
type FastInbound struct {
	in *Inbound
}

var _ h1.Router = (*FastInbound)(nil)

// Fast returns the inbound's fast-path router.
func (in *Inbound) Fast() *FastInbound { return &FastInbound{in: in} }

type inState struct {
	weftErr string
	path    string
	tel     *telemetry.Fast
	set     []h1.Field
	load    []byte
	respSet [1]h1.Field
	tracked bool   // LoadTracker told of this request
	scratch []byte // the authorization stage's path buffer
	req     h1Request
}

var fieldLoad = []byte(balancer.LoadHeader)

// Route implements h1.Router.
func (f *FastInbound) Route(req *h1.Request, d *h1.Decision) {
	f.in.Requests.Add(1)
	st, _ := d.State.(*inState)
	if st == nil {
		st = &inState{tel: f.in.Telemetry.NewFast()}
		d.State = st
	}
	st.weftErr = ""
	d.Addr = f.in.appAddr
	d.Direct = isConnect(req) // a tunnel to the app's port (fasttunnel.go)
	if f.in.h2App {
		d.Transport = f.in.h2 // HTTP/1.1 to h2c, by net/http's transport
	}
	if f.in.Load != nil {
		// Every answer to the caller carries this instance's load.
		st.load = f.in.Load(st.load[:0])
		st.respSet[0] = h1.Field{Name: fieldLoad, Value: st.load}
		d.RespSet = st.respSet[:]
	}
	if st.tracked = f.in.LoadTracker != nil; st.tracked {
		f.in.LoadTracker.Begin()
	}
	if st.tel != nil {
		src := metrics.Unknown
		for _, fl := range req.Fields {
			if !st.tel.TraceField(fl.Name, fl.Value) && h1.EqualFold(fl.Name, fieldSource) && metrics.ValidName(string(fl.Value)) {
				src = string(fl.Value)
			}
		}
		now := req.Start
		if now.IsZero() {
			now = time.Now()
		}
		st.tel.Begin(metrics.Server, methodString(req.Method), src, "", now)
		st.path = ""
		if st.tel.WantsStrings() {
			st.path = pathOnly(req.Path())
		}
		// The app's outbound calls continue this hop's span.
		st.set = appendTraceFields(st.set[:0], st.tel)
	} else {
		st.set = st.set[:0]
	}
	peer, deny := f.in.authorize(req.RemoteAddr, req.Method, authzPath(req), req, &st.scratch)
	if deny != nil {
		d.Addr, d.Status = "", deny.Status
		d.Header, d.Body = meshErrorAnswer(deny)
		st.weftErr = deny.Code
		return
	}
	// After authorization: a denied request takes no token.
	st.req.r = req
	if e := f.limitedH1(&st.req, peer); e != nil {
		d.Addr, d.Status = "", e.Status
		d.Header, d.Body = meshErrorAnswer(e)
		st.weftErr = e.Code
		return
	}
	var id []byte
	if peer != nil {
		id = peer.PrincipalBytes
	}
	st.set = append(st.set, h1.Field{Name: fieldPeerIdentity, Value: id})
	d.Set = st.set
}

// Next implements h1.Router: there is one app.
func (f *FastInbound) Next(*h1.Request, *h1.Decision, error) bool { return false }

// Finish implements h1.Router.
func (f *FastInbound) Finish(req *h1.Request, d *h1.Decision, res *h1.Result) {
	st := d.State.(*inState)
	if st.tracked {
		if !res.UpstreamHeaders.IsZero() && !res.UpstreamStart.IsZero() {
			f.in.LoadTracker.Latency(res.UpstreamHeaders.Sub(res.UpstreamStart))
		}
		f.in.LoadTracker.End()
	}
	if res.Err != nil && !res.HeadWritten {
		var op *net.OpError
		if h1.BodyTimedOut(res.Err) {
			e := BodyTimeoutError()
			d.Status = e.Status
			d.Header, d.Body = meshErrorAnswer(e)
			st.weftErr = e.Code
			res.Status = d.Status
		} else if errors.As(res.Err, &op) && op.Op == "dial" {
			e := &MeshError{Status: http.StatusServiceUnavailable, Code: CodeAppUnavailable, Service: string(hostOnly(req.Host)),
				Message: fmt.Sprintf("the app at %s is not accepting connections", f.in.appAddr)}
			d.Status = e.Status
			d.Header, d.Body = meshErrorAnswer(e)
			st.weftErr = e.Code
			res.Status = d.Status
		}
	}
	if st.tel != nil {
		end(st.tel, st.weftErr, st.path, req, res, nil)
	}
}

func end(tel *telemetry.Fast, weftErr, path string, req *h1.Request, res *h1.Result, ep *balancer.Endpoint) {
	e := telemetry.FastEnd{Status: res.Status, End: res.End, WeftError: weftErr, GRPCStatus: res.GRPCStatus,
		ReqBytes: res.ReqBytes, RespBytes: res.RespBytes}
	if e.End.IsZero() {
		e.End = time.Now()
	}
	if !res.UpstreamStart.IsZero() {
		e.Upstream = e.End.Sub(res.UpstreamStart)
		if !res.UpstreamHeaders.IsZero() {
			// The relay of the response body after its head is the
			// sidecar's work; the wait for the head is the upstream's.
			e.Upstream = res.UpstreamHeaders.Sub(res.UpstreamStart)
		}
	}
	if tel.WantsStrings() {
		e.Method, e.Host, e.Path = string(req.Method), string(req.Host), path
		if ep != nil {
			e.PeerID, e.PeerAddr = ep.ID, ep.Address
		}
	}
	tel.End(&e)
}

// meshErrorAnswer renders a mesh error as the engine's local answer.
func meshErrorAnswer(e *MeshError) ([]h1.Field, []byte) {
	rec := &bodyRecorder{h: http.Header{}}
	e.Write(rec)
	fields := make([]h1.Field, 0, len(rec.h))
	for k, v := range rec.h {
		fields = append(fields, h1.Field{Name: []byte(k), Value: []byte(v[0])})
	}
	return fields, rec.body
}

type bodyRecorder struct {
	h    http.Header
	body []byte
}

func (b *bodyRecorder) Header() http.Header { return b.h }
func (b *bodyRecorder) WriteHeader(int)     {}
func (b *bodyRecorder) Write(p []byte) (int, error) {
	b.body = append(b.body, p...)
	return len(p), nil
}

// hostOnly strips a port and a trailing dot and lowercases in place (the
// Host aliases the connection's buffer; host names are case-insensitive).
func hostOnly(h []byte) []byte {
	if i := lastColon(h); i >= 0 && (len(h) == 0 || h[0] != '[' || h[i-1] == ']') {
		h = h[:i]
	}
	if n := len(h); n > 0 && h[n-1] == '.' {
		h = h[:n-1]
	}
	for i, c := range h {
		if 'A' <= c && c <= 'Z' {
			h[i] = c + 'a' - 'A'
		}
	}
	return h
}

func lastColon(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		switch b[i] {
		case ':':
			return i
		case ']':
			return -1
		}
	}
	return -1
}

func isLocalHostBytes(h []byte) bool {
	switch string(h) {
	case "127.0.0.1", "localhost", "::1", "[::1]":
		return true
	}
	return false
}

var methods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodPatch, http.MethodOptions}

// methodString returns a constant for the common methods (no allocation).
func methodString(m []byte) string {
	for _, s := range methods {
		if string(m) == s {
			return s
		}
	}
	return string(m)
}
