package main

import (
	"testing"
	"time"
)

// TestSmoke runs the bench small: 20 sidecars (two per connection, so the
// shared-connection path runs too), two registrations and two
// deregistrations. run fails unless every sidecar gets its first update
// and then sees every event (a stream the control plane cut would miss
// them). It asserts no timing.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts weft control (and builds it when ../../bin/weft is missing)")
	}
	if err := run("../../bin/weft", 20, 4, 2, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}
