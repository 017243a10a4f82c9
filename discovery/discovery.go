// Package discovery is the sidecar's client of the control plane. It keeps one
// gRPC stream open (reconnecting with backoff), registers the sidecar's own
// instance on it, and subscribes lazily to each destination service the app
// calls. Every update is turned into an immutable Destination — endpoints plus
// a ready-built balancer Picker — swapped in atomically, so the proxy's
// per-request lookup takes no lock. When the control plane is unreachable the
// last view keeps serving.
package discovery

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/healthcheck"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/route"
)

// Errors a lookup can end with; the proxy turns each into an x-weft-error.
var (
	ErrControlUnreachable  = errors.New("control plane unreachable and no cached view of the service")
	ErrDiscoveryTimeout    = errors.New("control plane did not answer for the service in time")
	ErrTooManyDestinations = errors.New("too many destination services")
)

// Destination is one destination service as the proxy sees it. Immutable.
type Destination struct {
	Service   string
	Exists    bool
	Version   uint64
	Instances []*pb.Instance       // every instance, sorted by id
	Endpoints []*balancer.Endpoint // the ready ones, sorted by id
	Picker    balancer.Picker
	Algorithm string
	HashKey   resource.HashKey
	Timeout   time.Duration
	Policy    *resource.TrafficPolicySpec // nil when the service has none
	// Traffic is the compiled policy the request pipeline applies (the
	// defaults when the service has no TrafficPolicy). Never nil.
	Traffic *policy.Policy
	// Outlier maps each endpoint to its outlier-detection counters; nil
	// without outlier detection. Ejected instances are not in Endpoints.
	Outlier map[*balancer.Endpoint]*policy.Stat
	// Routes is the service's compiled Route; nil without one.
	Routes *route.Table
	// Config holds every object configuring the service (its TrafficPolicy,
	// Subscriptions, …), sorted by kind and name.
	Config []*pb.ConfigObject
}

// Config configures a Client.
type Config struct {
	ControlAddr string
	// Instance is this sidecar's own instance; nil for a pure client.
	Instance *pb.Instance
	Logger   *slog.Logger
	// MaxDestinations bounds subscriptions (default 1024).
	MaxDestinations int
	// FirstUpdateWait bounds how long a request waits for a new
	// destination's first update (default 3s).
	FirstUpdateWait time.Duration
	// Heartbeat is the interval of lease renewals (default 1s).
	Heartbeat time.Duration
	// Zone is the caller's zone: destinations prefer their instances in
	// it (see balancer.Build). "" (or a pure client without --zone): none.
	Zone string
	// OnHello is called after each stream's Hello (settings are updated),
	// and OnCertificate for each Certificate the control plane sends (an
	// answer to RequestCertificate, or a new trust bundle). Both run on the
	// stream's receive loop and must not block.
	OnHello       func()
	OnCertificate func(*pb.Certificate)
	// Greeting, when set, returns a message sent first on every stream,
	// before the registration (the identity's CSR: which service the
	// stream may register); nil: none.
	Greeting func() *pb.SidecarMessage
	// TLS, when set, secures the stream (the control plane's certificate
	// verified by the mesh CA); nil: plaintext (a loopback control plane).
	TLS *tls.Config
	// OnEjected, when set, is told how many instances of a destination are
	// ejected by outlier detection each time that changes (for a gauge).
	OnEjected func(service string, ejected int)
	// OnEjections, when set, is told which instances of a destination are
	// ejected each time that changes (none: the destination has no
	// ejections, or no longer outlier detection).
	OnEjections func(service string, ejected []policy.Ejection)
	// OnSweptEjections, when set, is told how many instances of a
	// destination the periodic review ejected (success rate), for the
	// ejections counter (the request path counts its own).
	OnSweptEjections func(service string, n int)
	// HealthDial opens a connection to an instance's inbound for active
	// health checks (outlierDetection.healthCheck); nil: plain TCP.
	HealthDial func(ctx context.Context, addr string) (net.Conn, error)
	// CallerService, CallerID and CallerAdmin name a pure client (Instance
	// nil) and its admin listener on every stream (gRPC metadata), so the
	// control plane scrapes it: its ejections show in weft get services.
	// Empty CallerAdmin: not sent.
	CallerService, CallerID, CallerAdmin string
}

// Client is safe for concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger

	table atomic.Pointer[map[string]*Destination]

	mu       sync.Mutex
	wanted   map[string]*want
	states   map[string]*state
	instance *pb.Instance // nil for a pure client or once deregistered
	// announced: the instance has been registered, which waits for its app's
	// first readiness — an instance joins the mesh ready or not at all.
	announced bool
	stream    *streamState // nil while disconnected
	settings  map[string]string
	hello     *pb.Hello // the latest stream's Hello (control id, version); nil before the first
	connected atomic.Bool
	// everConnected: a stream has been up once, so there is a view to keep.
	everConnected atomic.Bool
	acks          chan struct{}
	watchers      map[string]map[chan *Destination]struct{}
	// ejectc wakes the outlier loop when a detector ejected an instance.
	ejectc chan struct{}
	// unmeshed holds the addresses of instances without a sidecar.
	unmeshed atomic.Pointer[map[string]bool]

	updates atomic.Int64
}

type want struct {
	ready chan struct{} // closed at the first update
	done  bool
}

type state struct {
	exists    bool
	version   uint64
	instances map[string]*pb.Instance
	endpoints map[string]*balancer.Endpoint // kept across rebuilds: InFlight survives
	config    []*pb.ConfigObject
	live      *policy.Live // budget, breaker, outlier state: kept across rebuilds
	unmeshed  int          // instances without a sidecar
}

type streamState struct {
	sendc  chan *pb.SidecarMessage
	cancel context.CancelFunc
}

// New returns a client; Run connects it.
func New(cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxDestinations <= 0 {
		cfg.MaxDestinations = 1024
	}
	if cfg.FirstUpdateWait <= 0 {
		cfg.FirstUpdateWait = 3 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	c := &Client{cfg: cfg, log: cfg.Logger, wanted: map[string]*want{}, states: map[string]*state{},
		acks: make(chan struct{}, 1), watchers: map[string]map[chan *Destination]struct{}{}, ejectc: make(chan struct{}, 1)}
	if cfg.Instance != nil {
		c.instance = proto.CloneOf(cfg.Instance)
	}
	empty := map[string]*Destination{}
	c.table.Store(&empty)
	return c
}

// Connected reports whether the stream to the control plane is up.
func (c *Client) Connected() bool { return c.connected.Load() }

// Instance returns this sidecar's instance as last registered (nil if none).
func (c *Client) Instance() *pb.Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.instance == nil {
		return nil
	}
	return proto.CloneOf(c.instance)
}

// ControlPlane returns the id and version of the control plane the latest
// stream was opened to ("" before the first).
func (c *Client) ControlPlane() (id, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hello == nil {
		return "", ""
	}
	return c.hello.ControlId, c.hello.ControlVersion
}

// Setting returns a mesh-wide setting from the control plane's Hello.
func (c *Client) Setting(key string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.settings[key]
}

// Destinations returns the current view, sorted by service.
func (c *Client) Destinations() []*Destination {
	m := *c.table.Load()
	out := make([]*Destination, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

// Cached returns the destination if it is in the view, without waiting.
func (c *Client) Cached(service string) (*Destination, bool) {
	d, ok := (*c.table.Load())[service]
	return d, ok
}

// CachedBytes is Cached for a name held as bytes (the fast path's Host),
// without allocating.
func (c *Client) CachedBytes(service []byte) (*Destination, bool) {
	d, ok := (*c.table.Load())[string(service)]
	return d, ok
}

// Lookup returns the destination, subscribing and waiting for its first
// update when the app calls a service for the first time.
func (c *Client) Lookup(ctx context.Context, service string) (*Destination, error) {
	if d, ok := (*c.table.Load())[service]; ok {
		return d, nil
	}
	c.mu.Lock()
	w := c.wanted[service]
	if w == nil {
		if len(c.wanted) >= c.cfg.MaxDestinations {
			c.evictUnknownLocked()
		}
		if len(c.wanted) >= c.cfg.MaxDestinations {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w (%d subscribed)", ErrTooManyDestinations, len(c.wanted))
		}
		w = &want{ready: make(chan struct{})}
		c.wanted[service] = w
		c.sendLocked(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Subscribe{Subscribe: &pb.Subscribe{Services: []string{service}}}})
	}
	c.mu.Unlock()

	t := time.NewTimer(c.cfg.FirstUpdateWait)
	defer t.Stop()
	select {
	case <-w.ready:
		if d, ok := (*c.table.Load())[service]; ok {
			return d, nil
		}
		return nil, ErrDiscoveryTimeout
	case <-t.C:
		if !c.connected.Load() {
			return nil, ErrControlUnreachable
		}
		return nil, ErrDiscoveryTimeout
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// evictUnknownLocked drops subscriptions to services that do not exist, so
// calls to random host names cannot grow the view without bound.
func (c *Client) evictUnknownLocked() {
	var drop []string
	for name, w := range c.wanted {
		if st := c.states[name]; w.done && (st == nil || !st.exists) && len(c.watchers[name]) == 0 {
			drop = append(drop, name)
		}
	}
	if len(drop) == 0 {
		return
	}
	for _, name := range drop {
		delete(c.wanted, name)
		delete(c.states, name)
	}
	next := maps.Clone(*c.table.Load())
	for _, name := range drop {
		delete(next, name)
	}
	c.table.Store(&next)
	c.sendLocked(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Unsubscribe{Unsubscribe: &pb.Unsubscribe{Services: drop}}})
}

// sendLocked queues m on the current stream; with no stream it is dropped,
// as the next stream starts with the full state anyway.
func (c *Client) sendLocked(m *pb.SidecarMessage) {
	if c.stream == nil {
		return
	}
	select {
	case c.stream.sendc <- m:
	default:
		// The control plane is not reading: resync on a fresh stream.
		c.stream.cancel()
	}
}

// RequestCertificate sends a CSR on the current stream; false when
// disconnected (try again once connected).
func (c *Client) RequestCertificate(req *pb.CertificateRequest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream == nil || !c.connected.Load() {
		return false
	}
	c.sendLocked(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Csr{Csr: req}})
	return true
}

// SetReady updates this instance's readiness at the control plane.
func (c *Client) SetReady(ready bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.instance == nil || (c.instance.Ready == ready && c.announced) {
		return
	}
	c.instance.Ready = ready
	if !c.announced {
		if !ready {
			return
		}
		c.announced = true
	}
	c.sendLocked(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Register{Register: &pb.Register{Instance: proto.CloneOf(c.instance)}}})
}

// SetLoad updates the load report (an x-weft-load value) this instance
// carries in the registry, for callers that have not talked to it lately,
// and re-registers it when it changed. The caller rate-limits: each change
// is pushed to every subscriber of the service.
func (c *Client) SetLoad(v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.instance == nil || c.instance.Load == v {
		return
	}
	c.instance.Load = v
	if c.announced {
		c.sendLocked(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Register{Register: &pb.Register{Instance: proto.CloneOf(c.instance)}}})
	}
}

// Deregister removes this instance from the mesh and waits until the control
// plane has queued the removal to every subscriber (or ctx ends). It is not
// re-registered on reconnect.
func (c *Client) Deregister(ctx context.Context) error {
	c.mu.Lock()
	if c.instance == nil || !c.announced {
		c.instance = nil
		c.mu.Unlock()
		return nil
	}
	c.instance = nil
	connected := c.stream != nil
	select {
	case <-c.acks:
	default:
	}
	c.sendLocked(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Deregister{Deregister: &pb.Deregister{}}})
	c.mu.Unlock()
	if !connected {
		return ErrControlUnreachable
	}
	select {
	case <-c.acks:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run keeps the stream to the control plane up until ctx is done.
func (c *Client) Run(ctx context.Context) error {
	creds := insecure.NewCredentials()
	if c.cfg.TLS != nil {
		creds = credentials.NewTLS(c.cfg.TLS)
	}
	conn, err := grpc.NewClient(c.cfg.ControlAddr,
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		// gRPC's own reconnect backoff grows to 120 s by default; a sidecar
		// must find a restarted control plane within about a second.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	)
	if err != nil {
		return fmt.Errorf("control plane %s: %w", c.cfg.ControlAddr, err)
	}
	defer conn.Close()
	outlierCtx, stopOutliers := context.WithCancel(ctx)
	outliersDone := make(chan struct{})
	go func() {
		defer close(outliersDone)
		c.outliers(outlierCtx)
	}()
	defer func() {
		stopOutliers()
		<-outliersDone
	}()
	client := pb.NewDiscoveryClient(conn)
	backoff := 100 * time.Millisecond
	const maxBackoff = time.Second
	for {
		start := time.Now()
		err := c.session(ctx, client)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		if c.everConnected.Load() {
			c.log.Warn("control plane stream lost; serving the last known view", "control", c.cfg.ControlAddr, "err", err, "retry_in", backoff)
		} else {
			c.log.Warn("control plane not reachable yet; calls to other services fail until it is (is weft control running, and is --control right?)", "control", c.cfg.ControlAddr, "err", err, "retry_in", backoff)
		}
		// Jitter spreads the reconnects of many sidecars after a restart.
		sleep := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(sleep):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// session runs one stream until it fails.
func (c *Client) session(ctx context.Context, client pb.DiscoveryClient) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.cfg.Instance == nil && c.cfg.CallerAdmin != "" {
		sctx = metadata.AppendToOutgoingContext(sctx, "weft-caller-service", c.cfg.CallerService,
			"weft-caller-id", c.cfg.CallerID, "weft-caller-admin", c.cfg.CallerAdmin)
	}
	stream, err := client.Connect(sctx, grpc.WaitForReady(false))
	if err != nil {
		return err
	}
	st := &streamState{sendc: make(chan *pb.SidecarMessage, 256), cancel: cancel}

	// The first messages carry the whole state: who we are, what we watch.
	if c.cfg.Greeting != nil {
		if m := c.cfg.Greeting(); m != nil {
			st.sendc <- m
		}
	}
	c.mu.Lock()
	if c.instance != nil && c.announced {
		st.sendc <- &pb.SidecarMessage{Msg: &pb.SidecarMessage_Register{Register: &pb.Register{Instance: proto.CloneOf(c.instance)}}}
	}
	if len(c.wanted) > 0 {
		st.sendc <- &pb.SidecarMessage{Msg: &pb.SidecarMessage_Subscribe{Subscribe: &pb.Subscribe{Services: slices.Sorted(maps.Keys(c.wanted))}}}
	}
	c.stream = st
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.stream == st {
			c.stream = nil
		}
		c.mu.Unlock()
		c.connected.Store(false)
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	sendErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		hb := time.NewTicker(c.cfg.Heartbeat)
		defer hb.Stop()
		for {
			var m *pb.SidecarMessage
			select {
			case <-sctx.Done():
				_ = stream.CloseSend()
				return
			case m = <-st.sendc:
			case <-hb.C:
				m = &pb.SidecarMessage{Msg: &pb.SidecarMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
			}
			if err := stream.Send(m); err != nil {
				sendErr <- err
				cancel()
				return
			}
		}
	}()

	for {
		m, err := stream.Recv()
		if err != nil {
			select {
			case e := <-sendErr:
				return e
			default:
			}
			return err
		}
		switch msg := m.Msg.(type) {
		case *pb.ControlMessage_Hello:
			c.mu.Lock()
			c.settings = msg.Hello.Settings
			c.hello = msg.Hello
			c.mu.Unlock()
			c.connected.Store(true)
			c.everConnected.Store(true)
			c.log.Info("connected to control plane", "control", c.cfg.ControlAddr, "control_id", msg.Hello.ControlId)
			if c.cfg.OnHello != nil {
				c.cfg.OnHello()
			}
		case *pb.ControlMessage_Certificate:
			if c.cfg.OnCertificate != nil {
				c.cfg.OnCertificate(msg.Certificate)
			}
		case *pb.ControlMessage_Update:
			c.apply(msg.Update)
		case *pb.ControlMessage_Ack:
			select {
			case c.acks <- struct{}{}:
			default:
			}
		}
	}
}

// apply folds one update into the service's state and publishes a new
// Destination for it.
func (c *Client) apply(u *pb.ServiceUpdate) {
	c.updates.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.wanted[u.Service]
	if w == nil {
		return // unsubscribed meanwhile
	}
	st := c.states[u.Service]
	if st == nil {
		st = &state{instances: map[string]*pb.Instance{}, endpoints: map[string]*balancer.Endpoint{}, live: policy.NewLive()}
		c.states[u.Service] = st
	}
	if u.Reset_ {
		clear(st.instances)
	}
	st.exists = u.Exists
	st.version = u.Version
	var loads []*pb.Instance // with a load report the caller has not seen
	for _, in := range u.Upserts {
		if old := st.instances[in.Id]; in.Load != "" && (old == nil || old.Load != in.Load) {
			loads = append(loads, in)
		}
		st.instances[in.Id] = in
	}
	for _, id := range u.Removes {
		delete(st.instances, id)
	}
	if u.ConfigChanged {
		st.config = u.Config
	}
	d := c.build(u.Service, st)
	pushedLoads(st, loads)
	c.publishLocked(u.Service, d)
	c.noteUnmeshedLocked(st)
	if !w.done {
		w.done = true
		close(w.ready)
	}
}

// noteUnmeshedLocked keeps the set of unmeshed instances' addresses that
// Unmeshed reads, rebuilt only when st has or had such instances (mesh-only
// destinations never pay for it).
func (c *Client) noteUnmeshedLocked(st *state) {
	n := 0
	for _, in := range st.instances {
		if in.Unmeshed {
			n++
		}
	}
	if n == 0 && st.unmeshed == 0 {
		return
	}
	st.unmeshed = n
	set := map[string]bool{}
	for _, other := range c.states {
		for _, in := range other.instances {
			if in.Unmeshed {
				set[in.Address] = true
			}
		}
	}
	c.unmeshed.Store(&set)
}

// Unmeshed reports whether addr is an instance with no sidecar (an
// unmeshed Kubernetes endpoint), which callers reach in plaintext. It is
// asked once per new upstream connection, not per request.
func (c *Client) Unmeshed(addr string) bool {
	m := c.unmeshed.Load()
	return m != nil && (*m)[addr]
}

// publishLocked swaps d into the table and hands it to the watchers.
func (c *Client) publishLocked(service string, d *Destination) {
	next := maps.Clone(*c.table.Load())
	next[service] = d
	c.table.Store(&next)
	for ch := range c.watchers[service] {
		offer(ch, d)
	}
}

// pushedLoads hands the load reports that came through the control plane
// to their endpoints, unless an endpoint sent a fresher one itself (every
// response carries one): this is the news for a caller that has not
// talked to an instance lately.
func pushedLoads(st *state, loads []*pb.Instance) {
	now := balancer.Mono()
	for _, in := range loads {
		ep := st.endpoints[in.Id]
		if ep == nil {
			continue
		}
		if _, age, ok := ep.LastLoad(now); !ok || age > balancer.LoadFresh {
			ep.ReportLoadAt(now, []byte(in.Load))
		}
	}
}

// outliers rebuilds the snapshots of destinations whose outlier detector
// ejected an instance (at once) or re-admitted one (reviewed every 100ms).
func (c *Client) outliers(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	reported := map[string]bool{}   // destinations told of ejections, for OnEjections
	checks := map[string]*checker{} // active health checks, by destination
	var stopping []chan struct{}    // checks cancelled, perhaps still finishing a probe
	defer func() {
		for _, ch := range checks {
			ch.cancel()
			stopping = append(stopping, ch.done)
		}
		for _, done := range stopping {
			<-done
		}
	}()
	for {
		ejected := false
		select {
		case <-ctx.Done():
			return
		case <-c.ejectc:
			ejected = true
		case <-tick.C:
		}
		now := time.Now()
		c.mu.Lock()
		for service, st := range c.states {
			d, ok := (*c.table.Load())[service]
			if !ok || d.Traffic == nil || d.Traffic.Outlier == nil || c.wanted[service] == nil {
				continue
			}
			swept := d.Traffic.Outlier.Sweep(now)
			if n := d.Traffic.Outlier.SweptEjections(); n > 0 && c.cfg.OnSweptEjections != nil {
				c.cfg.OnSweptEjections(service, n)
			}
			if swept || ejected {
				nd := c.build(service, st)
				c.publishLocked(service, nd)
				if f := c.cfg.OnEjected; f != nil {
					f(service, len(nd.Outlier)-len(nd.Endpoints))
				}
				if f := c.cfg.OnEjections; f != nil {
					ej := d.Traffic.Outlier.Ejections()
					if len(ej) > 0 || reported[service] {
						f(service, ej)
					}
					reported[service] = len(ej) > 0
				}
			}
		}
		stopping = c.reconcileChecks(ctx, checks, stopping)
		for service := range reported {
			d, ok := (*c.table.Load())[service]
			if !ok || d.Traffic == nil || d.Traffic.Outlier == nil || c.wanted[service] == nil {
				// Gone, or outlier detection turned off: nothing is ejected.
				c.cfg.OnEjections(service, nil)
				delete(reported, service)
			}
		}
		c.mu.Unlock()
	}
}

// checker is one destination's running active health check.
type checker struct {
	hc     policy.HealthCheck
	det    *policy.Detector
	cancel context.CancelFunc
	done   chan struct{} // closed when its probes are over
}

// reconcileChecks starts the health checks of destinations whose policy
// asks for one and cancels those of destinations gone, or whose check
// changed; c.mu is held, so it does not wait for them: it returns the
// cancelled checks still finishing (the outlier loop waits for them when
// it ends).
func (c *Client) reconcileChecks(ctx context.Context, checks map[string]*checker, stopping []chan struct{}) []chan struct{} {
	stopping = slices.DeleteFunc(stopping, func(done chan struct{}) bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	table := *c.table.Load()
	for service, ch := range checks {
		d, ok := table[service]
		if !ok || c.wanted[service] == nil || d.Traffic == nil || d.Traffic.HealthCheck == nil ||
			*d.Traffic.HealthCheck != ch.hc || d.Traffic.Outlier != ch.det {
			ch.cancel()
			stopping = append(stopping, ch.done)
			delete(checks, service)
		}
	}
	for service, d := range table {
		if checks[service] != nil || c.wanted[service] == nil || d.Traffic == nil || d.Traffic.HealthCheck == nil || d.Traffic.Outlier == nil {
			continue
		}
		checks[service] = c.startCheck(ctx, service, *d.Traffic.HealthCheck, d.Traffic.Outlier)
	}
	return stopping
}

func (c *Client) startCheck(ctx context.Context, service string, hc policy.HealthCheck, det *policy.Detector) *checker {
	dial := c.cfg.HealthDial
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	cfg := healthcheck.Config{Service: service, Path: hc.Path, Interval: hc.Interval, Timeout: hc.Timeout, Dial: dial,
		Source: c.cfg.Instance.GetService(),
		Targets: func() []healthcheck.Target {
			d := (*c.table.Load())[service]
			if d == nil {
				return nil
			}
			out := make([]healthcheck.Target, 0, len(d.Outlier))
			for ep := range d.Outlier {
				out = append(out, healthcheck.Target{ID: ep.ID, Address: ep.Address})
			}
			return out
		},
		Report: func(id string, healthy bool, why string) {
			if det.ReportHealth(id, healthy, why, time.Now()) {
				c.ejected() // the outlier loop rebuilds the snapshot
			}
		}}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		healthcheck.Run(cctx, cfg)
	}()
	return &checker{hc: hc, det: det, cancel: cancel, done: done}
}

func (c *Client) ejected() {
	select {
	case c.ejectc <- struct{}{}:
	default:
	}
}

// offer replaces whatever the channel holds with d: a watcher always gets
// the latest view and never blocks the stream.
func offer(ch chan *Destination, d *Destination) {
	select {
	case <-ch:
	default:
	}
	select {
	case ch <- d:
	default:
	}
}

// Watch subscribes to service (if not yet) and returns a channel that gets
// the service's Destination every time it changes — only the latest when the
// reader is slow — and a function that stops the watch. The current view,
// if any, is delivered at once.
func (c *Client) Watch(service string) (<-chan *Destination, func()) {
	ch := make(chan *Destination, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watchers[service] == nil {
		c.watchers[service] = map[chan *Destination]struct{}{}
	}
	c.watchers[service][ch] = struct{}{}
	if c.wanted[service] == nil {
		c.wanted[service] = &want{ready: make(chan struct{})}
		c.sendLocked(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Subscribe{Subscribe: &pb.Subscribe{Services: []string{service}}}})
	}
	if d, ok := (*c.table.Load())[service]; ok {
		offer(ch, d)
	}
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.watchers[service], ch)
	}
}

func (c *Client) build(service string, st *state) *Destination {
	d := &Destination{Service: service, Exists: st.exists, Version: st.version, Algorithm: resource.DefaultAlgorithm,
		Timeout: resource.DefaultTimeout, Config: st.config}
	if st.live == nil {
		st.live = policy.NewLive()
	}
	var routeSpec *resource.RouteSpec
	routeName := ""
	for _, obj := range st.config {
		if obj.Kind == resource.KindRoute {
			var rs resource.RouteSpec
			if err := json.Unmarshal(obj.SpecJson, &rs); err != nil {
				c.log.Error("ignoring unreadable route", "service", service, "err", err)
			} else {
				routeSpec, routeName = &rs, obj.Name
			}
			continue
		}
		if obj.Kind != resource.KindTrafficPolicy {
			continue
		}
		var spec resource.TrafficPolicySpec
		if err := json.Unmarshal(obj.SpecJson, &spec); err != nil {
			c.log.Error("ignoring unreadable policy", "service", service, "err", err)
		} else {
			d.Policy = &spec
			d.Algorithm = spec.Algorithm()
			d.Timeout = spec.TimeoutDuration()
			if spec.LoadBalancer != nil {
				d.HashKey, _ = resource.ParseHashKey(spec.LoadBalancer.HashKey)
			}
		}
	}
	opts := balancer.BuildOptions{Zone: c.cfg.Zone}
	if d.Policy != nil {
		opts.HashBalanceFactor = d.Policy.BuildOptions().HashBalanceFactor
	}
	b, err := balancer.Get(d.Algorithm)
	if err != nil {
		c.log.Error("policy names an algorithm this sidecar lacks; using the default", "service", service, "err", err)
		d.Algorithm = resource.DefaultAlgorithm
		b, _ = balancer.Get(d.Algorithm)
	}
	d.Traffic = policy.Compile(d.Policy, st.live)
	d.Timeout = d.Traffic.Timeout
	live := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(st.instances)) {
		in := st.instances[id]
		d.Instances = append(d.Instances, in)
		if !in.Ready {
			continue
		}
		ep := st.endpoints[id]
		if ep == nil || ep.Address != in.Address {
			ep = &balancer.Endpoint{ID: in.Id, Address: in.Address, Labels: in.Labels, Zone: in.Zone}
			st.endpoints[id] = ep
		}
		live[id] = true
		d.Endpoints = append(d.Endpoints, ep)
	}
	for id := range st.endpoints {
		if !live[id] {
			delete(st.endpoints, id)
		}
	}
	if det := d.Traffic.Outlier; det != nil {
		d.Endpoints = c.withoutEjected(d, det)
	}
	if len(d.Endpoints) == 0 {
		d.Picker = balancer.Empty()
	} else {
		d.Picker = balancer.Build(b, d.Endpoints, opts)
	}
	if routeSpec != nil {
		version := func(ep *balancer.Endpoint) string {
			if in := st.instances[ep.ID]; in != nil {
				return in.Version
			}
			return ""
		}
		build := func(eps []*balancer.Endpoint) balancer.Picker { return balancer.Build(b, eps, opts) }
		d.Routes = route.Compile(routeName, routeSpec, d.Endpoints, version, build, d.Traffic)
	}
	return d
}

// withoutEjected tracks d's ready endpoints in the outlier detector and
// returns those not ejected (the detector never ejects them all).
func (c *Client) withoutEjected(d *Destination, det *policy.Detector) []*balancer.Endpoint {
	det.OnChange(c.ejected)
	ids := make([]string, len(d.Endpoints))
	addrs := make([]string, len(d.Endpoints))
	for i, ep := range d.Endpoints {
		ids[i], addrs[i] = ep.ID, ep.Address
	}
	stats := det.Track(ids, addrs)
	d.Outlier = make(map[*balancer.Endpoint]*policy.Stat, len(d.Endpoints))
	kept := make([]*balancer.Endpoint, 0, len(d.Endpoints))
	for _, ep := range d.Endpoints {
		st := stats[ep.ID]
		d.Outlier[ep] = st
		if !st.Ejected() {
			kept = append(kept, ep)
		}
	}
	return kept
}

// Updates counts updates received (for /stats and tests).
func (c *Client) Updates() int64 { return c.updates.Load() }
