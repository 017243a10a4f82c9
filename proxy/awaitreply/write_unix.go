//go:build unix

package awaitreply

import (
	"os"
	"syscall"
)

const supported = true

var (
	errInterrupted error = syscall.EINTR
	errWouldBlock  error = syscall.EAGAIN
)

func write(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Write(int(fd), p)
	if err != nil && err != syscall.EINTR && err != syscall.EAGAIN {
		return n, os.NewSyscallError("write", err)
	}
	return n, err
}
