package proxy

import (
	"bytes"
	"net/url"

	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/proxy/h1"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/metrics"
)

// The fast path: plain HTTP/1.1 requests are served by proxy/h1, a
// purpose-built forwarding engine that allocates nothing per request,
// through the routers below; everything else (h2c and gRPC, Upgrade,
// CONNECT) is handed to the net/http path (Outbound, Inbound) on the same
// listener. Both paths produce the same routing, errors and telemetry.

// cachedResolver is the allocation-free lookup the fast path prefers.
type cachedResolver interface {
	CachedBytes(service []byte) (*discovery.Destination, bool)
}

// FastOutbound routes the app's HTTP/1.1 calls for the h1 engine.
type FastOutbound struct {
	o *Outbound
	// LocalAddr is where requests addressed to the sidecar itself go (a
	// loopback listener serving Outbound's Local handler); "" answers 404.
	LocalAddr string
	source    []byte
}

var _ h1.Router = (*FastOutbound)(nil)

// Fast returns the fast-path router sharing o's resolver, telemetry and
// counters.
func (o *Outbound) Fast(localAddr string) *FastOutbound {
	return &FastOutbound{o: o, LocalAddr: localAddr, source: []byte(o.source)}
}

// fastState is one connection's per-request state, reused across requests.
type fastState struct {
	dest     *discovery.Destination
	ep, last *balancer.Endpoint
	tries    int
	local    bool
	weftErr  string
	path     string // for spans and the access log only (the engine empties the target before Finish)
	set      []h1.Field
	tel      *telemetry.Fast
}

var fieldSource = []byte(HeaderSource)

func (f *FastOutbound) state(d *h1.Decision) *fastState {
	st, _ := d.State.(*fastState)
	if st == nil {
		st = &fastState{set: make([]h1.Field, 0, 4), tel: f.o.tel.NewFast()}
		d.State = st
	}
	st.dest, st.ep, st.last, st.tries, st.local, st.weftErr, st.path = nil, nil, nil, 0, false, "", ""
	st.set = st.set[:0]
	return st
}

// Route implements h1.Router.
func (f *FastOutbound) Route(req *h1.Request, d *h1.Decision) {
	f.o.Requests.Add(1)
	st := f.state(d)
	host := hostOnly(req.Host)
	if len(host) == 0 {
		st.fail(d, &MeshError{Status: http.StatusBadRequest, Code: CodeBadRequest,
			Message: "no Host: name the service to call (Host: orders, or an absolute URL http://orders/...)"})
		return
	}
	if isLocalHostBytes(host) {
		st.local = true
		if f.LocalAddr == "" {
			st.fail(d, &MeshError{Status: http.StatusNotFound, Code: CodeBadRequest, Message: "nothing is served on the sidecar's own address"})
			return
		}
		d.Addr = f.LocalAddr
		return
	}
	dest, ok := (*discovery.Destination)(nil), false
	if cr, yes := f.o.resolver.(cachedResolver); yes {
		dest, ok = cr.CachedBytes(host)
	}
	if !ok {
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		dest, err = f.o.resolver.Lookup(ctx, serviceName(string(host)))
		cancel()
		if err != nil {
			st.begin(f.o, req, string(host), false)
			st.fail(d, lookupError(serviceName(string(host)), err))
			return
		}
	}
	st.dest = dest
	st.begin(f.o, req, dest.Service, dest.Exists)
	if !dest.Exists {
		st.fail(d, &MeshError{Status: http.StatusServiceUnavailable, Code: CodeUnknownService, Service: dest.Service,
			Message: fmt.Sprintf("no service %q is registered with the control plane", dest.Service)})
		return
	}
	ep, err := dest.Picker.Pick(fastPickInfo(req, dest.HashKey))
	if err != nil {
		msg := fmt.Sprintf("service %q has no instances", dest.Service)
		if n := len(dest.Instances); n > 0 {
			msg = fmt.Sprintf("service %q has %d instance(s), none ready", dest.Service, n)
		}
		st.fail(d, &MeshError{Status: http.StatusServiceUnavailable, Code: CodeNoReadyInstances, Service: dest.Service, Message: msg})
		return
	}
	st.use(d, ep)
	d.HeaderTimeout = dest.Timeout
	st.set = append(st.set, h1.Field{Name: fieldSource, Value: f.source})
	if st.tel != nil {
		st.set = appendTraceFields(st.set, st.tel)
	}
	d.Set = st.set
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

func (st *fastState) use(d *h1.Decision, ep *balancer.Endpoint) {
	st.ep, st.last = ep, ep
	st.tries++
	ep.InFlight.Add(1)
	d.Addr = ep.Address
}

// begin starts the request's telemetry (client side).
func (st *fastState) begin(o *Outbound, req *h1.Request, dst string, known bool) {
	if st.tel == nil {
		return
	}
	for _, fl := range req.Fields {
		st.tel.TraceField(fl.Name, fl.Value)
	}
	if !known {
		dst = metrics.Unknown
	}
	st.tel.Begin(metrics.Client, methodString(req.Method), o.source, dst, time.Now())
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

// Next implements h1.Router: a refused connection is tried on another
// instance (nothing was sent).
func (f *FastOutbound) Next(req *h1.Request, d *h1.Decision, err error) bool {
	st := d.State.(*fastState)
	if st.local || st.dest == nil {
		return false
	}
	st.ep.Observe(0, true) // balance: load report
	st.ep.InFlight.Add(-1)
	st.ep = nil
	if st.tries >= maxAttempts {
		return false
	}
	ep, perr := st.dest.Picker.Pick(balancer.PickInfo{})
	for i := 0; perr == nil && ep == st.last && i < 4 && len(st.dest.Endpoints) > 1; i++ {
		ep, perr = st.dest.Picker.Pick(balancer.PickInfo{})
	}
	if perr != nil {
		return false
	}
	st.use(d, ep)
	return true
}

// Finish implements h1.Router.
func (f *FastOutbound) Finish(req *h1.Request, d *h1.Decision, res *h1.Result) {
	st := d.State.(*fastState)
	if st.ep != nil {
		observe(st.ep, res) // balance: load report
		st.ep.InFlight.Add(-1)
	}
	if res.Err != nil && !res.HeadWritten && st.dest != nil {
		var op *net.OpError
		switch {
		case errors.As(res.Err, &op) && op.Op == "dial":
			st.fail(d, &MeshError{Status: http.StatusServiceUnavailable, Code: CodeConnectFailed, Service: st.dest.Service,
				Message: fmt.Sprintf("could not reach an instance of %q", st.dest.Service), Err: res.Err})
		case errors.Is(res.Err, h1.ErrUpstreamTimeout):
			st.fail(d, &MeshError{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout, Service: st.dest.Service,
				Message: fmt.Sprintf("no response within %s", st.dest.Timeout)})
		case errors.Is(res.Err, h1.ErrBadRequest), errors.Is(res.Err, h1.ErrDownstream):
		default:
			st.fail(d, &MeshError{Status: http.StatusBadGateway, Code: CodeUpstreamReset, Service: st.dest.Service,
				Message: "the upstream failed the request", Err: res.Err})
		}
		res.Status = d.Status
	}
	if st.tel != nil && !st.local {
		end(st.tel, st.weftErr, st.path, req, res, st.ep)
	}
}

// ResponseHead implements h1.ResponseHeadRouter: the callee's load report
// goes to its endpoint. // balance: load report
func (f *FastOutbound) ResponseHead(d *h1.Decision, status int, fields []h1.Field) {
	st := d.State.(*fastState)
	if st.ep == nil {
		return
	}
	for i := range fields {
		if h1.EqualFold(fields[i].Name, fieldLoad) {
			st.ep.ReportLoad(fields[i].Value)
			return
		}
	}
}

var fieldLoad = []byte(balancer.LoadHeader)

// observe tells ep how the attempt went: its time to the response head
// (or to the failure), failed for an upstream error or a 5xx. // balance: load report
func observe(ep *balancer.Endpoint, res *h1.Result) {
	if res.UpstreamStart.IsZero() {
		return
	}
	end := res.UpstreamHeaders
	if end.IsZero() {
		end = res.End
		if end.IsZero() {
			end = time.Now()
		}
	}
	failed := res.Status >= 500
	if res.Err != nil && !errors.Is(res.Err, h1.ErrDownstream) && !errors.Is(res.Err, h1.ErrBadRequest) {
		failed = true
	} else if res.Err != nil && res.UpstreamHeaders.IsZero() {
		return // the caller's fault: says nothing of the endpoint
	}
	ep.Observe(end.Sub(res.UpstreamStart), failed)
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
	load    []byte     // balance: load report
	resp    []h1.Field // RespSet's array
	tracked bool
	scratch []byte // the authorization stage's path buffer
}

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
	if f.in.Load != nil { // balance: load report
		st.load = f.in.Load(st.load[:0])
		st.resp = append(st.resp[:0], h1.Field{Name: fieldLoad, Value: st.load})
		d.RespSet = st.resp
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
		st.tel.Begin(metrics.Server, methodString(req.Method), src, "", time.Now())
		st.path = ""
		if st.tel.WantsStrings() {
			st.path = pathOnly(req.Path())
		}
		// The app's outbound calls continue this hop's span.
		st.set = appendTraceFields(st.set[:0], st.tel)
	} else {
		st.set = st.set[:0]
	}
	peer, deny := f.in.authorize(req.RemoteAddr, req.Method, req.Path(), req, &st.scratch)
	if deny != nil {
		d.Addr, d.Status = "", deny.Status
		d.Header, d.Body = meshErrorAnswer(deny)
		st.weftErr = deny.Code
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
	if st.tracked { // balance: load report
		if !res.UpstreamHeaders.IsZero() && !res.UpstreamStart.IsZero() {
			f.in.LoadTracker.Latency(res.UpstreamHeaders.Sub(res.UpstreamStart))
		}
		f.in.LoadTracker.End()
	}
	if res.Err != nil && !res.HeadWritten {
		var op *net.OpError
		if errors.As(res.Err, &op) && op.Op == "dial" {
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
	e := telemetry.FastEnd{Status: res.Status, End: res.End, WeftError: weftErr, ReqBytes: res.ReqBytes, RespBytes: res.RespBytes}
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

// fastPickInfo is pickInfo for the fast path's request.
func fastPickInfo(req *h1.Request, k resource.HashKey) balancer.PickInfo {
	var key []byte
	switch k.Source {
	case resource.HashNone:
		return balancer.PickInfo{}
	case resource.HashHeader:
		key = req.Get(k.Name)
	case resource.HashCookie:
		key = cookieValue(req.Get("Cookie"), k.Name)
	case resource.HashQuery:
		key = queryValue(req.Path(), k.Name)
	case resource.HashSourceIP:
		if a, ok := req.RemoteAddr.(*net.TCPAddr); ok {
			return hashKey(a.IP.String())
		}
	}
	if len(key) == 0 {
		return balancer.PickInfo{}
	}
	return hashKeyBytes(key)
}

func hashKey(s string) balancer.PickInfo {
	return balancer.PickInfo{Hash: xxhash.Sum64String(s), HasHash: true}
}

func hashKeyBytes(b []byte) balancer.PickInfo {
	return balancer.PickInfo{Hash: xxhash.Sum64(b), HasHash: true}
}

// cookieValue finds name's value in a Cookie header ("a=1; b=2").
func cookieValue(h []byte, name string) []byte {
	for len(h) > 0 {
		var part []byte
		if i := bytes.IndexByte(h, ';'); i >= 0 {
			part, h = h[:i], h[i+1:]
		} else {
			part, h = h, nil
		}
		part = bytes.TrimSpace(part)
		if k, v, ok := bytes.Cut(part, []byte("=")); ok && string(k) == name {
			return bytes.Trim(v, `"`)
		}
	}
	return nil
}

// queryValue finds name's first value in the query of path, unescaped as
// url.Query would (so both paths hash a key alike).
func queryValue(path []byte, name string) []byte {
	_, q, ok := bytes.Cut(path, []byte("?"))
	if !ok {
		return nil
	}
	for len(q) > 0 {
		var part []byte
		if i := bytes.IndexByte(q, '&'); i >= 0 {
			part, q = q[:i], q[i+1:]
		} else {
			part, q = q, nil
		}
		k, v, _ := bytes.Cut(part, []byte("="))
		if string(k) != name {
			continue
		}
		if bytes.ContainsAny(v, "%+") {
			if s, err := url.QueryUnescape(string(v)); err == nil {
				return []byte(s)
			}
		}
		return v
	}
	return nil
}
