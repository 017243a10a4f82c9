// Package proxy is the sidecar's data path. Outbound takes the app's calls
// (HTTP/1.1 proxy-style or origin-form, or h2c), finds the destination
// service from the Host, picks an instance with the destination's balancer
// and forwards to that instance's sidecar; Inbound takes calls from other
// sidecars and forwards them to the local app. Opaque TCP rides a CONNECT
// tunnel between the same two listeners.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/metrics"
)

// Resolver finds a destination service's current view.
type Resolver interface {
	Lookup(ctx context.Context, service string) (*discovery.Destination, error)
}

// maxAttempts bounds tries on different instances when connecting fails
// (nothing has been sent then, so a retry is safe for any method).
const maxAttempts = 3

// Outbound serves the app's outgoing calls.
type Outbound struct {
	resolver Resolver
	source   string
	local    http.Handler
	log      *slog.Logger
	rp       *httputil.ReverseProxy
	tr       *meshTransport
	tel      *telemetry.Telemetry

	Requests atomic.Int64
}

// OutboundConfig configures an Outbound.
type OutboundConfig struct {
	Resolver Resolver
	// Source is the calling service's name, sent as x-weft-source.
	Source string
	// Local serves requests addressed to the sidecar itself (Host is the
	// outbound address or localhost), such as messaging's /v1/publish.
	Local  http.Handler
	Logger *slog.Logger
	// Telemetry records each request (client side); nil records nothing.
	Telemetry *telemetry.Telemetry
	// Dial, when set, connects to other sidecars (mTLS) offering the ALPN
	// protocol the connection will speak; nil: plain TCP.
	Dial DialFunc
}

// DialFunc opens a connection to another sidecar's inbound listener.
type DialFunc func(ctx context.Context, network, addr, alpn string) (net.Conn, error)

// NewOutbound returns the outbound handler.
func NewOutbound(cfg OutboundConfig) *Outbound {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	o := &Outbound{resolver: cfg.Resolver, source: cfg.Source, local: cfg.Local, log: cfg.Logger, tel: cfg.Telemetry}
	o.tr = newMeshTransport(cfg.Dial)
	o.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			// The Host header stays the service name: the callee's sidecar
			// and app see what the caller asked for. URL.Host is set per
			// attempt by the transport.
			pr.Out.Host = pr.In.Host
			if o.source != "" {
				pr.Out.Header.Set(HeaderSource, o.source)
			}
			if rt, _ := pr.In.Context().Value(routeKey{}).(*route); rt != nil {
				rt.ex.Inject(pr.Out.Header) // this hop's span is the callee's parent
			}
		},
		Transport:      o.tr,
		ModifyResponse: grpcTrailersOnly,
		BufferPool:     copyBuffers,
		ErrorHandler:   o.errorHandler,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return o
}

// Local is the handler for requests addressed to the sidecar itself.
func (o *Outbound) Local() http.Handler { return o.local }

// CloseIdle closes pooled connections to other sidecars.
func (o *Outbound) CloseIdle() { o.tr.closeIdle() }

func (o *Outbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.Requests.Add(1)
	if r.Method == http.MethodConnect {
		(&MeshError{Status: http.StatusMethodNotAllowed, Code: CodeUnsupported,
			Message: "CONNECT through the outbound listener is not supported; use --upstream NAME=ADDR for raw TCP"}).Write(w)
		return
	}
	host := r.Host
	if host == "" {
		(&MeshError{Status: http.StatusBadRequest, Code: CodeBadRequest,
			Message: "no Host: name the service to call (Host: orders, or an absolute URL http://orders/...)"}).Write(w)
		return
	}
	service := serviceName(host)
	if o.local != nil && isLocalHost(service) {
		o.local.ServeHTTP(w, r)
		return
	}
	ex := o.tel.Begin(metrics.Client, w, r)
	if ex != nil {
		defer ex.End()
		w = ex
	}
	dest, err := o.resolver.Lookup(r.Context(), service)
	ex.Route(service, err == nil && dest.Exists)
	if err != nil {
		lookupError(service, err).Write(w)
		return
	}
	if !dest.Exists {
		(&MeshError{Status: http.StatusServiceUnavailable, Code: CodeUnknownService, Service: service,
			Message: fmt.Sprintf("no service %q is registered with the control plane", service)}).Write(w)
		return
	}
	if len(dest.Endpoints) == 0 {
		msg := fmt.Sprintf("service %q has no instances", service)
		if n := len(dest.Instances); n > 0 {
			msg = fmt.Sprintf("service %q has %d instance(s), none ready", service, n)
		}
		(&MeshError{Status: http.StatusServiceUnavailable, Code: CodeNoReadyInstances, Service: service, Message: msg}).Write(w)
		return
	}
	rt := &route{dest: dest, info: pickInfo(r, dest.HashKey), ex: ex}
	o.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, rt)))
}

func lookupError(service string, err error) *MeshError {
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

// serviceName is the host without port, lowercased.
func serviceName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

func isLocalHost(h string) bool {
	return h == "127.0.0.1" || h == "localhost" || h == "::1" || h == "[::1]"
}

// pickInfo extracts the request's hash key, if the destination uses one.
func pickInfo(r *http.Request, k resource.HashKey) balancer.PickInfo {
	var key string
	switch k.Source {
	case resource.HashNone:
		return balancer.PickInfo{}
	case resource.HashHeader:
		key = r.Header.Get(k.Name)
	case resource.HashCookie:
		if c, err := r.Cookie(k.Name); err == nil {
			key = c.Value
		}
	case resource.HashQuery:
		key = r.URL.Query().Get(k.Name)
	case resource.HashSourceIP:
		key, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	if key == "" {
		return balancer.PickInfo{}
	}
	// xxhash, not maphash: every sidecar must send one key to one instance.
	return balancer.PickInfo{Hash: xxhash.Sum64String(key), HasHash: true}
}

type routeKey struct{}

type route struct {
	dest *discovery.Destination
	info balancer.PickInfo
	ex   *telemetry.Exchange // nil when telemetry is off
}

var errUpstreamTimeout = errors.New("upstream timeout")

// meshTransport picks the instance per attempt, so a refused connection is
// retried on another instance, and bounds the wait for response headers by
// the destination's timeout.
type meshTransport struct {
	h1, h2 *http.Transport
}

func newMeshTransport(dial DialFunc) *meshTransport {
	dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	dial1, dial2 := dialer.DialContext, dialer.DialContext
	if dial != nil {
		// TLS under an "http" URL: the transports speak HTTP/1.1 or h2
		// prior knowledge over the connection Dial returns.
		dial1 = func(ctx context.Context, n, a string) (net.Conn, error) { return dial(ctx, n, a, "http/1.1") }
		dial2 = func(ctx context.Context, n, a string) (net.Conn, error) { return dial(ctx, n, a, "h2") }
	}
	h1 := &http.Transport{
		DialContext:         dial1,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	h2 := &http.Transport{
		DialContext:        dial2,
		IdleConnTimeout:    90 * time.Second,
		DisableCompression: true,
		Protocols:          new(http.Protocols),
	}
	h2.Protocols.SetUnencryptedHTTP2(true)
	return &meshTransport{h1: h1, h2: h2}
}

func (t *meshTransport) closeIdle() {
	t.h1.CloseIdleConnections()
	t.h2.CloseIdleConnections()
}

func (t *meshTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, _ := req.Context().Value(routeKey{}).(*route)
	if rt == nil {
		return nil, errors.New("proxy: request without a route")
	}
	base := t.h1
	if req.ProtoMajor == 2 {
		base = t.h2
	}
	replayable := req.Body == nil || req.Body == http.NoBody
	var last *balancer.Endpoint
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		ep, err := rt.dest.Picker.Pick(rt.info)
		// On a retry prefer another instance (a few tries; the picker is cheap).
		for i := 0; err == nil && ep == last && i < 4 && len(rt.dest.Endpoints) > 1; i++ {
			ep, err = rt.dest.Picker.Pick(balancer.PickInfo{})
		}
		if err != nil {
			break
		}
		last = ep
		ctx, cancel := context.WithCancelCause(req.Context())
		timer := time.AfterFunc(rt.dest.Timeout, func() { cancel(errUpstreamTimeout) })
		out := req.WithContext(ctx)
		u := *req.URL
		u.Host = ep.Address
		out.URL = &u
		ep.InFlight.Add(1)
		rt.ex.UpstreamStart()
		sent := time.Now()
		resp, err := base.RoundTrip(out)
		rt.ex.UpstreamDone()
		timer.Stop()
		if err == nil { // balance: load report
			ep.Observe(time.Since(sent), resp.StatusCode >= 500)
			if v := resp.Header.Get(balancer.LoadHeader); v != "" {
				ep.ReportLoad([]byte(v))
			}
		} else if req.Context().Err() == nil {
			ep.Observe(time.Since(sent), true)
		}
		if err != nil {
			ep.InFlight.Add(-1)
			cause := context.Cause(ctx)
			cancel(nil)
			if errors.Is(cause, errUpstreamTimeout) {
				return nil, &MeshError{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout, Service: rt.dest.Service,
					Message: fmt.Sprintf("instance %s did not answer within %s", ep.ID, rt.dest.Timeout)}
			}
			if isDialError(err) {
				lastErr = err
				continue
			}
			return nil, &MeshError{Status: http.StatusBadGateway, Code: CodeUpstreamReset, Service: rt.dest.Service,
				Message: fmt.Sprintf("instance %s (%s) failed the request", ep.ID, ep.Address), Err: err}
		}
		// The callee's sidecar could not reach its app and sent nothing to
		// it: a bodiless request can go to another instance.
		if replayable && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(HeaderError) == CodeAppUnavailable && attempt+1 < maxAttempts {
			resp.Body.Close()
			ep.InFlight.Add(-1)
			cancel(nil)
			lastErr = fmt.Errorf("instance %s: app unavailable", ep.ID)
			continue
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// An upgraded stream is long-lived; it is not a request in flight.
			ep.InFlight.Add(-1)
			return resp, nil
		}
		rt.ex.Peer(ep.ID, ep.Address)
		resp.Body = &trackedBody{ReadCloser: resp.Body, ep: ep, cancel: cancel, ex: rt.ex}
		return resp, nil
	}
	if lastErr == nil {
		return nil, &MeshError{Status: http.StatusServiceUnavailable, Code: CodeNoReadyInstances, Service: rt.dest.Service,
			Message: fmt.Sprintf("service %q has no ready instances", rt.dest.Service)}
	}
	return nil, &MeshError{Status: http.StatusServiceUnavailable, Code: CodeConnectFailed, Service: rt.dest.Service,
		Message: fmt.Sprintf("could not reach an instance of %q", rt.dest.Service), Err: lastErr}
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// trackedBody ends the request's in-flight count and its timeout context
// when the response body is done.
type trackedBody struct {
	io.ReadCloser
	ep     *balancer.Endpoint
	cancel context.CancelCauseFunc
	done   atomic.Bool
	ex     *telemetry.Exchange
}

// Read counts the wait on the upstream's body as upstream time, so the
// overhead metric holds only the sidecar's own work.
func (b *trackedBody) Read(p []byte) (int, error) {
	if b.ex == nil {
		return b.ReadCloser.Read(p)
	}
	b.ex.UpstreamStart()
	n, err := b.ReadCloser.Read(p)
	b.ex.UpstreamDone()
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.done.CompareAndSwap(false, true) {
		b.ep.InFlight.Add(-1)
		b.cancel(nil)
	}
	return err
}

func (o *Outbound) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	var me *MeshError
	if errors.As(err, &me) {
		o.log.Debug("outbound error", "host", r.Host, "err", err)
		me.Write(w)
		return
	}
	if r.Context().Err() != nil {
		return // the app went away; nobody to answer
	}
	o.log.Debug("outbound error", "host", r.Host, "err", err)
	(&MeshError{Status: http.StatusBadGateway, Code: CodeUpstreamReset, Service: serviceName(r.Host),
		Message: "the upstream failed the request", Err: err}).Write(w)
}
