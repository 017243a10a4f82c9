//go:build unix

package h1

import "syscall"

// peek runs inside RawConn.Read on the connection's non-blocking fd and
// never waits: EAGAIN means open and quiet; EOF, an error or unsolicited
// bytes (which would be mistaken for the next response) mean unusable.
func (uc *upConn) peek(fd uintptr) bool {
	n, err := syscall.Read(int(fd), uc.one[:])
	uc.alive = n <= 0 && err == syscall.EAGAIN
	return true
}
