package mtls

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/weftmesh/weft/proxy/awaitreply"
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
	if !c.aw.w.Ready() || len(p) == 0 || len(p) > 16<<10 {
		return c.Conn.Write(p)
	}
	c.aw.want = len(p) + tls13Overhead
	n, err := c.Conn.Write(p)
	c.aw.want = 0
	return n, err
}

// awaitConn is the TCP connection under a ReplyConn. A Write of exactly
// want bytes goes out through awaitreply.Writer, which returns once the
// reply is readable (package awaitreply says why it cannot miss it).
type awaitConn struct {
	net.Conn
	w    awaitreply.Writer
	want int // armed by WriteAwait: the record length to wait after
}

func newAwaitConn(c net.Conn) *awaitConn {
	a := &awaitConn{Conn: c}
	a.w.Init(c)
	return a
}

func (a *awaitConn) Write(p []byte) (int, error) {
	if a.want == 0 || len(p) != a.want {
		return a.Conn.Write(p)
	}
	a.want = 0
	return a.w.Write(a.Conn, p)
}

// CloseWrite half-closes the TCP connection (CONNECT tunnels).
func (a *awaitConn) CloseWrite() error { return closeWrite(a.Conn) }
