// Package bind opens listening sockets for the addresses users pass in flags,
// turning the kernel's errors into one-line reasons that name the flag.
package bind

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ErrInUse is wrapped by TCP's error when the port is taken, so callers can
// add a hint of their own.
var ErrInUse = errors.New("port already in use")

// TCP listens on addr; flag names the option the address came from.
func TCP(flag, addr string) (net.Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%s %q: not a host:port address", flag, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		switch {
		case errors.Is(err, syscall.EADDRINUSE):
			return nil, fmt.Errorf("%s %s: %w (is another weft running?)", flag, addr, ErrInUse)
		case errors.Is(err, syscall.EADDRNOTAVAIL):
			return nil, fmt.Errorf("%s %s: no such local address", flag, addr)
		case errors.Is(err, syscall.EACCES):
			return nil, fmt.Errorf("%s %s: permission denied (ports below 1024 need privileges)", flag, addr)
		}
		return nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return ln, nil
}
