// Command weft is the one binary of the Weft service mesh: control plane,
// sidecar, app runner, CLI and demo. main only parses flags and calls into
// the packages that do the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftmesh/weft/runner"
)

func main() {
	keepSysmonAwake()
	tuneSidecarGC()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRoot().ExecuteContext(ctx)
	var exit *runner.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		os.Exit(exit.Code)
	default:
		fmt.Fprintln(os.Stderr, "weft: "+err.Error())
		os.Exit(1)
	}
}
