//go:build !linux

package capture

import "errors"

var errNotLinux = errors.New("transparent capture needs Linux (nftables)")

// Install needs Linux.
func Install(Rules) error { return errNotLinux }

// Remove needs Linux.
func Remove() error { return errNotLinux }

// Installed needs Linux.
func Installed() (bool, error) { return false, errNotLinux }
