//go:build !unix

package sidecar

import (
	"errors"
	"time"
)

// processCPU is unix-only; elsewhere the release loop stops at once.
func processCPU() (time.Duration, error) {
	return 0, errors.ErrUnsupported
}
