// Package capture is Weft's transparent capture: nftables rules in the
// pod's network namespace redirect the app's outbound TCP to a sidecar
// listener (rules_linux.go, through netlink, no iptables binary), and this
// package's Server routes each redirected connection.
//
// Routing, per connection, from its first bytes (at most 300 ms and
// MaxHead bytes are waited for):
//
//   - an HTTP/1.x request whose Host names a service the mesh knows, or the
//     HTTP/2 preface (h2c, gRPC — routed by :authority): meshed — handed to
//     the sidecar's outbound proxy (Mesh), as if the app had sent it to
//     $WEFT_OUTBOUND; balancing, retries, errors and telemetry as usual;
//   - anything else (an unknown host, TLS, a server-first protocol that
//     sends nothing, a lookup that fails): passed through to the original
//     destination (SO_ORIGINAL_DST), as if there were no mesh.
//
// The original IP:port is not mapped back to a service: mesh instances
// are reached by name, and an address may be any instance or none.
//
// The sidecar's own connections are excluded from the redirect by its uid
// (the app must run under another uid), so its dials to other sidecars,
// the control plane and passed-through destinations are not captured again.
package capture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SniffTimeout bounds the wait for a connection's first bytes; a protocol
// where the server speaks first is passed through after it.
const SniffTimeout = 300 * time.Millisecond

// headTimeout bounds the wait for the rest of an HTTP/1.x header block.
const headTimeout = 5 * time.Second

// Server accepts the redirected connections on Listener and routes them.
type Server struct {
	// Listener is where the nftables rules redirect to (127.0.0.1:PORT).
	Listener net.Listener
	// Known reports whether host is a service of the mesh; it may wait for
	// the control plane's first answer about a name.
	Known func(ctx context.Context, host string) bool
	// Log is the logger (nil: discard).
	Log *slog.Logger

	once sync.Once
	mesh *connListener
	wg   sync.WaitGroup

	meshed, passed, failed atomic.Uint64
}

func (s *Server) init() {
	s.once.Do(func() {
		s.mesh = &connListener{addr: s.Listener.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
		if s.Log == nil {
			s.Log = slog.New(slog.DiscardHandler)
		}
	})
}

// Mesh is the listener of the connections to be meshed (their first bytes
// replayed): the sidecar serves it with its outbound proxy.
func (s *Server) Mesh() net.Listener { s.init(); return s.mesh }

// Run accepts until ctx is done, then closes the listener, ends the
// passed-through connections and waits for its goroutines. The Mesh
// listener is left to whoever serves it: its server closes it at shutdown
// (closed earlier, that server would take it for a failure).
func (s *Server) Run(ctx context.Context) error {
	s.init()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { <-ctx.Done(); s.Listener.Close() }()
	var err error
	for {
		c, aerr := s.Listener.Accept()
		if aerr != nil {
			if ctx.Err() == nil && !errors.Is(aerr, net.ErrClosed) {
				err = fmt.Errorf("capture listener: %w", aerr)
			}
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.route(ctx, c)
		}()
	}
	cancel()
	s.wg.Wait()
	return err
}

func (s *Server) route(ctx context.Context, c net.Conn) {
	dst, err := OriginalDst(c)
	if err != nil {
		s.failed.Add(1)
		s.Log.Warn("captured connection without an original destination; closed", "from", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	if dst.String() == s.Listener.Addr().String() {
		// Not redirected: someone dialled the capture port itself.
		s.failed.Add(1)
		s.Log.Warn("connection to the capture port that was not redirected; closed", "from", c.RemoteAddr())
		c.Close()
		return
	}
	br := bufio.NewReaderSize(c, MaxHead)
	kind, host := s.sniff(c, br)
	pc := &peekedConn{Conn: c, r: br}
	mesh := kind == KindH2 || kind == KindHTTP1 && host != "" && s.known(ctx, host)
	if mesh {
		s.meshed.Add(1)
		if !s.mesh.deliver(ctx, pc) {
			c.Close()
		}
		return
	}
	s.passed.Add(1)
	s.passthrough(ctx, pc, dst)
}

func (s *Server) known(ctx context.Context, host string) bool {
	if s.Known == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.Known(ctx, host)
}

// sniff reads the connection's first bytes, within SniffTimeout for the
// first and headTimeout for a whole HTTP/1.x header block.
func (s *Server) sniff(c net.Conn, br *bufio.Reader) (Kind, string) {
	_ = c.SetReadDeadline(time.Now().Add(SniffTimeout))
	defer c.SetReadDeadline(time.Time{})
	if _, err := br.Peek(1); err != nil {
		return KindUnknown, ""
	}
	_ = c.SetReadDeadline(time.Now().Add(headTimeout))
	for {
		b, _ := br.Peek(br.Buffered())
		kind, host := Sniff(b)
		if kind != KindMore {
			return kind, host
		}
		if len(b) >= MaxHead {
			return KindUnknown, ""
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return KindUnknown, ""
		}
	}
}

// passthrough connects to the original destination and copies both ways.
func (s *Server) passthrough(ctx context.Context, c *peekedConn, dst *net.TCPAddr) {
	defer c.Close()
	d := net.Dialer{Timeout: 5 * time.Second}
	up, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		s.Log.Debug("passthrough: original destination unreachable", "dst", dst, "err", err)
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c)
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(c.Conn, up)
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	<-done
}

// Collector exports the connection counts as weft_capture_connections_total.
func (s *Server) Collector() prometheus.Collector { return (*collector)(s) }

type collector Server

var capDesc = prometheus.NewDesc("weft_capture_connections_total",
	"Connections from the app redirected to the sidecar by transparent capture, by route: mesh (to a service), passthrough (to the original destination), error (closed).",
	[]string{"route"}, nil)

func (c *collector) Describe(ch chan<- *prometheus.Desc) { ch <- capDesc }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(capDesc, prometheus.CounterValue, float64(c.meshed.Load()), "mesh")
	ch <- prometheus.MustNewConstMetric(capDesc, prometheus.CounterValue, float64(c.passed.Load()), "passthrough")
	ch <- prometheus.MustNewConstMetric(capDesc, prometheus.CounterValue, float64(c.failed.Load()), "error")
}

// peekedConn replays the bytes read while sniffing, then reads the
// connection.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the TCP connection (for tunnels).
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// connListener is a net.Listener fed with connections by deliver.
type connListener struct {
	addr      net.Addr
	ch        chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func (l *connListener) deliver(ctx context.Context, c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	case <-ctx.Done():
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
