package h1

import (
	"net"
	"sync"
)

// HandoffListener is a net.Listener fed by Handoff instead of a socket, so
// an http.Server can serve the connections the engine passes on (HTTP/2
// prior knowledge, Upgrade, CONNECT): Server.Fallback calls Handoff.
type HandoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

var _ net.Listener = (*HandoffListener)(nil)

// NewHandoffListener returns a listener reporting addr (the engine's own
// listening address, for servers that log or compare it).
func NewHandoffListener(addr net.Addr) *HandoffListener {
	return &HandoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Handoff waits for Accept to take c. After Close it returns net.ErrClosed
// and the caller still owns c.
func (l *HandoffListener) Handoff(c net.Conn) error {
	select {
	case <-l.done:
		return net.ErrClosed
	default:
	}
	select {
	case l.ch <- c:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

// Accept returns the next handed-off connection, or net.ErrClosed after
// Close.
func (l *HandoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and Handoff return net.ErrClosed.
func (l *HandoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the address given to NewHandoffListener.
func (l *HandoffListener) Addr() net.Addr { return l.addr }

// replayConn returns the bytes the engine had already read before reading
// from the connection again, so the fallback sees the stream intact.
type replayConn struct {
	net.Conn
	mu  sync.Mutex
	buf []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		if len(c.buf) == 0 {
			c.buf = nil
		}
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection when the underlying one can (TCP),
// which tunnels handed off for CONNECT rely on; otherwise it closes it.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
