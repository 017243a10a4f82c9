//go:build unix

package h1

import (
	"io"
	"syscall"
)

// peek runs inside RawConn.Read on the connection's non-blocking fd and
// never waits: EAGAIN means open and quiet; EOF, an error or unsolicited
// bytes (which would be mistaken for the next response) mean unusable.
func (uc *upConn) peek(fd uintptr) bool {
	n, err := syscall.Read(int(fd), uc.one[:])
	uc.alive = n <= 0 && err == syscall.EAGAIN
	return true
}

// rawIdle: idle connections wait in RawConn.Read without a buffer.
const rawIdle = true

// idleRead runs inside RawConn.Read on an idle downstream connection's
// non-blocking fd: it takes a block for the read and gives it back when
// there is nothing to read yet (false: wait for the fd to be readable and
// call again).
func (c *conn) idleRead(fd uintptr) bool {
	blk := blockPool.Get().(*block)
	for {
		n, err := syscall.Read(int(fd), blk[:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			blockPool.Put(blk)
			return false
		case n > 0:
			c.inBlk, c.in.buf, c.in.r, c.in.w = blk, blk[:], 0, n
			c.in.n += int64(n)
			return true
		}
		blockPool.Put(blk)
		if err == nil {
			err = io.EOF
		}
		c.readErr = err
		return true
	}
}
