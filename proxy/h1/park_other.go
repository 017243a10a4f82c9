//go:build !linux

package h1

// Without epoll, a connection idle for parkAfter moves to a fresh
// goroutine (serveConn) instead of parking without one; see park_linux.go.

const epollPark = false

type parker struct{}

type parkState struct{}

func (s *Server) parkConn(*conn) bool { return false }

func (s *Server) closeParked() {}
