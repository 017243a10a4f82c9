package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/weftmesh/weft/bind"
)

// sidecarPortHint adds what to do to a sidecar's "port already in use":
// the defaults suit the first instance on a host, not the second.
func sidecarPortHint(err error) error {
	if err == nil || !errors.Is(err, bind.ErrInUse) {
		return err
	}
	return fmt.Errorf("%w; a further instance on this host needs its own ports: --outbound 127.0.0.1:0 --admin 127.0.0.1:0 (any free port; weft get services -o wide shows which)", err)
}

// controlPortHint does the same for the control plane's listeners.
func controlPortHint(err error) error {
	if err == nil || !errors.Is(err, bind.ErrInUse) {
		return err
	}
	if strings.HasPrefix(err.Error(), "--http-addr") || strings.HasPrefix(err.Error(), "--grpc-addr") {
		return fmt.Errorf("%w; is a control plane already running here (weft check)? Another one needs --http-addr and --grpc-addr of its own and its own --data-dir", err)
	}
	return err
}
