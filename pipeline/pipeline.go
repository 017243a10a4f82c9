// Package pipeline is the sidecar's one request pipeline: every engine —
// the HTTP/1.1 fast path (proxy/h1 through proxy.FastOutbound) and the
// net/http path (h2c and gRPC, WebSocket) — runs each outbound request
// through it, so a policy is written once and behaves the same on every
// protocol.
//
// The shape: an engine adapts its request to Request (method, authority,
// path, header lookup, gRPC or not, body replayable or not) and keeps one
// Call per connection or stream. Start runs the stages — resolve (the
// destination's immutable snapshot: discovery.Destination with its
// compiled policy.Policy), route (the Route's first matching rule: its
// policy, weighted subset, faults), admit (circuit breaker), pick
// (balancer) — and
// either leaves an endpoint in the Call or answers with a MeshError. Then
// for every try the engine calls Try (address and how long to wait for
// the response head), sends, and reports what came back with Answered,
// which feeds the balancer (Observe, ReportLoad) and outlier detection and
// decides whether to try again (retry conditions, idempotency, a
// replayable body, the retry budget, the deadline, another instance,
// backoff). End releases what the request held. Engines stay thin
// adapters: they move bytes and render the MeshError (JSON, or a gRPC
// trailers-only answer) in their protocol.
//
// Nothing here allocates, locks or does I/O on a request that no policy
// acts on: the snapshot is one atomic load, counters are atomics. A stage
// can be added (Use) — authorization goes before admit.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/telemetry/metrics"
)

// Request is what the pipeline needs to know of a request; each engine
// adapts its own. Strings returned may alias the engine's buffers: the
// pipeline does not keep them past the call it got them in.
type Request interface {
	Method() string
	// Authority is the Host (or :authority), port included if sent.
	Authority() string
	// Path is the path and query.
	Path() string
	// Header returns the first value of the named field, "" if none.
	Header(name string) string
	// GRPC reports a gRPC call (content-type application/grpc...).
	GRPC() bool
	// Replayable reports whether the request could be sent again after a
	// try that reached the upstream: it has no body, or one the engine
	// will hold whole because it is at most limit bytes.
	Replayable(limit int) bool
	// RemoteIP is the caller's address (for source_ip hashing).
	RemoteIP() string
}

// Resolver finds a destination's current snapshot.
type Resolver interface {
	Lookup(ctx context.Context, service string) (*discovery.Destination, error)
}

// cachedResolver is the lookup that never waits; discovery.Client has it.
type cachedResolver interface {
	Cached(service string) (*discovery.Destination, bool)
}

// Stage is one step run before the first try. It returns a MeshError to
// answer the request itself.
type Stage struct {
	Name string
	Run  func(p *Pipeline, c *Call, r Request) *MeshError
}

// Config configures a Pipeline.
type Config struct {
	Resolver Resolver
	// Source is the calling service (metrics' source_service).
	Source string
	// Metrics counts retries, budget exhaustion, ejections and overflows;
	// nil counts nothing.
	Metrics *metrics.Recorder
	// LookupWait bounds the wait for a destination's first update
	// (default 5s).
	LookupWait time.Duration
}

// Pipeline runs requests through the stages. Safe for concurrent use.
type Pipeline struct {
	cfg    Config
	cached cachedResolver
	stages []Stage
}

// fallback is the policy of a Destination built without one.
var fallback = policy.Default(policy.NewLive())

// The built-in stages, in order.
var (
	StageResolve = Stage{"resolve", (*Pipeline).resolve}
	StageRoute   = Stage{"route", (*Pipeline).route}
	StageAdmit   = Stage{"admit", (*Pipeline).admit}
	StagePick    = Stage{"pick", (*Pipeline).pick}
)

// New returns a pipeline with the built-in stages.
func New(cfg Config) *Pipeline {
	if cfg.LookupWait <= 0 {
		cfg.LookupWait = 5 * time.Second
	}
	p := &Pipeline{cfg: cfg, stages: []Stage{StageResolve, StageRoute, StageAdmit, StagePick}}
	p.cached, _ = cfg.Resolver.(cachedResolver)
	return p
}

// Use inserts s before the stage named before ("" appends before pick).
// Call it before serving.
func (p *Pipeline) Use(before string, s Stage) {
	if before == "" {
		before = StagePick.Name
	}
	for i, st := range p.stages {
		if st.Name == before {
			p.stages = append(p.stages[:i], append([]Stage{s}, p.stages[i:]...)...)
			return
		}
	}
	p.stages = append(p.stages, s)
}

// Source is the calling service.
func (p *Pipeline) Source() string { return p.cfg.Source }

// Breaker slots a Call holds.
const (
	holdRequest = 1 << iota
	holdConn
)

// Call is one request's way through the pipeline. Engines keep one per
// connection (or stream) and the pipeline resets it in Start.
type Call struct {
	// Service is the destination's name once resolved.
	Service string
	Dest    *discovery.Destination
	Policy  *policy.Policy
	// Endpoint is the current try's instance (nil between tries).
	Endpoint *balancer.Endpoint
	// Last is the instance of the latest try (for telemetry).
	Last *balancer.Endpoint
	// Tries counts tries started; Retries the ones after the first.
	Tries, Retries, connRetries int
	Start, Deadline, TryStart   time.Time
	GRPC                        bool
	// Err is the answer the pipeline chose when it ends the request itself
	// after a try (Answered returned false with a failure).
	Err *MeshError
	// Rule is the index of the Route rule that took the request (-1:
	// none); Subset the backend subset chosen ("": every instance).
	Rule   int
	Subset string
	// MirrorAddr, when set, is the instance a copy of the request should
	// go to (the engine sends it, fire-and-forget).
	MirrorAddr string
	picker     balancer.Picker
	// choices is how many instances the picker chooses from.
	choices int

	replayable, idempotent bool
	grpcDeadline           bool
	counted                bool // Endpoint's InFlight counts this try
	info                   balancer.PickInfo
	held                   uint8
}

// Failure is how a try failed before a response head.
type Failure uint8

const (
	OK          Failure = iota
	FailConnect         // no connection: nothing was sent
	FailReset           // the connection failed or the response was malformed
	FailTimeout         // no response head within the try's timeout
)

// Outcome is what one try came back with.
type Outcome struct {
	Failure Failure
	Err     error // the cause of a failure
	// Status is the response head's status; HasGRPC and GRPCStatus its
	// grpc-status when the head carries one (a trailers-only answer).
	Status     int
	HasGRPC    bool
	GRPCStatus int
	// WeftError is the response's x-weft-error, if any.
	WeftError string
	// Load is the response's x-weft-load value, if any.
	Load []byte
	// Unreplayable is set by an engine that found the body could not be
	// sent again after all (streamed past the limit, or not read whole).
	Unreplayable bool
}

// Start resets c and runs the stages. A nil result means c holds a
// destination and an endpoint to Try; otherwise the engine answers with
// the error (and still calls End).
func (p *Pipeline) Start(c *Call, r Request, now time.Time) *MeshError {
	*c = Call{Start: now, GRPC: r.GRPC(), Rule: -1}
	for i := range p.stages {
		if e := p.stages[i].Run(p, c, r); e != nil {
			return e
		}
	}
	return nil
}

func (p *Pipeline) resolve(c *Call, r Request) *MeshError {
	host := r.Authority()
	if host == "" {
		return &MeshError{Status: http.StatusBadRequest, Code: CodeBadRequest,
			Message: "no Host: name the service to call (Host: orders, or an absolute URL http://orders/...)"}
	}
	name := ServiceName(host)
	var dest *discovery.Destination
	ok := false
	if p.cached != nil {
		dest, ok = p.cached.Cached(name)
	}
	if !ok {
		name = strings.Clone(name) // it may alias the engine's buffer
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.LookupWait)
		var err error
		dest, err = p.cfg.Resolver.Lookup(ctx, name)
		cancel()
		if err != nil {
			c.Service = name
			return LookupError(name, err)
		}
	}
	c.Dest, c.Service = dest, dest.Service
	if !dest.Exists {
		return &MeshError{Status: http.StatusServiceUnavailable, Code: CodeUnknownService, Service: dest.Service,
			Message: fmt.Sprintf("no service %q is registered with the control plane", dest.Service)}
	}
	c.Policy = dest.Traffic
	if c.Policy == nil {
		c.Policy = fallback // a snapshot built by hand (tests, embedders)
	}
	c.picker, c.choices = dest.Picker, len(dest.Endpoints)
	// Before route: a hash key chooses the weighted subset too.
	c.info = pickInfo(r, dest.HashKey)
	return nil
}

// route applies the destination's Route: the first matching rule's
// policy, weighted subset and faults.
func (p *Pipeline) route(c *Call, r Request) *MeshError {
	t := c.Dest.Routes
	if t == nil {
		return nil
	}
	rule := t.Match(r)
	if rule == nil {
		return nil
	}
	c.Rule = rule.Index
	if rule.Policy != nil {
		c.Policy = rule.Policy
	}
	if b := rule.Backend(c.info); b != nil {
		c.Subset, c.picker, c.choices = b.Subset, b.Picker, len(b.Endpoints)
	}
	if m := rule.Mirror; m != nil && route.Roll(m.Percent) {
		if ep, err := m.Picker.Pick(balancer.PickInfo{}); err == nil {
			c.MirrorAddr = ep.Address
		}
	}
	if a := rule.Abort; a != nil && route.Roll(a.Percent) {
		p.cfg.Metrics.Count(metrics.EventFault, metrics.Client, p.cfg.Source, c.Service)
		return &MeshError{Status: a.Status, Code: CodeFaultInjected, Service: c.Service,
			Message: fmt.Sprintf("aborted by route %s rule %d (fault.abort)", t.Name, rule.Index)}
	}
	if d := rule.Delay; d != nil && route.Roll(d.Percent) {
		p.cfg.Metrics.Count(metrics.EventFault, metrics.Client, p.cfg.Source, c.Service)
		// The request's own goroutine: nothing else waits on it.
		time.Sleep(d.Fixed)
		c.Start = time.Now()
	}
	return nil
}

// prepare fixes what the chosen policy decides for the whole request.
func (c *Call) prepare(r Request) {
	c.Deadline = c.Start.Add(c.Policy.Timeout)
	if c.GRPC {
		if v := r.Header("grpc-timeout"); v != "" {
			if d, ok := ParseGRPCTimeout(v); ok && c.Start.Add(d).Before(c.Deadline) {
				c.Deadline, c.grpcDeadline = c.Start.Add(d), true
			}
		}
	}
	c.replayable = r.Replayable(c.bodyLimit())
	// Only retries after a response need it (a refused connection goes
	// again whatever the method); headers are not readable later.
	c.idempotent = c.Policy.Retries > 0 && (c.GRPC || idempotent(r))
	c.Policy.Live.Budget.Request()
}

func (p *Pipeline) admit(c *Call, r Request) *MeshError {
	c.prepare(r)
	pol := c.Policy
	if !pol.Live.Breaker.Acquire(policy.SlotRequest, pol.MaxRequests) {
		if e := p.wait(c, policy.SlotRequest, "maxRequests", pol.MaxRequests); e != nil {
			return e
		}
	}
	c.held |= holdRequest
	return nil
}

// wait queues c for a breaker slot of kind, as one of at most
// maxPendingRequests waiting, until the request's deadline.
func (p *Pipeline) wait(c *Call, kind int, limit string, n int64) *MeshError {
	pol := c.Policy
	switch pol.Live.Breaker.Wait(kind, n, pol.MaxPending, c.Deadline) {
	case policy.Acquired:
		return nil
	case policy.TimedOut:
		return &MeshError{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout, Service: c.Service,
			Message: fmt.Sprintf("waited %s for a slot: circuit breaker %s %d reached for %q",
				c.Deadline.Sub(c.Start).Round(time.Millisecond), limit, n, c.Service)}
	}
	return p.overflow(c, limit, n)
}

func (p *Pipeline) overflow(c *Call, limit string, n int64) *MeshError {
	p.cfg.Metrics.Count(metrics.EventOverflow, metrics.Client, p.cfg.Source, c.Service)
	msg := fmt.Sprintf("circuit breaker: %s %d reached for %q", limit, n, c.Service)
	if m := c.Policy.MaxPending; m > 0 {
		msg += fmt.Sprintf(" and maxPendingRequests %d waiting", m)
	}
	return &MeshError{Status: http.StatusServiceUnavailable, Code: CodeOverflow, Service: c.Service, Message: msg}
}

func (p *Pipeline) pick(c *Call, r Request) *MeshError {
	ep, err := c.picker.Pick(c.info)
	if err != nil {
		return c.noInstances()
	}
	c.Endpoint = ep
	return nil
}

func (c *Call) noInstances() *MeshError {
	if c.Subset != "" {
		return &MeshError{Status: http.StatusServiceUnavailable, Code: CodeNoReadyInstances, Service: c.Service,
			Message: fmt.Sprintf("subset %q of service %q has no ready instances", c.Subset, c.Service)}
	}
	return noInstances(c.Dest)
}

func noInstances(d *discovery.Destination) *MeshError {
	msg := fmt.Sprintf("service %q has no instances", d.Service)
	if n := len(d.Instances); n > 0 {
		msg = fmt.Sprintf("service %q has %d instance(s), none ready", d.Service, n)
	}
	return &MeshError{Status: http.StatusServiceUnavailable, Code: CodeNoReadyInstances, Service: d.Service, Message: msg}
}

// bodyLimit is the largest body worth holding for a retry: none when the
// policy retries nothing that reaches an app.
func (c *Call) bodyLimit() int {
	if c.Policy.Retries == 0 {
		return 0
	}
	return c.Policy.MaxBodyBytes
}

// ReplayLimit is how much of a request body the engine should hold whole
// so the request can be retried (0: none; stream it).
func (c *Call) ReplayLimit() int {
	if !c.replayable {
		return 0
	}
	return c.bodyLimit()
}

// MirrorLimit is the largest request body a mirrored copy carries (the
// retry buffer limit, maxBodyBytes): a larger one is not copied.
func (c *Call) MirrorLimit() int { return c.Policy.MaxBodyBytes }

// Try starts a try on c.Endpoint: it returns the instance's address and
// how long the try may wait for a response head, or the error to answer
// with (deadline passed, connection limit).
func (p *Pipeline) Try(c *Call, now time.Time) (addr string, timeout time.Duration, e *MeshError) {
	pol := c.Policy
	timeout = pol.TryTimeout(now, c.Deadline)
	if timeout <= 0 {
		return "", 0, p.timeout(c)
	}
	if c.held&holdConn == 0 {
		if !pol.Live.Breaker.Acquire(policy.SlotConnection, pol.MaxConnections) {
			if e := p.wait(c, policy.SlotConnection, "maxConnections", pol.MaxConnections); e != nil {
				return "", 0, e
			}
			now = time.Now()
			timeout = pol.TryTimeout(now, c.Deadline)
		}
		c.held |= holdConn
	}
	ep := c.Endpoint
	ep.InFlight.Add(1)
	c.counted = true
	c.Last = ep
	c.Tries++
	c.TryStart = now
	return ep.Address, timeout, nil
}

// Remaining is what is left of the request's deadline (to propagate as
// grpc-timeout).
func (c *Call) Remaining(now time.Time) time.Duration { return c.Deadline.Sub(now) }

// GRPCDeadline reports whether the caller's grpc-timeout set the deadline.
func (c *Call) GRPCDeadline() bool { return c.grpcDeadline }

func (p *Pipeline) timeout(c *Call) *MeshError {
	what := fmt.Sprintf("no response within %s", c.Policy.Timeout)
	if c.grpcDeadline {
		what = fmt.Sprintf("no response within the caller's grpc-timeout (%s)", c.Deadline.Sub(c.Start).Round(time.Millisecond))
	}
	return &MeshError{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout, Service: c.Service, Message: what}
}

// endTry releases the current try's instance.
func (c *Call) endTry() {
	if c.Endpoint != nil && c.counted {
		c.Endpoint.InFlight.Add(-1)
	}
	c.Endpoint, c.counted = nil, false
	if c.held&holdConn != 0 {
		c.Policy.Live.Breaker.Release(policy.SlotConnection, c.Policy.MaxConnections)
		c.held &^= holdConn
	}
}

// Answered records how the current try ended and decides whether to try
// again. On true, c.Endpoint is the next instance and wait the backoff to
// sleep before Try. On false with a failure, c.Err is the answer; on
// false after a response head, that response goes to the caller (the
// try's instance stays in flight until End).
func (p *Pipeline) Answered(c *Call, o *Outcome, now time.Time) (retry bool, wait time.Duration) {
	ep, pol := c.Endpoint, c.Policy
	if ep == nil {
		return false, 0
	}
	fivexx := o.Failure != OK || o.Status >= 500
	gateway := o.Failure == FailConnect || o.Failure == FailTimeout || o.Status == 502 || o.Status == 503 || o.Status == 504 ||
		(o.HasGRPC && o.GRPCStatus == GRPCUnavailable)
	ep.Observe(now.Sub(c.TryStart), fivexx || (o.HasGRPC && o.GRPCStatus != GRPCOK))
	if len(o.Load) > 0 {
		ep.ReportLoad(o.Load)
	}
	if det := pol.Outlier; det != nil {
		if det.Report(c.Dest.Outlier[ep], fivexx, gateway, now) {
			p.cfg.Metrics.Count(metrics.EventEjection, metrics.Client, p.cfg.Source, c.Service)
		}
	}
	// A refused connection, or a callee sidecar that could not reach its
	// app: nothing reached an app, so any method may go again, and the
	// budget (which guards apps against retry storms) is not charged.
	unsent := o.Failure == FailConnect || (o.Failure == OK && o.WeftError == CodeAppUnavailable)
	replayable := c.replayable && !o.Unreplayable
	switch {
	case unsent:
		retry = c.connRetries < pol.ConnectRetries && (o.Failure == FailConnect || replayable)
	case c.Retries >= pol.Retries || !replayable || !(c.idempotent || pol.NonIdempotent):
	case o.Failure == FailReset:
		retry = pol.On&policy.OnReset != 0
	case o.Failure == FailTimeout:
		// A try's timeout counts as a 504 for retryOn.
		retry = c.Policy.PerTryTimeout > 0 && pol.Retriable(http.StatusGatewayTimeout, -1)
	case o.HasGRPC:
		retry = pol.Retriable(o.Status, o.GRPCStatus)
	default:
		retry = pol.Retriable(o.Status, -1)
	}
	if retry && !unsent && !now.Before(c.Deadline) {
		retry = false
	}
	if retry && !unsent && !pol.Live.Budget.Withdraw(now) {
		p.cfg.Metrics.Count(metrics.EventBudgetExhausted, metrics.Client, p.cfg.Source, c.Service)
		retry = false
	}
	if !retry {
		if o.Failure != OK {
			c.Err = p.failure(c, o)
			c.endTry()
		}
		return false, 0
	}
	last := ep
	c.endTry()
	next, err := c.picker.Pick(c.info)
	// Another instance when there is one (a few picks; picking is cheap).
	for i := 0; err == nil && next == last && i < 4 && c.choices > 1; i++ {
		next, err = c.picker.Pick(balancer.PickInfo{})
	}
	if err != nil {
		c.Err = c.noInstances()
		return false, 0
	}
	c.Endpoint = next
	if unsent {
		c.connRetries++
	} else {
		c.Retries++
		wait = backoff(pol, c.Retries)
		if left := c.Deadline.Sub(now); wait > left {
			wait = left
		}
	}
	p.cfg.Metrics.Count(metrics.EventRetry, metrics.Client, p.cfg.Source, c.Service)
	return true, wait
}

// failure is the mesh error for a try that failed with no response.
func (p *Pipeline) failure(c *Call, o *Outcome) *MeshError {
	switch o.Failure {
	case FailConnect:
		return &MeshError{Status: http.StatusServiceUnavailable, Code: CodeConnectFailed, Service: c.Service,
			Message: fmt.Sprintf("could not reach an instance of %q (%d tries)", c.Service, c.Tries), Err: o.Err}
	case FailTimeout:
		if c.Policy.PerTryTimeout > 0 && c.Policy.PerTryTimeout < c.Policy.Timeout && !c.grpcDeadline {
			return &MeshError{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout, Service: c.Service,
				Message: fmt.Sprintf("no response within the per-try timeout %s (%d tries)", c.Policy.PerTryTimeout, c.Tries)}
		}
		return p.timeout(c)
	}
	return &MeshError{Status: http.StatusBadGateway, Code: CodeUpstreamReset, Service: c.Service,
		Message: fmt.Sprintf("instance %s failed the request", c.Last.ID), Err: o.Err}
}

// backoff is base × 2^(n-1), at most max, ± jitter.
func backoff(p *policy.Policy, n int) time.Duration {
	d := p.BackoffBase << min(n-1, 20)
	if d > p.BackoffMax || d <= 0 {
		d = p.BackoffMax
	}
	if p.Jitter > 0 {
		d += time.Duration((rand.Float64()*2 - 1) * p.Jitter * float64(d))
	}
	return max(d, 0)
}

// End releases what the request holds. Call it once per Start.
func (p *Pipeline) End(c *Call) {
	if c.Policy == nil {
		return
	}
	c.endTry()
	if c.held&holdRequest != 0 {
		c.Policy.Live.Breaker.Release(policy.SlotRequest, c.Policy.MaxRequests)
	}
	c.held = 0
}

// Detach ends the try's in-flight count without ending the request (an
// upgraded connection is long-lived, not a request in flight).
func (c *Call) Detach() {
	if c.Endpoint != nil && c.counted {
		c.Endpoint.InFlight.Add(-1)
	}
	c.Endpoint, c.counted = nil, false
}

// LookupError is the mesh error for a failed destination lookup.
func LookupError(service string, err error) *MeshError {
	switch {
	case errors.Is(err, discovery.ErrControlUnreachable):
		return &MeshError{Status: http.StatusServiceUnavailable, Code: CodeControlUnreach, Service: service,
			Message: "the control plane is unreachable and this sidecar has never seen the service"}
	case errors.Is(err, discovery.ErrTooManyDestinations):
		return &MeshError{Status: http.StatusServiceUnavailable, Code: CodeTooManyServices, Service: service, Message: err.Error()}
	case errors.Is(err, context.Canceled):
		return &MeshError{Status: 499, Code: CodeBadRequest, Service: service, Message: "the caller went away"}
	}
	return &MeshError{Status: http.StatusServiceUnavailable, Code: CodeDiscoveryTimeout, Service: service, Message: err.Error()}
}

// ServiceName is the host without port or trailing dot, lowercased. It
// allocates only when the host has upper-case letters.
func ServiceName(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	return strings.ToLower(host)
}

// idempotent is RFC 9110's set, plus a request that carries an
// idempotency key.
func idempotent(r Request) bool {
	switch r.Method() {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header("Idempotency-Key") != "" || r.Header("X-Idempotency-Key") != ""
}

// pickInfo extracts the request's hash key, if the destination uses one.
func pickInfo(r Request, k resource.HashKey) balancer.PickInfo {
	var key string
	switch k.Source {
	case resource.HashNone:
		return balancer.PickInfo{}
	case resource.HashHeader:
		key = r.Header(k.Name)
	case resource.HashCookie:
		key = cookieValue(r.Header("Cookie"), k.Name)
	case resource.HashQuery:
		key = queryValue(r.Path(), k.Name)
	case resource.HashSourceIP:
		key = r.RemoteIP()
	}
	if key == "" {
		return balancer.PickInfo{}
	}
	// xxhash, not maphash: every sidecar must send one key to one instance.
	return balancer.PickInfo{Hash: xxhash.Sum64String(key), HasHash: true}
}

// RemoteIP is the host part of a net.Addr's or "host:port"'s address.
func RemoteIP(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	if a == nil {
		return ""
	}
	h, _, _ := net.SplitHostPort(a.String())
	return h
}
