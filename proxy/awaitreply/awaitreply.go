// Package awaitreply writes the last bytes of a request so that the
// caller's next read of the reply does not first find nothing.
//
// Why: Go reads before it waits. A read right after a request was sent
// finds nothing (EAGAIN) and only then parks in the netpoller, so every
// exchange paid a read syscall per hop that HAProxy does not (the weft
// pair: 7.8 reads per request at max against HAProxy's 4 recvfrom,
// meshbench -perf; 6.0 with this). Writing inside syscall.RawConn.Read's
// callback and returning false waits first: RawConn.Read clears the fd's
// readiness before the callback, so the reply, which can only come after
// the write, always brings a fresh edge and the wait cannot miss it.
//
// The caller must know that nothing readable is pending from before the
// write: bytes or an EOF that arrived earlier are not announced again.
// proxy/h1 uses it only on connections dialled or used within a second;
// security/mtls under TLS for one record.
package awaitreply

import (
	"net"
	"syscall"
)

// Writer holds one connection's write-then-wait state, so that a write
// allocates nothing. The zero Writer, or one whose Init found no fd, just
// writes.
type Writer struct {
	raw   syscall.RawConn
	fn    func(fd uintptr) bool // w.writeThenWait, bound once
	p     []byte                // bytes still to write
	n     int                   // and written
	err   error                 // the write's error
	state int                   // idle, writing, written
}

// The states of a Write (Writer.state).
const (
	idle    = iota // the callback has not run
	writing        // it ran and did not write everything
	written        // everything written: waiting for the reply
)

// Init takes the connection's fd, when it has one (a syscall.Conn).
func (w *Writer) Init(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	if raw, err := sc.SyscallConn(); err == nil && supported {
		w.raw = raw
		w.fn = w.writeThenWait
	}
}

// Ready reports whether Write can wait (Init found an fd).
func (w *Writer) Ready() bool { return w.raw != nil }

// Write writes p to c, the connection Init was given, with non-blocking
// write syscalls inside RawConn.Read's callback, and returns once c is
// readable, or its read deadline or a close ended the wait (which the next
// read reports). What cannot go so (the fd refused the read before the
// callback, the socket buffer was full) goes through c.Write, and the
// reply is then read as usual.
func (w *Writer) Write(c net.Conn, p []byte) (int, error) {
	if w.raw == nil {
		return c.Write(p)
	}
	w.p, w.n, w.err, w.state = p, 0, nil, idle
	_ = w.raw.Read(w.fn) // a failed wait shows on the read
	rest, n, err, state := w.p, w.n, w.err, w.state
	w.p, w.err = nil, nil
	switch {
	case state == idle: // refused before the callback: the plain write says why
		return c.Write(p)
	case err != nil:
		return n, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	case len(rest) > 0: // the socket buffer was full: the rest as usual
		m, err := c.Write(rest)
		return n + m, err
	}
	return n, nil
}

// writeThenWait is the callback: first the write, then false (wait until
// readable); called again once the fd is readable, true.
func (w *Writer) writeThenWait(fd uintptr) bool {
	if w.state == written {
		return true
	}
	w.state = writing
	for len(w.p) > 0 {
		n, err := write(fd, w.p)
		if n > 0 {
			w.n += n
			w.p = w.p[n:]
		}
		switch {
		case err == errInterrupted:
			continue
		case err == errWouldBlock:
			return true
		case err != nil:
			w.err = err
			return true
		case n <= 0:
			return true
		}
	}
	w.state = written
	return false
}
