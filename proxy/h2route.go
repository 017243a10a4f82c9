package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/pipeline"
	"github.com/weftmesh/weft/proxy/h2"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/metrics"
)

// The native HTTP/2 engine (proxy/h2) serves h2c and h2-over-TLS
// connections; these Routers adapt it to the request pipeline as
// FastOutbound and FastInbound adapt the HTTP/1.1 engine.

// H2Outbound routes the app's HTTP/2 (gRPC) calls for the h2 engine.
type H2Outbound struct {
	o *Outbound
	// states recycles the per-call state (the pipeline's Call, the
	// telemetry recorder with its two maps): allocated per call, it was
	// a tenth of the client sidecar's CPU at max (newobject and the GC
	// behind it). The h1 engine reuses the same per connection; an h2
	// connection's streams run at once, so here they come from a pool.
	states sync.Pool
}

var _ h2.Router = (*H2Outbound)(nil)

// H2 returns the h2 engine's router sharing o's pipeline and telemetry.
func (o *Outbound) H2() *H2Outbound { return &H2Outbound{o: o} }

type h2State struct {
	call    pipeline.Call
	req     h2Request
	outcome pipeline.Outcome
	weftErr string
	routed  bool
	tel     *telemetry.Fast
	// set backs Decision.Set (source, grpc-timeout, trace context), so
	// a pooled state's call appends without allocating.
	set [4]hpack.HeaderField
}

// h2RespDel is every outbound call's Decision.RespDel (the engine only
// reads it): for sidecars only (see grpcTrailersOnly, and the callee's
// load report), not the app.
var h2RespDel = []string{headerGRPCStatusHint, balancer.LoadHeader}

// h2Request adapts the engine's request to pipeline.Request.
type h2Request struct{ r *h2.Request }

var _ pipeline.Request = (*h2Request)(nil)

func (q *h2Request) Method() string            { return q.r.Method }
func (q *h2Request) Authority() string         { return q.r.Authority }
func (q *h2Request) Path() string              { return q.r.Path }
func (q *h2Request) Header(name string) string { return q.r.Get(name) }
func (q *h2Request) GRPC() bool                { return q.r.GRPC() }
func (q *h2Request) RemoteIP() string          { return pipeline.RemoteIP(q.r.RemoteAddr) }
func (q *h2Request) Replayable(limit int) bool {
	return q.r.EndStream || (limit > 0 && q.r.ContentLength >= 0 && q.r.ContentLength <= int64(limit)) ||
		(limit > 0 && q.r.GRPC()) // a unary call's one message; known whole only after the try
}

// Route implements h2.Router.
func (f *H2Outbound) Route(r *h2.Request, d *h2.Decision) {
	o := f.o
	o.Requests.Add(1)
	st, _ := f.states.Get().(*h2State)
	if st == nil {
		st = &h2State{tel: o.tel.NewFast()}
	} else {
		*st = h2State{tel: st.tel}
	}
	d.State = st
	grpc := r.GRPC()
	if r.Method == http.MethodConnect && r.Protocol == "" { // an extended CONNECT (WebSocket) is routed
		h2Fail(d, &MeshError{Status: http.StatusMethodNotAllowed, Code: CodeUnsupported,
			Message: "CONNECT through the outbound listener is not supported; use --upstream NAME=ADDR for raw TCP"}, grpc)
		return
	}
	if isLocalHost(serviceName(r.Authority)) {
		if o.local != nil {
			d.Handler = o.local
			return
		}
		h2Fail(d, &MeshError{Status: http.StatusNotFound, Code: CodeBadRequest, Message: "nothing is served on the sidecar's own address"}, grpc)
		return
	}
	st.req.r = r
	st.routed = true
	now := time.Now()
	c := &st.call
	e := o.pipe.Start(c, &st.req, now)
	if st.tel != nil && c.Service != "" {
		for _, fl := range r.Fields {
			st.tel.TraceField(bytesOf(fl.Name), bytesOf(fl.Value))
		}
		dst := c.Service
		if c.Dest == nil || !c.Dest.Exists {
			dst = metrics.Unknown
		}
		st.tel.Begin(metrics.Client, r.Method, o.source, dst, now)
	}
	if e != nil {
		st.fail(d, e, grpc)
		return
	}
	if !f.try(st, d, now) {
		return
	}
	d.ReplayLimit = c.ReplayLimit()
	d.Set = append(st.set[:0], hpack.HeaderField{Name: "x-weft-source", Value: o.source})
	// What is left of the deadline, which a policy timeout shorter than
	// the caller's grpc-timeout also bounds (as on the net/http path).
	if c.GRPCDeadline() || (c.GRPC && r.Get("grpc-timeout") != "") {
		d.Set = append(d.Set, hpack.HeaderField{Name: "grpc-timeout", Value: pipeline.FormatGRPCTimeout(c.Remaining(now))})
	}
	if st.tel != nil {
		d.Set = appendTraceH2(d.Set, st.tel)
	}
	d.RespDel = h2RespDel
	if c.MirrorAddr != "" {
		o.mirror.mirrorH2(r, c.Service, c.MirrorAddr, d.Set)
	}
}

// mirrorH2 copies an h2 request when it has no body (as mirrorH1 does).
func (m *mirror) mirrorH2(r *h2.Request, service, addr string, set []hpack.HeaderField) {
	if !r.EndStream {
		m.skip(service)
		return
	}
	h := make(http.Header, len(r.Fields)+len(set))
	for _, f := range r.Fields {
		if k := http.CanonicalHeaderKey(f.Name); !hopByHop[k] && k != "Host" {
			h.Add(k, f.Value)
		}
	}
	for _, f := range set {
		h.Set(f.Name, f.Value)
	}
	m.send(service, r.Method, addr, r.Authority, r.Path, h, nil)
}

// appendTraceH2 adds the next hop's trace fields (appendTraceFields for
// the h2 engine).
func appendTraceH2(set []hpack.HeaderField, tel *telemetry.Fast) []hpack.HeaderField {
	tel.Inject()
	if tp := tel.Traceparent(); tp != nil {
		return append(set, hpack.HeaderField{Name: "traceparent", Value: string(tp)})
	}
	for k, v := range tel.Out {
		if len(v) > 0 {
			set = append(set, hpack.HeaderField{Name: strings.ToLower(k), Value: v[0]})
		}
	}
	return set
}

func (f *H2Outbound) try(st *h2State, d *h2.Decision, now time.Time) bool {
	addr, timeout, e := f.o.pipe.Try(&st.call, now)
	if e != nil {
		st.call.Err = e
		st.fail(d, e, st.call.GRPC)
		return false
	}
	d.Addr, d.HeaderTimeout = addr, timeout
	if st.call.Policy != nil {
		d.StreamIdle = st.call.Policy.IdleTimeout
	}
	return true
}

func (st *h2State) fail(d *h2.Decision, e *MeshError, grpc bool) {
	h2Fail(d, e, grpc)
	st.weftErr = e.Code
}

// h2Fail makes d the mesh error's answer: a gRPC trailers-only answer to a
// gRPC call, else status, x-weft-error and the JSON body.
func h2Fail(d *h2.Decision, e *MeshError, grpc bool) {
	d.Addr, d.Handler = "", nil
	if grpc {
		d.Status, d.TrailersOnly, d.Body = http.StatusOK, true, nil
		d.Header = d.Header[:0]
		for k, v := range e.GRPCFields() {
			d.Header = append(d.Header, hpack.HeaderField{Name: k, Value: v})
		}
		return
	}
	fields, body := meshErrorAnswer(e)
	d.Status, d.TrailersOnly, d.Body = e.Status, false, body
	d.Header = d.Header[:0]
	for _, fl := range fields {
		d.Header = append(d.Header, hpack.HeaderField{Name: string(fl.Name), Value: string(fl.Value)})
	}
}

// Answered implements h2.Router: each try's head or failure goes through
// the pipeline, which may want another try.
func (f *H2Outbound) Answered(r *h2.Request, d *h2.Decision, resp *h2.Response, err error) bool {
	st := d.State.(*h2State)
	c := &st.call
	if c.Endpoint == nil {
		return false
	}
	o := &st.outcome
	*o = pipeline.Outcome{Unreplayable: d.Unreplayable}
	now := time.Now()
	switch {
	case resp != nil:
		now = resp.At
		o.Status = resp.Status
		o.WeftError = resp.Get(HeaderError)
		gs := resp.Get(headerGRPCStatusHint)
		if resp.EndStream {
			if v := resp.Get("grpc-status"); v != "" {
				gs = v
			}
		}
		if gs != "" {
			if n, err := strconv.Atoi(gs); err == nil {
				o.HasGRPC, o.GRPCStatus = true, n
			}
		}
		if v := resp.Get(balancer.LoadHeader); v != "" {
			o.Load = []byte(v)
		}
	case errors.Is(err, h2.ErrRefused):
		o.Failure, o.Err = pipeline.FailConnect, err
	case errors.Is(err, h2.ErrUpstreamTimeout):
		o.Failure, o.Err = pipeline.FailTimeout, err
	default:
		o.Failure, o.Err = pipeline.FailReset, err
	}
	p := f.o.pipe
	retry, wait := p.Answered(c, o, now)
	o.Load = nil
	if !retry {
		if c.Err != nil {
			st.fail(d, c.Err, c.GRPC)
		}
		return false
	}
	if wait > 0 {
		time.Sleep(wait) // this stream's own goroutine
	}
	return f.try(st, d, time.Now())
}

// Finish implements h2.Router.
func (f *H2Outbound) Finish(r *h2.Request, d *h2.Decision, res *h2.Result) {
	st := d.State.(*h2State)
	d.State = nil
	defer f.states.Put(st)
	if !st.routed {
		return
	}
	c := &st.call
	f.o.pipe.End(c)
	if st.tel != nil && c.Service != "" {
		h2End(st.tel, st.weftErr, r, res, c.Last)
	}
}

// bytesOf is s as a read-only []byte, without the copy []byte(s) makes:
// for readers that only look (TraceField, authorization), where the copy
// of every field of every request was 16% of the server sidecar's Route.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func h2End(tel *telemetry.Fast, weftErr string, r *h2.Request, res *h2.Result, ep *balancer.Endpoint) {
	status := res.Status
	if !res.HeadWritten && status == 0 {
		status = 499
	}
	e := telemetry.FastEnd{Status: status, End: res.End, WeftError: weftErr, GRPCStatus: res.GRPCStatus, HTTP2: true,
		ReqBytes: res.ReqBytes, RespBytes: res.RespBytes}
	if !res.UpstreamStart.IsZero() && !res.UpstreamHeaders.IsZero() {
		e.Upstream = res.UpstreamHeaders.Sub(res.UpstreamStart)
	}
	if tel.WantsStrings() {
		e.Method, e.Host, e.Path = r.Method, r.Authority, pathOnly([]byte(r.Path))
		if ep != nil {
			e.PeerID, e.PeerAddr = ep.ID, ep.Address
		}
	}
	tel.End(&e)
}

// H2Inbound routes other sidecars' HTTP/2 calls to the app natively: as
// h2c streams when the app speaks h2c for the request (AppProtocolH2C, or
// gRPC under AppProtocolAuto), else as HTTP/1.1 requests on proxy/h1's
// pool (Decision.HTTP1). Only CONNECT goes through Inbound's net/http
// handler.
type H2Inbound struct {
	in     *Inbound
	states sync.Pool // as H2Outbound's
}

var _ h2.Router = (*H2Inbound)(nil)

// H2 returns the inbound's h2 engine router.
func (in *Inbound) H2() *H2Inbound { return &H2Inbound{in: in} }

type h2InState struct {
	weftErr string
	native  bool
	tel     *telemetry.Fast
	scratch []byte
	start   time.Time
	// loadBuf takes the load report, which Append grew from nil twice
	// per request (4% of the server sidecar's CPU at max was its
	// growslice).
	loadBuf [128]byte
	// set and respSet back Decision.Set and RespSet, as h2State's set.
	set     [3]hpack.HeaderField
	respSet [1]hpack.HeaderField
}

// h2Headers adapts a request's fields for authorization.
type h2Headers struct{ r *h2.Request }

func (h h2Headers) Get(name string) []byte {
	v := h.r.Get(name)
	if v == "" {
		return nil
	}
	return bytesOf(v)
}

// Route implements h2.Router.
func (f *H2Inbound) Route(r *h2.Request, d *h2.Decision) {
	in := f.in
	grpc := r.GRPC()
	if r.Method == http.MethodConnect && r.Protocol == "" {
		d.Handler = in // counts the request itself
		return
	}
	in.Requests.Add(1)
	st, _ := f.states.Get().(*h2InState)
	if st == nil {
		st = &h2InState{tel: in.Telemetry.NewFast()}
	} else {
		*st = h2InState{tel: st.tel, scratch: st.scratch[:0]}
	}
	st.native, st.start = true, time.Now()
	d.State = st
	d.Set, d.RespSet = st.set[:0], st.respSet[:0]
	d.Addr = in.appAddr
	if !(in.appProto == AppProtocolH2C || (grpc && in.appProto != AppProtocolHTTP1)) {
		d.HTTP1 = in.h1c // the app speaks HTTP/1.1
	}
	if in.Load != nil {
		d.RespSet = append(d.RespSet, hpack.HeaderField{Name: balancer.LoadHeader, Value: string(in.Load(st.loadBuf[:0]))})
	}
	if st.tel != nil {
		src := metrics.Unknown
		for _, fl := range r.Fields {
			if !st.tel.TraceField(bytesOf(fl.Name), bytesOf(fl.Value)) && fl.Name == "x-weft-source" && metrics.ValidName(fl.Value) {
				src = fl.Value
			}
		}
		st.tel.Begin(metrics.Server, r.Method, src, "", st.start)
		d.Set = appendTraceH2(d.Set, st.tel)
	}
	if in.LoadTracker != nil {
		in.LoadTracker.Begin()
	}
	method := r.Method
	if r.Protocol != "" {
		method = http.MethodGet // a WebSocket is authorized as on HTTP/1.1, the GET the app gets
	}
	peer, deny := in.authorize(r.RemoteAddr, bytesOf(method), bytesOf(r.Path), h2Headers{r}, &st.scratch)
	if deny != nil {
		if grpc {
			deny = &MeshError{Status: http.StatusForbidden, Code: deny.Code, Message: deny.Message}
			h2Fail(d, deny, true)
			setField(d.Header, "grpc-status", strconv.Itoa(pipeline.GRPCPermissionDenied))
			setField(d.Header, "grpc-message", grpcEscape(deny.Message))
		} else {
			h2Fail(d, deny, false)
		}
		st.weftErr = deny.Code
		return
	}
	// After authorization, as on the other engines: a denied request
	// takes no token.
	if e := in.limited(sourceOf(peer, r.Get(HeaderSource)), h2RouteRequest{r}, st.start); e != nil {
		h2Fail(d, e, grpc)
		st.weftErr = e.Code
		return
	}
	d.Set = append(d.Set, hpack.HeaderField{Name: "x-weft-peer-identity", Value: principalOf(peer)})
}

// h2RouteRequest is an h2 request as a Route rule's matchers see it.
type h2RouteRequest struct{ r *h2.Request }

func (q h2RouteRequest) Method() string            { return q.r.Method }
func (q h2RouteRequest) Path() string              { return q.r.Path }
func (q h2RouteRequest) Header(name string) string { return q.r.Get(name) }

func setField(fs []hpack.HeaderField, name, value string) {
	for i := range fs {
		if http.CanonicalHeaderKey(fs[i].Name) == http.CanonicalHeaderKey(name) {
			fs[i].Value = value
		}
	}
}

// Answered implements h2.Router: there is one app, and no retry; a
// refused connection is answered app_unavailable.
func (f *H2Inbound) Answered(r *h2.Request, d *h2.Decision, resp *h2.Response, err error) bool {
	if resp != nil {
		return false
	}
	st := d.State.(*h2InState)
	e := &MeshError{Status: http.StatusBadGateway, Code: CodeUpstreamReset, Service: serviceName(r.Authority),
		Message: "the app failed the request", Err: err}
	if errors.Is(err, h2.ErrRefused) {
		e = &MeshError{Status: http.StatusServiceUnavailable, Code: CodeAppUnavailable, Service: serviceName(r.Authority),
			Message: fmt.Sprintf("the app at %s is not accepting connections", f.in.appAddr)}
	} else if tv := r.Get("grpc-timeout"); r.GRPC() && tv != "" && errors.Is(err, h2.ErrUpstreamReset) {
		// A gRPC server resets a call's stream (CANCEL) when the
		// grpc-timeout it was given runs out: that is the deadline, not
		// an app failure, and the caller must see DEADLINE_EXCEEDED
		// whichever of the app's timer and the client sidecar's fires
		// first (TestGRPCDeadlineAndIdle).
		if dl, ok := pipeline.ParseGRPCTimeout(tv); ok && time.Since(st.start) >= dl {
			e = &MeshError{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout, Service: serviceName(r.Authority),
				Message: fmt.Sprintf("the app reset the call at its deadline (grpc-timeout %s)", tv), Err: err}
		}
	}
	h2Fail(d, e, r.GRPC())
	st.weftErr = e.Code
	return false
}

// Finish implements h2.Router.
func (f *H2Inbound) Finish(r *h2.Request, d *h2.Decision, res *h2.Result) {
	st, _ := d.State.(*h2InState)
	if st == nil {
		return
	}
	d.State = nil
	defer f.states.Put(st)
	if lt := f.in.LoadTracker; lt != nil {
		if !res.UpstreamHeaders.IsZero() && !res.UpstreamStart.IsZero() {
			lt.Latency(res.UpstreamHeaders.Sub(res.UpstreamStart))
		}
		lt.End()
	}
	if st.tel != nil {
		h2End(st.tel, st.weftErr, r, res, nil)
	}
}
