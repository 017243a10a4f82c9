//go:build !unix

package h1

// peek is not implemented here; reused connections that turn out closed
// are caught by the retry in forward instead.
func (uc *upConn) peek(uintptr) bool {
	uc.alive = true
	return true
}

// rawIdle: without syscall.Read here, idle connections keep their buffer.
const rawIdle = false

func (c *conn) idleRead(uintptr) bool { return true }
