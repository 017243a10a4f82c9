// Package control is the control plane ("config center"): it keeps the
// registry of instances that sidecars register over the Discovery gRPC
// stream, stores the resources users apply through the JSON API, and pushes
// every change of a service to the sidecars subscribed to it.
//
//	weft apply ──HTTP──▶ api ──▶ store (bbolt) ──▶ registry.SetPolicies ─┐
//	sidecar ──gRPC Connect──▶ discoveryServer ──▶ registry ◀─────────────┘
//	                                   ◀── ServiceUpdate (per subscriber queue)
package control

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
	"sync"
	"sync/atomic"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/bind"
	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/admin"
	"github.com/weftmesh/weft/messaging/broker"
	"github.com/weftmesh/weft/registry"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/security/token"
	"github.com/weftmesh/weft/store"
	"github.com/weftmesh/weft/telemetry/aggregator"
	"github.com/weftmesh/weft/telemetry/tracestore"
	"github.com/weftmesh/weft/telemetry/tracing"
)

// Config is the control plane's static configuration (flags).
type Config struct {
	GRPCAddr  string
	HTTPAddr  string
	DataDir   string
	LeaseTTL  time.Duration // no message from a sidecar for this long ends its lease
	SyncGrace time.Duration // see registry.Options.SyncGrace
	Logger    *slog.Logger
	// Settings are handed to every sidecar in the stream's Hello.
	Settings map[string]string
	// OTLPEndpoint is the span export target handed to sidecars (Hello
	// setting "otlp_endpoint"): empty for this control plane's own
	// receiver, "none" for no tracing by default.
	OTLPEndpoint string
	// ScrapeInterval is how often every sidecar's /metrics is scraped
	// (default 10s); the stats window keeps 15 minutes of them.
	ScrapeInterval time.Duration
	// MaxTraces bounds the embedded trace store (default 5000).
	MaxTraces int
	// Broker is the message broker: "" runs the embedded one (on
	// BrokerAddr, stored under DataDir/broker), nats://host:port[,…] an
	// external NATS cluster, "off" no messaging. Sidecars get its URL.
	Broker string
	// BrokerAddr is the embedded broker's address; empty: 127.0.0.1:15222,
	// or any free port if that one is taken.
	BrokerAddr string
	// MaxMessageBytes is the largest message payload (default 1 MiB).
	MaxMessageBytes int
	// NATS is the TLS and credentials for an external Broker (--nats-*).
	NATS messaging.ClientFiles
	// Security: see security.go.
	Security SecurityConfig
}

// SettingOTLPEndpoint is the Hello setting that tells sidecars where to
// export spans unless their --otlp-endpoint says otherwise.
const SettingOTLPEndpoint = "otlp_endpoint"

// Defaults.
const (
	DefaultGRPCAddr  = "127.0.0.1:15010"
	DefaultHTTPAddr  = "127.0.0.1:15000"
	DefaultDataDir   = "./weft-data"
	DefaultLeaseTTL  = 5 * time.Second
	DefaultSyncGrace = 2 * time.Second
)

// Server is a running control plane.
type Server struct {
	cfg   Config
	log   *slog.Logger
	reg   *registry.Registry
	store store.Store

	mu sync.Mutex // serialises writes to store+registry so they stay in step
	// external are the accepted objects from outside the store (SetExternal).
	external []resource.Object

	grpcLn, httpLn net.Listener

	// The embedded telemetry backend: traces received over OTLP, metrics
	// scraped from sidecars.
	traces   *tracestore.Store
	receiver *tracestore.Receiver
	agg      *aggregator.Aggregator
	callers  callers // pure client sidecars, scraped too

	// Messaging: the embedded broker (nil with an external one or none)
	// and the topics/DLQ API (nil with messaging off).
	broker *broker.Broker
	msg    *admin.Admin

	applies    applyLog  // the latest applies, for the dashboard
	sec        *security // the mesh CA and the certificates it issued
	tokens     *token.Manager
	localToken string
	// accounts reviews Kubernetes ServiceAccount tokens (--kubernetes).
	accounts   atomic.Pointer[AccountReviewer]
	brokerPass string   // the embedded broker's password with --broker-auth
	otlpToken  string   // what the OTLP receiver wants with --api-auth (checkSpans)
	ownOTLP    bool     // the Hello's otlp_endpoint is this control plane's receiver
	logins     sessions // the dashboard's login codes and sessions
}

// New validates cfg, opens the store and binds both listeners, so that a bad
// address or a port in use is reported before anything runs.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.SyncGrace < 0 {
		cfg.SyncGrace = 0
	}
	if cfg.OTLPEndpoint != "" && cfg.OTLPEndpoint != tracing.Disabled {
		if _, err := tracing.ParseEndpoint(cfg.OTLPEndpoint); err != nil {
			return nil, fmt.Errorf("--otlp-endpoint: %w", err)
		}
	}
	st, err := store.OpenBolt(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		store: st,
		reg:   registry.New(registry.Options{Logger: cfg.Logger.With("component", "registry"), SyncGrace: cfg.SyncGrace}),
	}
	objs, err := st.List()
	if err != nil {
		st.Close()
		return nil, err
	}
	s.reg.SetConfig(serviceConfig(objs))
	if s.grpcLn, err = bind.TCP("--grpc-addr", cfg.GRPCAddr); err != nil {
		st.Close()
		return nil, err
	}
	if s.httpLn, err = bind.TCP("--http-addr", cfg.HTTPAddr); err != nil {
		s.grpcLn.Close()
		st.Close()
		return nil, err
	}
	s.newTelemetry()
	if s.otlpToken, err = s.storedSecret(otlpTokenSecret); err == nil {
		err = s.newSecurity()
	}
	if err != nil {
		s.httpLn.Close()
		s.grpcLn.Close()
		st.Close()
		return nil, err
	}
	if s.ownOTLP {
		s.sec.otlpToken = s.otlpToken // only for sidecars exporting to this receiver
	}

	if err = s.newMessaging(objs); err != nil {
		s.httpLn.Close()
		s.grpcLn.Close()
		st.Close()
		return nil, err
	}
	return s, nil
}

// newTelemetry sets up the trace store and receiver and the metrics
// aggregator, and advertises the receiver to sidecars.
func (s *Server) newTelemetry() {
	s.traces = tracestore.New(tracestore.Options{MaxTraces: s.cfg.MaxTraces})
	s.receiver = tracestore.NewReceiver(s.traces, s.log.With("component", "traces"))
	s.agg = aggregator.New(aggregator.Config{Interval: s.cfg.ScrapeInterval, Targets: s.scrapeTargets,
		Logger: s.log.With("component", "aggregator")})
	settings := make(map[string]string, len(s.cfg.Settings)+1)
	for k, v := range s.cfg.Settings {
		settings[k] = v
	}
	if _, ok := settings[SettingOTLPEndpoint]; !ok {
		ep := s.cfg.OTLPEndpoint
		if ep == "" {
			scheme := "http://"
			if tlsOn(s.cfg.Security.APITLS, s.httpLn) {
				scheme = "https://" // sidecars verify it by the mesh CA
			}
			ep = scheme + advertisedAddr(s.httpLn.Addr()) + "/v1/traces"
			s.ownOTLP = true
		}
		settings[SettingOTLPEndpoint] = ep
	}
	s.cfg.Settings = settings
}

// advertisedAddr is a listener's address as others on the network reach
// it: the hostname stands in for a wildcard IP.
func advertisedAddr(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.IsUnspecified() {
		return a.String()
	}
	host, err := os.Hostname()
	if err != nil {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(ta.Port))
}

// scrapeTargets is every registered instance that has an admin listener,
// and every connected pure client sidecar that named its own.
func (s *Server) scrapeTargets() []aggregator.Target {
	var out []aggregator.Target
	for _, v := range s.reg.Services() {
		for _, in := range v.Instances {
			a := in.GetAdminAddress()
			if a == "" || len(a) > 256 {
				continue
			}
			if _, _, err := net.SplitHostPort(a); err != nil {
				continue
			}
			out = append(out, aggregator.Target{Service: v.Name, Instance: in.GetId(), Admin: a})
		}
	}
	return append(out, s.callers.targets()...)
}

// Traces and Aggregator expose the embedded telemetry backend.
func (s *Server) Traces() *tracestore.Store          { return s.traces }
func (s *Server) Aggregator() *aggregator.Aggregator { return s.agg }

// GRPCAddr and HTTPAddr return the bound addresses (useful with port 0).
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// Registry exposes the live registry (for embedding, e.g. the demo).
func (s *Server) Registry() *registry.Registry { return s.reg }

// Run serves until ctx is done, then stops both servers gracefully.
func (s *Server) Run(ctx context.Context) error {
	defer s.store.Close()
	id := make([]byte, 6)
	_, _ = rand.Read(id)
	opts := []grpc.ServerOption{}
	if s.grpcTLS() {
		// Sidecars authenticate the control plane by the mesh CA.
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.sec.controlCertificate})))
	}
	gs := grpc.NewServer(append(opts,
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(1<<20),
	)...)
	pb.RegisterDiscoveryServer(gs, &discoveryServer{
		reg: s.reg, log: s.log.With("component", "discovery"), leaseTTL: s.cfg.LeaseTTL,
		id: hex.EncodeToString(id), settings: s.cfg.Settings, sec: s.sec, checkJoin: s.checkJoin,
		strict: s.cfg.Security.MTLS == "strict", callers: &s.callers,
	})
	// Written before serving, so sidecars started with the control plane find it.
	defer s.writeLocalToken()()
	// OTLP/gRPC on the same port as discovery (grpc://host:grpc-port).
	collectorpb.RegisterTraceServiceServer(gs, &spanReceiver{s: s})
	aggCtx, stopAgg := context.WithCancel(context.Background())
	aggDone := make(chan struct{})
	go func() { defer close(aggDone); _ = s.agg.Run(aggCtx) }()
	defer s.waitFor("the metrics scraper", func() { stopAgg(); <-aggDone })
	stopMessaging := s.runMessaging()
	defer s.waitFor("messaging and the embedded broker", stopMessaging)
	hs := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}

	errc := make(chan error, 2)
	s.reg.StartGrace(s.cfg.SyncGrace)
	go func() { errc <- gs.Serve(s.grpcLn) }()
	httpLn := s.httpLn
	if s.APITLS() {
		httpLn = tls.NewListener(httpLn, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.sec.controlCertificate,
			NextProtos: []string{"http/1.1"}})
	}
	go func() {
		if err := hs.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()
	grace := time.NewTimer(s.cfg.SyncGrace)
	defer grace.Stop()
	s.log.Info("control plane serving", "grpc", s.GRPCAddr(), "grpc_tls", s.grpcTLS(), "http", s.HTTPAddr(), "api_tls", s.APITLS(), "api_auth", s.cfg.Security.APIAuth, "data_dir", s.cfg.DataDir)

	var err error
	running := 2
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-grace.C:
			s.reg.EndGrace()
		case err = <-errc:
			running--
			break loop
		}
	}
	s.log.Info("control plane stopping")
	// Sidecars' Connect streams never end on their own and sidecars
	// reconnect (to the next control plane) by themselves, so waiting long
	// for them only delays a restart, which needs this process's store lock.
	s.waitFor("the JSON API's requests in flight", func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if hs.Shutdown(sctx) != nil {
			_ = hs.Close() // a request still running after the grace (a long poll) is cut
		}
	})
	s.waitFor("gRPC streams to close", func() {
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(200 * time.Millisecond):
			gs.Stop()
			<-stopped
		}
	})
	for ; running > 0; running-- {
		if e := <-errc; err == nil && e != nil && !errors.Is(e, grpc.ErrServerStopped) {
			err = e
		}
	}
	return err
}

// waitFor runs one shutdown step; when it takes longer than shutdownNote,
// it says what the control plane is waiting for, so a slow exit is never
// silent.
func (s *Server) waitFor(what string, step func()) {
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); step() }()
	select {
	case <-done:
	case <-time.After(shutdownNote):
		s.log.Info("shutting down: waiting for "+what, "waited", time.Since(start).Round(time.Millisecond))
		<-done
	}
	s.log.Debug("shutdown step done", "step", what, "took", time.Since(start).Round(time.Millisecond))
}

// shutdownNote is how long a shutdown step runs before it is logged.
const shutdownNote = 300 * time.Millisecond

// serviceConfig groups stored objects by the service they configure, in
// the store's order (kind, then name).
func serviceConfig(objs []resource.Object) map[string][]*pb.ConfigObject {
	out := map[string][]*pb.ConfigObject{}
	for _, o := range objs {
		svc := o.Service()
		if svc == "" {
			continue
		}
		out[svc] = append(out[svc], &pb.ConfigObject{Kind: o.Kind, Name: o.Metadata.Name, SpecJson: o.Spec, Generation: o.Metadata.Generation})
	}
	return out
}
