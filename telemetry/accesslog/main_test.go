package accesslog

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts (export pipeline, writer, scrapes) must be
// gone when it ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"), goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"), goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}
