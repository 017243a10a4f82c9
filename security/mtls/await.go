package mtls

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"syscall"
)

// DialHTTP1 is DialUnlessFreed offering ALPN http/1.1 for the HTTP/1.1
// engine's pool. A TLS connection it returns is a *ReplyConn: besides
// Write, it can send a request's last bytes and return once the reply is
// readable (WriteAwait), which spares the read that would find nothing
// before the netpoller wait (see proxy/h1.ReplyAwaiter). A plaintext
// connection is the *net.TCPConn itself; the engine does the same on its
// fd.
func (d *Dialer) DialHTTP1(ctx context.Context, network, addr string, freed <-chan struct{}) (net.Conn, error) {
	return d.dial(ctx, network, addr, ALPNHTTP1, freed, true)
}

// tls13Overhead is what a TLS 1.3 record adds to its plaintext: the 5-byte
// header, the inner content type and the 16-byte AEAD tag (AES-GCM and
// ChaCha20-Poly1305 alike; crypto/tls adds no padding).
const tls13Overhead = 5 + 1 + 16

// ReplyConn is an HTTP/1.1 mTLS connection whose TCP connection can wait
// for the reply right after the write of a request (awaitConn).
type ReplyConn struct {
	*tls.Conn
	aw *awaitConn
}

// WriteAwait writes p as one TLS record and waits until the TCP
// connection is readable (the reply's first record). p up to 16 KiB is
// one record (dynamic record sizing off, mtls.go); the wait is armed for
// exactly that record's length, so any other shape of write (a larger p,
// another protocol version) is written without a wait and the reply read
// as before.
func (c *ReplyConn) WriteAwait(p []byte) (int, error) {
	if c.aw.raw == nil || len(p) == 0 || len(p) > 16<<10 {
		return c.Conn.Write(p)
	}
	c.aw.want = len(p) + tls13Overhead
	n, err := c.Conn.Write(p)
	c.aw.want = 0
	return n, err
}

// awaitConn is the TCP connection under a ReplyConn. A Write of exactly
// want bytes goes out with non-blocking write syscalls inside
// RawConn.Read's callback, which then returns false: RawConn.Read clears
// the fd's readiness before calling it, so the reply (which can only
// follow the write) brings a fresh edge and the wait cannot miss it.
type awaitConn struct {
	net.Conn
	raw syscall.RawConn
	fn  func(fd uintptr) bool

	want  int // armed by WriteAwait: the record length to wait after
	p     []byte
	n     int
	err   error
	state int // 0 not run, 1 writing, 2 written (waiting)
}

func newAwaitConn(c net.Conn) *awaitConn {
	a := &awaitConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			a.raw = raw
			a.fn = a.writeThenWait
		}
	}
	return a
}

func (a *awaitConn) Write(p []byte) (int, error) {
	if a.want == 0 || len(p) != a.want || a.raw == nil {
		return a.Conn.Write(p)
	}
	a.want = 0
	a.p, a.n, a.err, a.state = p, 0, nil, 0
	_ = a.raw.Read(a.fn) // a failed wait (deadline, close) shows on the read
	rest, n, err, state := a.p, a.n, a.err, a.state
	a.p, a.err = nil, nil
	switch {
	case state == 0: // refused before the callback: the plain write says why
		return a.Conn.Write(p)
	case err != nil:
		return n, &net.OpError{Op: "write", Net: "tcp", Source: a.LocalAddr(), Addr: a.RemoteAddr(), Err: os.NewSyscallError("write", err)}
	case len(rest) > 0: // the socket buffer was full: the rest as usual
		m, err := a.Conn.Write(rest)
		return n + m, err
	}
	return n, nil
}

func (a *awaitConn) writeThenWait(fd uintptr) bool {
	if a.state == 2 {
		return true
	}
	a.state = 1
	for len(a.p) > 0 {
		n, err := syscall.Write(int(fd), a.p)
		if n > 0 {
			a.n += n
			a.p = a.p[n:]
		}
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			a.err = err
			return true
		case n <= 0:
			return true
		}
	}
	a.state = 2
	return false
}

// CloseWrite half-closes the TCP connection (CONNECT tunnels).
func (a *awaitConn) CloseWrite() error { return closeWrite(a.Conn) }
