package sidecar

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
}

// Defaults of ListenLimits.
const (
	DefaultReadHeaderTimeout = 30 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultMaxConns          = 10000
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
	return l
}

// Listener metric names.
const (
	ListenerConnections = "weft_listener_connections"
	ListenerRejected    = "weft_listener_rejected_total"
	ListenerClosed      = "weft_listener_closed_total"
)

// listenerMetrics are the per-listener connection gauges and rejection
// counters, on the sidecar's registry.
type listenerMetrics struct {
	open     *prometheus.GaugeVec
	rejected *prometheus.CounterVec
	closed   *prometheus.CounterVec
}

func newListenerMetrics(reg prometheus.Registerer) *listenerMetrics {
	m := &listenerMetrics{
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
}

func (m *listenerMetrics) limit(ln net.Listener, name string, max int) net.Listener {
	return &limitListener{Listener: ln, max: int64(max), open: m.open.WithLabelValues(name),
		rejected: m.rejected.WithLabelValues(name, "max_connections")}
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
		// Keep *net.TCPConn's own methods (ReadFrom, WriteTo: splice for
		// tunnels) by embedding the concrete type.
		if tc, ok := c.(*net.TCPConn); ok {
			return &countedTCPConn{TCPConn: tc, release: release}, nil
		}
		return &countedConn{Conn: c, release: release}, nil
	}
}

type countedTCPConn struct {
	*net.TCPConn
	once    sync.Once
	release func()
}

func (c *countedTCPConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(c.release)
	return err
}

type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// listenMetrics registers the listener metrics on the sidecar's registry
// the first time a listener needs them.
func (s *Sidecar) listenMetrics() *listenerMetrics {
	s.lmOnce.Do(func() { s.lm = newListenerMetrics(s.metrics.Registry()) })
	return s.lm
}
