//go:build !linux

package capture

import (
	"errors"
	"net"
)

// OriginalDst needs Linux's SO_ORIGINAL_DST.
func OriginalDst(net.Conn) (*net.TCPAddr, error) {
	return nil, errors.New("transparent capture needs Linux")
}
