//go:build !unix

package awaitreply

import "errors"

// supported is false: Init leaves the Writer plain, so write is never called.
const supported = false

var (
	errInterrupted = errors.New("interrupted")
	errWouldBlock  = errors.New("would block")
)

func write(uintptr, []byte) (int, error) { return 0, errWouldBlock }
