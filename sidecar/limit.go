package sidecar

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/proxy/h1"
)

// ListenLimits bound what clients of a proxy listener (outbound, inbound)
// can make the sidecar hold.
type ListenLimits struct {
	// ReadHeaderTimeout bounds the time from a request head's first byte
	// to its end (a slowloris client is cut off after it).
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds a keep-alive connection's wait for its next request.
	IdleTimeout time.Duration
	// MaxConns bounds the open connections per listener; one more is
	// accepted and closed at once, counted with reason max_connections.
	MaxConns int
	// WriteTimeout bounds a write to a client that makes no progress (a
	// client that stops reading its response is cut off after it).
	WriteTimeout time.Duration
	// BodyTimeout bounds the wait for the next bytes of an HTTP/1.x
	// request body, and MinBodyRate (bytes/s; 0: none) the slowest pace a
	// body may keep after its first BodyTimeout: a slower one is answered
	// 408 and its connection closed.
	BodyTimeout time.Duration
	MinBodyRate int
	// TunnelIdle closes a WebSocket or CONNECT tunnel quiet both ways
	// this long (fast path).
	TunnelIdle time.Duration
}

// Defaults of ListenLimits.
const (
	DefaultReadHeaderTimeout = 30 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultMaxConns          = 10000
	DefaultWriteTimeout      = 60 * time.Second // nginx's send_timeout
	DefaultBodyTimeout       = 60 * time.Second // nginx's client_body_timeout
	DefaultMinBodyRate       = 256              // bytes/s; Kestrel's floor is 240
	DefaultTunnelIdle        = time.Hour
)

func (l ListenLimits) withDefaults() ListenLimits {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultWriteTimeout
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = DefaultBodyTimeout
	}
	if l.MinBodyRate < 0 {
		l.MinBodyRate = 0
	}
	if l.TunnelIdle <= 0 {
		l.TunnelIdle = DefaultTunnelIdle
	}
	return l
}

// Listener metric names.
const (
	ListenerConnections = "weft_listener_connections"
	ListenerRejected    = "weft_listener_rejected_total"
	ListenerClosed      = "weft_listener_closed_total"
	ListenerTunnels     = "weft_listener_tunnels_total"
	ListenerTunnelsOpen = "weft_listener_tunnels_open"
)

// listenerMetrics are the per-listener connection gauges and rejection
// counters, on the sidecar's registry.
type listenerMetrics struct {
	open     *prometheus.GaugeVec
	rejected *prometheus.CounterVec
	closed   *prometheus.CounterVec
	reg      prometheus.Registerer
}

func newListenerMetrics(reg prometheus.Registerer) *listenerMetrics {
	m := &listenerMetrics{reg: reg,
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ListenerConnections,
			Help: "Connections open on a proxy listener."}, []string{"listener"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ListenerRejected,
			Help: "Connections a proxy listener closed as soon as it accepted them, by reason (max_connections)."}, []string{"listener", "reason"}),
	}
	m.closed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: ListenerClosed,
		Help: "Connections a proxy listener cut off for abuse, by reason (h2_control_flood, h2_empty_frames)."}, []string{"listener", "reason"})
	reg.MustRegister(m.open, m.rejected, m.closed)
	return m
}

// limitListener counts a listener's open connections and closes, at once,
// each accepted beyond max.
type limitListener struct {
	net.Listener
	max      int64
	n        atomic.Int64
	open     prometheus.Gauge
	rejected prometheus.Counter

	writeTimeout time.Duration
}

func (m *listenerMetrics) limit(ln net.Listener, name string, max int, writeTimeout time.Duration) net.Listener {
	return &limitListener{Listener: ln, max: int64(max), open: m.open.WithLabelValues(name),
		rejected: m.rejected.WithLabelValues(name, "max_connections"), writeTimeout: writeTimeout}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.n.Add(1) > l.max {
			l.n.Add(-1)
			l.rejected.Inc()
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // a reset: the client learns at once
			}
			c.Close()
			continue
		}
		l.open.Inc()
		release := func() { l.n.Add(-1); l.open.Dec() }
		if tc, ok := c.(*net.TCPConn); ok {
			cc := &countedTCPConn{TCPConn: tc}
			cc.counter.init(tc, release, l.writeTimeout)
			return cc, nil
		}
		cc := &countedConn{under: under{c}}
		cc.counter.init(c, release, l.writeTimeout)
		return cc, nil
	}
}

// counter is what each accepted connection carries: its slot on the
// listener, given back at the first Close, and the write timeout, renewed
// before each Write. Embedded beside the connection, its four methods are
// shallower than the connection's promoted ones, so they win and every
// other method stays the connection's own.
type counter struct {
	conn    net.Conn // the connection it is embedded beside
	once    sync.Once
	release func()
	wt      writeDeadline
}

func (c *counter) init(conn net.Conn, release func(), writeTimeout time.Duration) {
	c.conn, c.release, c.wt.d = conn, release, writeTimeout
}

func (c *counter) Write(p []byte) (int, error) {
	c.wt.before(c.conn)
	return c.conn.Write(p)
}

func (c *counter) SetDeadline(t time.Time) error {
	c.wt.set(t)
	return c.conn.SetDeadline(t)
}

func (c *counter) SetWriteDeadline(t time.Time) error {
	c.wt.set(t)
	return c.conn.SetWriteDeadline(t)
}

func (c *counter) Close() error {
	err := c.conn.Close()
	c.once.Do(c.release)
	return err
}

// countedTCPConn embeds the concrete *net.TCPConn, not a net.Conn, so the
// methods declared on it stay on the wrapper: ReadFrom and WriteTo
// (splice(2) for io.Copy), SyscallConn (the h1 engine parks idle
// connections on their fd) and CloseWrite.
type countedTCPConn struct {
	*net.TCPConn
	counter
}

// countedConn is any other accepted connection (the inbound's TLS ones).
type countedConn struct {
	under
	counter
}

// under holds a connection one level down, so that counter's methods are
// the shallower ones (a net.Conn embedded directly would tie with them).
type under struct{ net.Conn }

// CloseWrite half-closes when the connection under it can (a tunnel's
// end), else closes it.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// countTunnels exports the fast path's tunnel counts for one listener.
func (m *listenerMetrics) countTunnels(name string, s *h1.Server) {
	for _, kind := range []string{"upgrade", "connect"} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: ListenerTunnels,
			Help:        "WebSocket (Upgrade) and CONNECT tunnels the HTTP/1.1 fast path opened, by kind.",
			ConstLabels: prometheus.Labels{"listener": name, "kind": kind, "engine": "h1"}}, func() float64 {
			st := s.TunnelStats()
			if kind == "upgrade" {
				return float64(st.Upgrades)
			}
			return float64(st.Connects)
		}))
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: ListenerTunnelsOpen,
		Help:        "Tunnels open on the HTTP/1.1 fast path.",
		ConstLabels: prometheus.Labels{"listener": name, "engine": "h1"}}, func() float64 { return float64(s.TunnelStats().Open) }))
}

// guardListener wraps each accepted connection (the h2 frame guard, for
// net/http serving a listener alone: --no-fast-path).
type guardListener struct {
	net.Listener
	guard func(net.Conn) net.Conn
}

func (l *guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.guard(c), nil
}

// listenMetrics registers the listener metrics on the sidecar's registry
// the first time a listener needs them.
func (s *Sidecar) listenMetrics() *listenerMetrics {
	s.lmOnce.Do(func() { s.lm = newListenerMetrics(s.metrics.Registry()) })
	return s.lm
}
