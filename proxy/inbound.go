package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/authz"
	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/proxy/h1"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/metrics"
)

// App protocols: what the sidecar speaks to its app.
const (
	// AppProtocolAuto: gRPC goes to the app over h2c, everything else over
	// HTTP/1.1 — right for nearly every app without configuration.
	AppProtocolAuto  = "auto"
	AppProtocolHTTP1 = "http1"
	AppProtocolH2C   = "h2c"
)

// ValidateAppProtocol checks an --app-protocol value.
func ValidateAppProtocol(p string) error {
	switch p {
	case AppProtocolAuto, AppProtocolHTTP1, AppProtocolH2C:
		return nil
	}
	return fmt.Errorf("--app-protocol %q: want auto, http1 or h2c", p)
}

// Inbound serves calls from other sidecars and forwards them to the app on
// 127.0.0.1:<app-port> in the app's protocol (see AppProtocolAuto).
type Inbound struct {
	appAddr  string
	appH2    func(*http.Request) bool
	h2App    bool   // the app speaks only h2c: the fast path converts (FastInbound)
	appProto string // for the native h2 engine's choice (h2route.go)
	log      *slog.Logger
	rp       *httputil.ReverseProxy
	h1, h2   *http.Transport
	// h1c carries the native h2 engine's requests to an HTTP/1.1 app
	// (h2route.go), on proxy/h1's pool and framing.
	h1c *h1.Client

	draining atomic.Bool
	tunnels  sync.WaitGroup

	// Telemetry records each request (server side); nil records nothing.
	// Set before serving.
	Telemetry *telemetry.Telemetry

	// Metrics counts rate-limited requests; nil counts nothing. Set
	// before serving.
	Metrics *metrics.Recorder

	limits atomic.Pointer[inLimits]

	// Load, when set, appends this instance's current load report (the
	// value of balancer.LoadHeader) to dst; the inbound adds it to every
	// response it sends back to a calling sidecar. Set before serving.
	Load func(dst []byte) []byte
	// LoadTracker, when set, is told of every request forwarded to the app,
	// for the load report's in-flight count and latency. Set before
	// serving.
	LoadTracker LoadTracker

	// Authz holds the service's AuthorizationPolicies; nil: none. Set
	// before serving.
	Authz *Authorizer

	Requests atomic.Int64
}

// LoadTracker counts what the app is doing: Begin and End around each
// request, Latency with its time to response head. They run on every
// request and must not block or allocate.
type LoadTracker interface {
	Begin()
	End()
	Latency(time.Duration)
}

// NewInbound returns the inbound handler for the app at appAddr speaking
// appProtocol (AppProtocolAuto when empty).
func NewInbound(appAddr, appProtocol string, log *slog.Logger) *Inbound {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	in := &Inbound{appAddr: appAddr, log: log, h2App: appProtocol == AppProtocolH2C, appProto: appProtocol}
	switch appProtocol {
	case AppProtocolH2C:
		// The app speaks only h2c: HTTP/1.1 callers' requests are converted.
		in.appH2 = func(*http.Request) bool { return true }
	case AppProtocolHTTP1:
		in.appH2 = func(*http.Request) bool { return false }
	default:
		in.appH2 = func(r *http.Request) bool { return r.ProtoMajor == 2 && isGRPC(r) }
	}
	dialer := &net.Dialer{Timeout: time.Second}
	in.h1 = &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	in.h2 = &http.Transport{DialContext: dialer.DialContext, IdleConnTimeout: 90 * time.Second, DisableCompression: true, Protocols: new(http.Protocols)}
	in.h2.Protocols.SetUnencryptedHTTP2(true)
	in.h1c = h1.NewClient(h1.Limits{DialTimeout: time.Second}, nil)
	in.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = appAddr
			pr.Out.Host = pr.In.Host
			// The app sees this sidecar's server span as its parent, so the
			// calls it makes (forwarding the headers) are children of it.
			telemetry.FromContext(pr.In.Context()).Inject(pr.Out.Header)
		},
		Transport:      inboundTransport{in},
		ModifyResponse: grpcTrailersOnly,
		BufferPool:     copyBuffers,
		ErrorHandler:   in.errorHandler,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return in
}

type inboundTransport struct{ in *Inbound }

func (t inboundTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	base := t.in.h1
	if t.in.appH2(r) {
		base = t.in.h2
	}
	if lt := t.in.LoadTracker; lt != nil {
		start := time.Now()
		defer func() { lt.Latency(time.Since(start)) }()
	}
	ex := telemetry.FromContext(r.Context())
	if ex == nil {
		return base.RoundTrip(r)
	}
	ex.UpstreamStart()
	resp, err := base.RoundTrip(r)
	ex.UpstreamDone()
	// An upgraded body must stay an io.ReadWriteCloser: not wrapped.
	if err == nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil && resp.Body != http.NoBody {
		resp.Body = &timedBody{ReadCloser: resp.Body, ex: ex}
	}
	return resp, err
}

// timedBody counts the wait on the app's response body as upstream time.
type timedBody struct {
	io.ReadCloser
	ex *telemetry.Exchange
}

func (b *timedBody) Read(p []byte) (int, error) {
	b.ex.UpstreamStart()
	n, err := b.ReadCloser.Read(p)
	b.ex.UpstreamDone()
	return n, err
}

func isGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// Drain makes every later HTTP/1.1 response carry "Connection: close", so
// callers' pooled connections to this instance end once their request is
// answered, before the listener closes.
func (in *Inbound) Drain() { in.draining.Store(true) }

// WaitTunnels waits for open TCP tunnels to end.
func (in *Inbound) WaitTunnels() { in.tunnels.Wait() }

// CloseIdle closes pooled connections to the app.
func (in *Inbound) CloseIdle() {
	in.h1.CloseIdleConnections()
	in.h2.CloseIdleConnections()
	in.h1c.CloseIdle()
}

func (in *Inbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in.Requests.Add(1)
	target := r.URL.RequestURI()
	if r.Method == http.MethodConnect {
		target = "*"
	}
	var scratch []byte
	peer, deny := in.authorize(peerFrom(r), []byte(r.Method), []byte(target), authz.HTTPHeaders(r.Header), &scratch)
	if deny != nil {
		if ex := in.Telemetry.Begin(metrics.Server, w, r); ex != nil {
			defer ex.End()
			w = ex
		}
		writeDenied(w, r, deny)
		return
	}
	r.Header.Set(HeaderPeerIdentity, principalOf(peer))
	if r.Method == http.MethodConnect {
		in.tunnel(w, r)
		return
	}
	if in.draining.Load() && r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	if lt := in.LoadTracker; lt != nil {
		lt.Begin()
		defer lt.End()
	}
	if in.Load != nil {
		// Every answer to the caller carries this instance's load.
		w.Header().Set(balancer.LoadHeader, string(in.Load(nil)))
	}
	if e := in.limited(sourceOf(peer, r.Header.Get(HeaderSource)), &httpRequest{r: r}, time.Now()); e != nil {
		e.WriteFor(w, isGRPC(r))
		return
	}
	if ex := in.Telemetry.Begin(metrics.Server, w, r); ex != nil {
		defer ex.End()
		w = ex
		r = r.WithContext(telemetry.NewContext(r.Context(), ex))
	}
	in.rp.ServeHTTP(w, r)
}

func (in *Inbound) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if isDialError(err) {
		(&MeshError{Status: http.StatusServiceUnavailable, Code: CodeAppUnavailable, Service: serviceName(r.Host),
			Message: fmt.Sprintf("the app at %s is not accepting connections", in.appAddr)}).WriteFor(w, isGRPC(r))
		return
	}
	if r.Context().Err() != nil {
		return
	}
	(&MeshError{Status: http.StatusBadGateway, Code: CodeUpstreamReset, Service: serviceName(r.Host),
		Message: "the app failed the request", Err: err}).WriteFor(w, isGRPC(r))
}

// tunnel carries raw TCP between a caller's --upstream port and the app.
func (in *Inbound) tunnel(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 {
		(&MeshError{Status: http.StatusHTTPVersionNotSupported, Code: CodeUnsupported, Message: "TCP tunnels need HTTP/1.1"}).Write(w)
		return
	}
	app, err := net.DialTimeout("tcp", in.appAddr, time.Second)
	if err != nil {
		(&MeshError{Status: http.StatusServiceUnavailable, Code: CodeAppUnavailable, Service: serviceName(r.Host),
			Message: fmt.Sprintf("the app at %s is not accepting connections", in.appAddr)}).Write(w)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		app.Close()
		return
	}
	in.tunnels.Add(1)
	defer in.tunnels.Done()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 OK\r\n\r\n"); err != nil {
		conn.Close()
		app.Close()
		return
	}
	done := in.Telemetry.TCPServer(r)
	done(pipe(conn, brw.Reader, app, app))
}

// pipe copies both ways until both directions end, half-closing each side
// as its source ends, then closes both. It returns the bytes copied each
// way (counted at the end, so io.Copy keeps its zero-copy paths).
func pipe(a net.Conn, aReader io.Reader, b net.Conn, bReader io.Reader) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst net.Conn, src io.Reader, n *int64) {
		defer wg.Done()
		*n, _ = io.Copy(dst, src)
		closeWrite(dst)
	}
	go cp(b, aReader, &aToB)
	go cp(a, bReader, &bToA)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA
}

func closeWrite(c net.Conn) {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.(closeWriter); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// dialTunnel opens a CONNECT tunnel to another sidecar's inbound listener,
// saying which service calls (source, for the callee's metrics; may be "").
// The returned reader must be used for reading (it may hold early bytes).
func dialTunnel(ctx context.Context, dial DialFunc, addr, service, source string) (net.Conn, io.Reader, error) {
	var conn net.Conn
	var err error
	if dial != nil {
		conn, err = dial(ctx, "tcp", addr, "http/1.1")
	} else {
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
	}
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	src := ""
	if source != "" {
		src = HeaderSource + ": " + source + "\r\n"
	}
	if _, err := fmt.Fprintf(conn, "CONNECT %s%s:1 HTTP/1.1\r\nHost: %s\r\n%s\r\n", tunnelAuthorityPrefix, service, service, src); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("tunnel to %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		return nil, nil, fmt.Errorf("tunnel to %s: %s (%s)", addr, resp.Status, resp.Header.Get(HeaderError))
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

var errNoTunnel = errors.New("no instance accepted the tunnel")
