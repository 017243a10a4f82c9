//go:build !linux

package sidecar

import "errors"

// trimExecutable is Linux-only (it reads /proc/self/smaps); elsewhere the
// trim loop stops at its first call.
func trimExecutable() (int64, error) {
	return 0, errors.ErrUnsupported
}

func faultAroundErr() error { return nil }
