//go:build unix

package h1

import (
	"net"
	"os"
	"syscall"
)

// WriteAwait states of an upConn (uc.wstate).
const (
	awaitIdle    = iota // the callback has not run
	awaitWriting        // it ran and did not write everything
	awaitWritten        // everything written: waiting for the reply
)

// rawWriteAwait writes p with non-blocking write syscalls inside
// RawConn.Read's callback and then waits there until the reply can be
// read. A write that would block hands the rest to nc.Write (its deadline,
// its wait for room) and the reply is read as before.
func (uc *upConn) rawWriteAwait(p []byte) (int, error) {
	uc.wp, uc.wn, uc.werr, uc.wstate = p, 0, nil, awaitIdle
	rerr := uc.raw.Read(uc.awaitFn)
	rest, n, werr, state := uc.wp, uc.wn, uc.werr, uc.wstate
	uc.wp, uc.werr = nil, nil
	switch {
	case state == awaitIdle:
		// The fd refused the read before the callback (closed, a deadline
		// already past): nothing written, the plain write tells why.
		_ = rerr
		return uc.nc.Write(p)
	case werr != nil:
		return n, &net.OpError{Op: "write", Net: "tcp", Source: uc.nc.LocalAddr(), Addr: uc.nc.RemoteAddr(), Err: os.NewSyscallError("write", werr)}
	case len(rest) > 0:
		m, err := uc.nc.Write(rest)
		return n + m, err
	}
	// Written; a failed wait (deadline, close) shows on the read.
	return n, nil
}

// awaitWrite is the callback of rawWriteAwait: first the write, then
// false (wait until readable); called again when the fd is readable, true.
func (uc *upConn) awaitWrite(fd uintptr) bool {
	if uc.wstate == awaitWritten {
		return true
	}
	uc.wstate = awaitWriting
	for len(uc.wp) > 0 {
		n, err := syscall.Write(int(fd), uc.wp)
		if n > 0 {
			uc.wn += n
			uc.wp = uc.wp[n:]
		}
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			uc.werr = err
			return true
		case n <= 0:
			return true
		}
	}
	uc.wstate = awaitWritten
	return false
}
