// Package sidecar assembles the data plane of one app instance: the
// discovery client, the outbound and inbound proxies, TCP upstreams, the app
// readiness probe and the admin endpoints, with the shutdown order a mesh
// needs (deregister, let callers notice, drain, then stop).
package sidecar

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/bind"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/load"
	"github.com/weftmesh/weft/proxy"
	"github.com/weftmesh/weft/proxy/h1"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/security/mtls"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/telemetry/accesslog"
	"github.com/weftmesh/weft/telemetry/metrics"
	"github.com/weftmesh/weft/telemetry/tracing"
	"github.com/weftmesh/weft/version"
)

// Config is the sidecar's static configuration (flags).
type Config struct {
	Control string
	Service string
	AppPort int // 0: a pure client, no inbound
	// NoFastPath serves everything with net/http instead of the HTTP/1.1
	// fast path (proxy/h1); for comparison and as an escape hatch.
	NoFastPath bool
	// AppProtocol is what the sidecar speaks to the app: auto, http1, h2c.
	AppProtocol string
	Inbound     string // where other sidecars reach this instance
	Outbound    string // "" disables the outbound listener
	Admin       string // "" disables the admin listener
	Version     string
	Labels      map[string]string
	Zone        string
	ID          string
	// Upstreams maps a service name to a local listen address for raw TCP.
	Upstreams map[string]string
	// Drain bounds how long in-flight requests may take to finish at shutdown.
	Drain time.Duration
	// Propagation is how long, after deregistering, the inbound keeps
	// accepting while callers learn the instance is gone.
	Propagation time.Duration
	Logger      *slog.Logger

	// OTLPEndpoint is where spans are exported (see tracing.Config.Endpoint);
	// empty: the control plane's receiver, as its Hello advertises.
	OTLPEndpoint string
	// TraceSampling is the ratio of new traces sampled (0: no tracing).
	TraceSampling float64
	// AccessLog is a file for per-request JSON lines, "-" for stdout, ""
	// for none.
	AccessLog string
	// NoTelemetry turns off per-request metrics, spans and access logs
	// (for measuring what they cost); /metrics still answers.
	NoTelemetry bool
	// Subscribe maps a topic to the app path its messages are POSTed to
	// (--subscribe); a Subscription resource for the topic wins.
	Subscribe map[string]string
	// TrimExecutable drops the process's mappings of the executable's
	// read-only pages after start-up and then periodically, so that its
	// resident set is its working set (see trimLoop; Linux only). It acts
	// on the whole process: meant for the weft binary, not for a program
	// embedding a sidecar.
	TrimExecutable bool
	// ReleaseIdleMemory gives the Go heap's free pages back to the OS
	// when the sidecar falls quiet after a burst (see releaseLoop). Like
	// TrimExecutable it acts on the whole process.
	ReleaseIdleMemory bool
	// GCPercent, when positive, is the GC target while the heap is
	// allocated fast; the release loop lowers it to 100 while allocation
	// is slow (gctarget.go). Zero leaves the GC alone (GOGC set by the
	// operator, or ReleaseIdleMemory off).
	GCPercent int
	// Capture is transparent capture (capture.go).
	Capture CaptureConfig
	// AppPID is the app's process id, whose process tree's CPU use the
	// load report carries (weft run sets it with SetAppPID; --app-pid for
	// an app run separately). 0: not measured, unless LoadCgroup.
	AppPID int
	// LoadCgroup is a cgroup v2 directory describing the instance (its
	// container), or "auto" for the sidecar's own; it wins over AppPID.
	LoadCgroup string
	// Namespace is the instance's namespace in its SPIFFE ID (default
	// "default"); Token the join token proving it may claim Service.
	Namespace string
	Token     string
	TokenFile string
	// CABundle is a PEM file of the mesh CA by which the control plane's
	// certificate is verified (its DATA-DIR/ca.pem); default: the local
	// file the control plane writes on this machine when its gRPC port is
	// TLS, else a plaintext stream.
	CABundle string
	// Listen bounds the outbound and inbound listeners' clients: header
	// read and idle timeouts, connections per listener.
	Listen ListenLimits
	// H2 chooses and bounds the HTTP/2 engine (front.go).
	H2 H2Config
}

// Defaults.
const (
	DefaultControl     = "127.0.0.1:15010"
	DefaultOutbound    = "127.0.0.1:15001"
	DefaultAdmin       = "127.0.0.1:15020"
	DefaultInbound     = "127.0.0.1:0"
	DefaultDrain       = 10 * time.Second
	DefaultPropagation = 500 * time.Millisecond
)

// Sidecar is one instance's data plane.
type Sidecar struct {
	cfg  Config
	log  *slog.Logger
	disc *discovery.Client
	out  *proxy.Outbound
	in   *proxy.Inbound

	metrics *metrics.Recorder
	tracer  *tracing.Tracer   // nil: not tracing
	access  *accesslog.Logger // nil: no access log
	msg     *sidecarMessaging
	capture *sidecarCapture // nil without --capture
	load    *load.Meter     // nil for a pure client
	id      *identity       // workload certificate, mTLS between sidecars
	// policiesReady is closed once the inbound has the service's
	// authorization policies (none is an answer too).
	policiesReady chan struct{}
	policiesOnce  sync.Once

	outLn, inLn, adminLn net.Listener
	upstreams            []*proxy.TCPUpstream
	outFront, inFront    *front
	adminSrv             *http.Server

	lm     *listenerMetrics
	lmOnce sync.Once

	appReady  chan struct{} // closed when the app first accepts connections
	readyOnce sync.Once
	drainOnce sync.Once
	drainErr  error
}

// New validates cfg and binds every listener, so that a bad flag or a port
// in use is reported before anything starts.
func New(cfg Config) (*Sidecar, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := resource.ValidateName(cfg.Service); err != nil {
		return nil, fmt.Errorf("--service: %w", err)
	}
	if cfg.AppPort < 0 || cfg.AppPort > 65535 {
		return nil, fmt.Errorf("--app-port %d: not a port number", cfg.AppPort)
	}
	if _, _, err := net.SplitHostPort(cfg.Control); err != nil {
		return nil, fmt.Errorf("--control %q: not a host:port address", cfg.Control)
	}
	if cfg.AppProtocol == "" {
		cfg.AppProtocol = proxy.AppProtocolAuto
	}
	if err := proxy.ValidateAppProtocol(cfg.AppProtocol); err != nil {
		return nil, err
	}
	if cfg.Drain <= 0 {
		cfg.Drain = DefaultDrain
	}
	if cfg.Propagation <= 0 {
		cfg.Propagation = DefaultPropagation
	}
	if cfg.ID == "" {
		cfg.ID = newID(cfg.Service)
	}
	cg, err := load.ResolveCgroup(cfg.LoadCgroup)
	if err != nil {
		return nil, err
	}
	cfg.LoadCgroup = cg
	if cfg.AppPID < 0 {
		return nil, fmt.Errorf("--app-pid %d: not a process id", cfg.AppPID)
	}
	s := &Sidecar{cfg: cfg, log: cfg.Logger, appReady: make(chan struct{}), policiesReady: make(chan struct{})}
	if err := s.checkMessaging(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.closeListeners()
		}
	}()
	if cfg.Outbound != "" {
		if s.outLn, err = bind.TCP("--outbound", cfg.Outbound); err != nil {
			return nil, err
		}
	}
	if cfg.Admin != "" {
		if s.adminLn, err = bind.TCP("--admin", cfg.Admin); err != nil {
			return nil, err
		}
	}
	var inst *pb.Instance
	if cfg.AppPort > 0 {
		if cfg.Inbound == "" {
			cfg.Inbound = DefaultInbound
		}
		if s.inLn, err = bind.TCP("--inbound", cfg.Inbound); err != nil {
			return nil, err
		}
		inst = &pb.Instance{Id: cfg.ID, Service: cfg.Service, Address: advertised(s.inLn.Addr(), cfg.Inbound),
			Version: cfg.Version, Labels: cfg.Labels, Zone: cfg.Zone}
		if s.adminLn != nil {
			inst.AdminAddress = advertised(s.adminLn.Addr(), cfg.Admin)
		}
		if s.outLn != nil {
			inst.OutboundAddress = s.outLn.Addr().String() // loopback: for the app and the CLI on this host
		}
		inst.WeftVersion = version.Short()
	}
	for name, addr := range cfg.Upstreams {
		if verr := resource.ValidateName(name); verr != nil {
			err = fmt.Errorf("--upstream %s: %w", name, verr)
			return nil, err
		}
		var ln net.Listener
		if ln, err = bind.TCP("--upstream "+name, addr); err != nil {
			return nil, err
		}
		s.upstreams = append(s.upstreams, &proxy.TCPUpstream{Service: name, Listener: ln, Log: s.log})
	}
	s.cfg = cfg
	s.id = newIdentity(cfg.Service, cfg.Namespace, cfg.Token, s.log.With("component", "identity"))
	s.id.tokenFile, s.id.control = cfg.TokenFile, cfg.Control
	var ctlTLS *tls.Config
	if ctlTLS, err = controlTLS(cfg, s.log); err != nil {
		return nil, err
	}
	s.disc = discovery.New(discovery.Config{ControlAddr: cfg.Control, Instance: inst, Zone: cfg.Zone, Logger: s.log.With("component", "discovery"),
		OnHello: s.id.onHello, OnCertificate: s.id.onCertificate, Greeting: s.id.greeting, TLS: ctlTLS,
		OnEjected: func(service string, n int) { s.metrics.SetEjected(service, n) }, OnEjections: s.setEjectedInstances,
		OnSweptEjections: s.countSweptEjections, HealthDial: s.healthDial,
		CallerService: cfg.Service, CallerID: cfg.ID, CallerAdmin: s.callerAdmin(inst, cfg)})
	s.id.disc = s.disc
	dial := s.id.dialer().Dial
	for _, u := range s.upstreams {
		u.Resolver, u.Dial = s.disc, dial
	}
	var tel *telemetry.Telemetry
	if tel, err = s.newTelemetry(); err != nil {
		return nil, err
	}
	if err = s.newMessaging(); err != nil {
		_ = s.tracer.Shutdown(context.Background())
		return nil, err
	}
	for _, u := range s.upstreams {
		u.Source, u.Telemetry = cfg.Service, tel
	}
	s.out = proxy.NewOutbound(proxy.OutboundConfig{Resolver: s.disc, Source: cfg.Service, Logger: s.log.With("component", "outbound"), Telemetry: tel, Metrics: s.metrics,
		Local: s.msg.pub, // POST /v1/publish/{topic} on 127.0.0.1
		Dial:  dial})     // mTLS to other sidecars
	if cfg.AppPort > 0 {
		s.in = proxy.NewInbound(net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.AppPort)), cfg.AppProtocol, s.log.With("component", "inbound"))
		s.in.Telemetry = tel
		s.in.Metrics = s.metrics
		s.newLoad()
		s.in.Authz = s.newAuthorizer()
	}
	if err = s.newCapture(); err != nil {
		_ = s.tracer.Shutdown(context.Background())
		return nil, err
	}
	s.metrics.Registry().MustRegister(endpointCollector{s})
	return s, nil
}

// newTelemetry builds the metrics recorder (always: /metrics answers even
// with telemetry off), the tracer and the access log. Called last in New:
// the tracer starts its export goroutine, stopped by Run.
func (s *Sidecar) newTelemetry() (*telemetry.Telemetry, error) {
	cfg := s.cfg
	s.metrics = metrics.New(metrics.Options{})
	s.metrics.Registry().MustRegister(s.id.src.Collector())
	if cfg.NoTelemetry {
		return nil, nil
	}
	if cfg.AccessLog != "" {
		al, err := accesslog.Open(cfg.AccessLog, 0, s.log.With("component", "accesslog"))
		if err != nil {
			return nil, err
		}
		s.access = al
		s.metrics.Registry().MustRegister(al.Collector())
	}
	tr, err := tracing.New(tracing.Config{Service: cfg.Service, InstanceID: cfg.ID,
		Endpoint: cfg.OTLPEndpoint, EndpointFunc: func() string { return s.disc.Setting(SettingOTLPEndpoint) },
		Token: s.otlpToken, Sampling: cfg.TraceSampling, Logger: s.log.With("component", "tracing"), TLS: s.id.src.ControlConfig})
	if err != nil {
		if s.access != nil {
			s.access.Close()
		}
		return nil, err
	}
	s.tracer = tr
	return telemetry.New(telemetry.Config{Service: cfg.Service, Metrics: s.metrics, Tracer: tr, AccessLog: s.access}), nil
}

// otlpToken is the bearer token for span export: the control plane's,
// with its certificate, while the sidecar exports to the receiver the
// Hello names; none to a receiver of its own --otlp-endpoint.
func (s *Sidecar) otlpToken() string {
	if s.cfg.OTLPEndpoint != "" {
		return ""
	}
	if t := s.id.otlpToken.Load(); t != nil {
		return *t
	}
	return ""
}

// SettingOTLPEndpoint is the Hello setting naming the control plane's OTLP
// receiver, the default export target of every sidecar.
const SettingOTLPEndpoint = "otlp_endpoint"

// advertised is the address other sidecars dial: the bound address, unless
// the listener is on a wildcard address, in which case the flag's host (or
// the hostname) is used.
func advertised(a net.Addr, flag string) string {
	ta := a.(*net.TCPAddr)
	if !ta.IP.IsUnspecified() {
		return ta.String()
	}
	host, _ := os.Hostname()
	return net.JoinHostPort(host, strconv.Itoa(ta.Port))
}

func newID(service string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return service + "-" + hex.EncodeToString(b)
}

func (s *Sidecar) closeListeners() {
	for _, ln := range []net.Listener{s.outLn, s.inLn, s.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
	for _, u := range s.upstreams {
		u.Listener.Close()
	}
}

// ID is this instance's id.
func (s *Sidecar) ID() string { return s.cfg.ID }

// OutboundAddr is the bound outbound address ("" when disabled).
func (s *Sidecar) OutboundAddr() string { return addrOf(s.outLn) }

// InboundAddr is the bound inbound address ("" for a pure client).
func (s *Sidecar) InboundAddr() string { return addrOf(s.inLn) }

// AdminAddr is the bound admin address ("" when disabled).
func (s *Sidecar) AdminAddr() string { return addrOf(s.adminLn) }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// Discovery exposes the discovery client (for the admin view and embedding).
func (s *Sidecar) Discovery() *discovery.Client { return s.disc }

// AppReady is closed once the app first accepts connections.
func (s *Sidecar) AppReady() <-chan struct{} { return s.appReady }

// Run serves until ctx is done, then drains (if Drain was not called) and
// stops everything it started.
func (s *Sidecar) Run(ctx context.Context) error {
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	goRun := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	// Discovery outlives ctx until the drain has deregistered.
	goRun("discovery", func() error { return s.disc.Run(bg) })
	goRun("identity", func() error { s.id.run(bg); return nil })
	if s.outLn != nil {
		var router h1.Router
		if !s.cfg.NoFastPath {
			// Requests for the sidecar itself (messaging's /v1/publish)
			// are handed off to net/http on the app's own connection
			// (FastOutbound.HandOff), so they need no listener of their own.
			router = s.out.Fast()
		}
		s.outFront = newFront(s.outLn, s.out, router, s.log.With("component", "outbound"), s.cfg.Listen, s.listenMetrics(), "outbound")
		if s.outFront.fast != nil {
			s.outFront.fast.DialWait = s.fastDial()
		}
		s.outFront.useH2(s.cfg.H2, s.out.H2(), s.h2Dial(), nil, s.log.With("component", "outbound-h2"), s.cfg.Listen)
		s.outFront.run(goRun, "outbound")
	}
	if s.inLn != nil {
		// Every connection from another sidecar is mutual TLS (strict),
		// or TLS or plaintext (permissive), as the mesh says.
		tl := mtls.NewListener(s.inLn, s.id.src, s.id.mode(), s.log.With("component", "inbound-tls"))
		s.id.listener = tl
		s.id.onHello() // the mode, if the Hello came first
		s.inLn = tl
		defer tl.Wait()
		var router h1.Router
		if !s.cfg.NoFastPath {
			router = s.in.Fast()
		}
		s.inFront = newFront(s.inLn, s.in, router, s.log.With("component", "inbound"), s.cfg.Listen, s.listenMetrics(), "inbound")
		// The verified caller reaches the net/http path's requests.
		s.inFront.hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context { return proxy.WithPeer(ctx, c.RemoteAddr()) }
		s.inFront.useH2(s.cfg.H2, s.in.H2(), nil, func(a net.Addr) context.Context { return proxy.WithPeer(context.Background(), a) },
			s.log.With("component", "inbound-h2"), s.cfg.Listen)
		s.inFront.run(goRun, "inbound")
		goRun("authz", func() error { s.watchPolicies(bg, s.in.Authz); return nil })
		goRun("probe", func() error { s.probe(bg); return nil })
	}
	if s.adminLn != nil {
		s.adminSrv = &http.Server{Handler: s.adminRoutes(), ReadHeaderTimeout: 5 * time.Second}
		goRun("admin", func() error { return serve(s.adminSrv, s.adminLn) })
	}
	for _, u := range s.upstreams {
		goRun("upstream "+u.Service, func() error { return u.Run(bg) })
	}
	s.runMessaging(bg, goRun)
	s.runCapture(bg, goRun)
	s.runLoad(bg, goRun)
	if s.in != nil {
		goRun("rate limit", func() error { s.watchRateLimit(bg); return nil })
	}
	if s.cfg.TrimExecutable {
		goRun("trim", func() error { s.trimLoop(bg); return nil })
	}
	if s.cfg.ReleaseIdleMemory {
		goRun("release", func() error { s.releaseLoop(bg); return nil })
	}
	// The access log outlives the listeners, so the last requests get
	// written; the tracer is shut down (flushing what it holds) after both.
	alCtx, stopAL := context.WithCancel(context.Background())
	defer stopAL()
	alDone := make(chan struct{})
	if s.access != nil {
		go func() { defer close(alDone); _ = s.access.Run(alCtx) }()
	} else {
		close(alDone)
	}
	s.log.Info("sidecar serving", "id", s.cfg.ID,
		"inbound", s.InboundAddr(), "outbound", s.OutboundAddr(), "admin", s.AdminAddr(), "control", s.cfg.Control)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	dctx, cancel := context.WithTimeout(context.Background(), s.cfg.Drain+s.cfg.Propagation)
	_ = s.Drain(dctx)
	cancel()
	stopBG()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.outFront != nil {
		_ = s.outFront.shutdown(sctx)
		s.outFront.close()
	}
	s.stopCapture(sctx)
	if s.adminSrv != nil {
		_ = s.adminSrv.Shutdown(sctx)
	}
	s.out.CloseIdle()
	wg.Wait()
	stopAL()
	<-alDone
	tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Second)
	if terr := s.tracer.Shutdown(tctx); terr != nil {
		s.log.Debug("tracer shutdown", "err", terr)
	}
	tcancel()
	close(errc)
	for e := range errc {
		if err == nil {
			err = e
		}
	}
	s.log.Info("sidecar stopped", "id", s.cfg.ID)
	return err
}

// Drain takes this instance out of the mesh without failing a request:
// deregister, keep serving while callers learn of it (answering with
// Connection: close so their pooled connections end), then stop the inbound
// listener and wait for in-flight requests and tunnels, bounded by ctx. The
// outbound keeps serving, since the app may still be finishing requests that
// call other services. Safe to call more than once.
func (s *Sidecar) Drain(ctx context.Context) error {
	s.drainOnce.Do(func() {
		if s.inLn == nil {
			return
		}
		start := time.Now()
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := s.disc.Deregister(dctx); err != nil {
			s.log.Warn("deregistration not confirmed; callers will drop this instance when its lease ends", "err", err)
		}
		cancel()
		s.stopDeliveries()
		s.in.Drain()
		if s.inFront != nil {
			s.inFront.setDraining()
		}
		select {
		case <-time.After(s.cfg.Propagation):
		case <-ctx.Done():
		}
		if s.inFront != nil {
			if err := s.inFront.shutdown(ctx); err != nil {
				s.drainErr = fmt.Errorf("drain: in-flight requests still running after the grace: %w", err)
				s.inFront.close()
			}
		}
		done := make(chan struct{})
		go func() { s.in.WaitTunnels(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		}
		s.in.CloseIdle()
		s.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
	})
	return s.drainErr
}

func newServer(h http.Handler) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		Protocols:         new(http.Protocols),
		// RFC 9113's default frame size, advertised and enforced: a HEADERS
		// frame larger than it is a FRAME_SIZE_ERROR (h2spec 4.2/3) rather
		// than up to 1 MiB buffered per frame.
		HTTP2: &http.HTTP2Config{MaxReadFrameSize: 16 << 10},
	}
	// HTTP/1.1 and HTTP/2 with prior knowledge (h2c, what gRPC speaks) on
	// one port.
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return srv
}

func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// probe watches whether the app accepts connections and tells the control
// plane: quickly until it first does (so a new instance gets traffic at
// once), then every second.
func (s *Sidecar) probe(ctx context.Context) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.AppPort))
	interval := 5 * time.Millisecond
	ready := false
	for {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		ok := err == nil
		if ok {
			c.Close()
		}
		if ok != ready {
			ready = ok
			if ok && !s.waitIdentity(ctx) {
				return
			}
			s.disc.SetReady(ok)
			if ok {
				s.readyOnce.Do(func() { close(s.appReady) })
				interval = time.Second
			}
			s.log.Info("app readiness changed", "ready", ok, "app", addr)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// ParseLabels parses repeated k=v flags.
func ParseLabels(kvs []string, flag string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want NAME=VALUE", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}

// callerAdmin is the admin address a pure client (no instance) names to
// the control plane so that it is scraped too; "" otherwise.
func (s *Sidecar) callerAdmin(inst *pb.Instance, cfg Config) string {
	if inst != nil || s.adminLn == nil {
		return ""
	}
	return advertised(s.adminLn.Addr(), cfg.Admin)
}
