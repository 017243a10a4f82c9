package mtls

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what an inbound listener accepts.
type Mode int32

const (
	// Permissive takes TLS (verified as in Strict) and plaintext alike, for
	// migration.
	Permissive Mode = iota
	// Strict (the default) takes only mutually authenticated TLS; a
	// plaintext connection is answered with one HTTP error line and closed.
	Strict
	// Off is a mesh-wide switch for benchmarks and migrations only:
	// sidecars dial each other in plaintext, and inbound ports take
	// plaintext (and TLS, as Permissive does, so a mesh can be switched
	// without a flag day). No caller is authenticated.
	Off
)

// ParseMode parses "strict", "permissive" or "off"; "" is the default,
// strict.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "strict", "":
		return Strict, nil
	case "permissive":
		return Permissive, nil
	case "off":
		return Off, nil
	}
	return 0, errors.New("want strict, permissive or off")
}

func (m Mode) String() string {
	switch m {
	case Strict:
		return "strict"
	case Off:
		return "off"
	}
	return "permissive"
}

// Peer is what the inbound listener learnt of a connection's caller. A
// connection from Listener reports it as its RemoteAddr, so it reaches
// whatever serves the connection (the HTTP/1.1 engine's Request.RemoteAddr,
// net/http's ConnContext) with no other plumbing.
type Peer struct {
	net.Addr
	// Verified: the caller presented a valid SVID; ID is its identity.
	// False for a plaintext connection a permissive listener took.
	Verified bool
	ID       ID
	// Principal is ID.String(), computed once per connection, and
	// PrincipalBytes the same bytes (for header values without a copy per
	// request).
	Principal      string
	PrincipalBytes []byte
}

// PeerOf returns the Peer behind an address from a Listener's connection.
func PeerOf(a net.Addr) (*Peer, bool) {
	p, ok := a.(*Peer)
	return p, ok
}

// HandshakeTimeout bounds a caller's TLS handshake (and the first byte).
const HandshakeTimeout = 10 * time.Second

// Listener wraps a TCP listener: Accept returns connections whose TLS
// handshake has completed and whose peer was verified (or plaintext ones,
// in permissive mode). Handshakes run on their own goroutines, so a slow
// caller does not hold up the others.
type Listener struct {
	inner net.Listener
	src   *Source
	log   *slog.Logger
	mode  atomic.Int32

	ch     chan net.Conn
	done   chan struct{}
	once   sync.Once
	err    error // accept error, set before done closes
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

// NewListener starts accepting on inner; Close stops it and every
// handshake in progress.
func NewListener(inner net.Listener, src *Source, mode Mode, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Listener{inner: inner, src: src, log: log, ch: make(chan net.Conn), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.mode.Store(int32(mode))
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// SetMode changes the mode for connections accepted from now on.
func (l *Listener) SetMode(m Mode) { l.mode.Store(int32(m)) }

// Mode is the current mode.
func (l *Listener) Mode() Mode { return Mode(l.mode.Load()) }

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && l.ctx.Err() == nil {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			l.err = err
			l.once.Do(func() { close(l.done) })
			return
		}
		delay = 0
		l.wg.Add(1)
		go l.handshake(c)
	}
}

// plaintextAnswer is what a plaintext caller of a strict port reads.
const plaintextAnswer = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nx-weft-error: mtls_required\r\nConnection: close\r\nContent-Length: 52\r\n\r\nthis port accepts only mutual TLS from mesh sidecars"

func (l *Listener) handshake(c net.Conn) {
	defer l.wg.Done()
	stop := context.AfterFunc(l.ctx, func() { c.SetDeadline(aLongTimeAgo) })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(HandshakeTimeout))
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		c.Close()
		return
	}
	pc := &prefixConn{Conn: c, pre: first[:]}
	var out net.Conn
	if first[0] != 0x16 { // not a TLS handshake record
		if l.Mode() == Strict {
			l.src.fail(ReasonPlaintext)
			l.log.Debug("plaintext connection refused (strict mTLS)", "remote", c.RemoteAddr())
			_, _ = io.WriteString(c, plaintextAnswer)
			c.Close()
			return
		}
		l.src.Plaintext.Add(1)
		out = &peerConn{Conn: pc, peer: &Peer{Addr: c.RemoteAddr()}}
	} else {
		tc := tls.Server(pc, l.src.ServerConfig())
		if err := tc.HandshakeContext(l.ctx); err != nil {
			reason := reasonOf(err)
			l.src.fail(reason)
			l.log.Debug("mTLS handshake refused", "remote", c.RemoteAddr(), "reason", reason, "err", err)
			c.Close()
			return
		}
		cs := tc.ConnectionState()
		id, _ := idOf(cs.PeerCertificates[0]) // verified in VerifyConnection
		l.src.Handshakes.Add(1)
		if cs.DidResume {
			l.src.Resumed.Add(1)
		}
		out = &peerConn{Conn: tc, peer: &Peer{Addr: c.RemoteAddr(), Verified: true, ID: id, Principal: id.String(), PrincipalBytes: []byte(id.String())}}
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case l.ch <- out:
	case <-l.done:
		out.Close()
	case <-l.ctx.Done():
		out.Close()
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// Accept returns the next established connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		if l.err != nil && !errors.Is(l.err, net.ErrClosed) {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting and aborts handshakes in progress.
func (l *Listener) Close() error {
	err := l.inner.Close()
	l.cancel()
	return err
}

// Wait waits for the accept loop and the handshake goroutines to end
// after Close.
func (l *Listener) Wait() { l.wg.Wait() }

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// prefixConn replays bytes read while sniffing the protocol.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *prefixConn) CloseWrite() error { return closeWrite(c.Conn) }

// peerConn reports the Peer as its remote address.
type peerConn struct {
	net.Conn
	peer *Peer
}

func (c *peerConn) RemoteAddr() net.Addr { return c.peer }

// CloseWrite half-closes, which CONNECT tunnels rely on.
func (c *peerConn) CloseWrite() error { return closeWrite(c.Conn) }

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
