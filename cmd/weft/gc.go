package main

import (
	"os"
	"runtime/debug"
)

// sidecarGCPercent is the GC target a sidecar runs with when GOGC is not
// set. The native h2 engine allocates per stream (x/net's header decoding
// is most of it), so at the default 100 the collector was about 12% of a
// sidecar's CPU on gRPC traffic; at 200 it runs half as often. Measured
// with meshbench on one machine, the same binary with and without GOGC=200
// alternating (`meshbench -weft BIN -paths grpc-weft -max -rates "" -duration 4s
// -rounds 1`): gRPC unary at max 37, 33 -> 28, 30 µs per call (HAProxy's h2
// pair: 27), RSS per hop at max 23.4 -> 26.9 MiB. The HTTP/1.1 engine
// allocates nothing per request, so there it changes neither CPU nor
// memory (1000 req/s: 98 -> 90 µs, RSS 20.5 -> 18.6 MiB, noise; 2,000 idle
// connections: +5.3 -> +4.9 MiB anonymous), and an idle sidecar gives its
// free heap back anyway (sidecar/release.go). GOGC, when set, wins.
// While a sidecar allocates slowly (under 4 MiB/s) it lowers the target to
// 100 (sidecar/gctarget.go): 200 raises the heap goal's 4 MiB floor to 8
// MiB, which at 1000 HTTP/1.1 req/s was 2–3 MiB of RSS for nothing.
const sidecarGCPercent = 200

// tuneSidecarGC sets sidecarGCPercent for the commands that run a sidecar
// (sysmonCommands) unless the operator set GOGC.
func tuneSidecarGC() {
	if pct, ok := sidecarGC(os.Args, os.LookupEnv); ok {
		debug.SetGCPercent(pct)
	}
}

func sidecarGC(args []string, lookup func(string) (string, bool)) (int, bool) {
	if len(args) < 2 || !sysmonCommands[args[1]] {
		return 0, false
	}
	if _, set := lookup("GOGC"); set {
		return 0, false
	}
	return sidecarGCPercent, true
}
