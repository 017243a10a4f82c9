package sidecar

import "time"

// The GC target by allocation rate.
//
// A sidecar runs its GC at a target of 200 (cmd/weft/gc.go): the native
// h2 engine allocates per stream, and at 100 the collector was about 12%
// of a gRPC hop's CPU at max. But the heap goal has a floor of 4 MiB ×
// GOGC/100, so at 200 a sidecar that allocates slowly grows its heap to
// 8 MiB before it first collects, whatever it holds live (~3 MiB): at
// 1000 HTTP/1.1 req/s (about 320 B a request, nearly all telemetry: span
// export, the metrics gather, TLS records) the peak RSS of a 30 s run was
// 15.4 / 15.0 MiB per hop, 9.3 MiB of it anonymous (meshbench -paths
// direct,weft,haproxy -rates 1000 -duration 30s -max=false -rounds 1
// -idle-conns "", 2026-12-06; HAProxy 14.3 / 14.4). At such rates the
// target buys no CPU: a collection of a 3 MiB heap costs a few hundred
// µs, every few seconds.
//
// So the release loop, which looks once a second anyway, also reads how
// fast the heap is allocated, and runs the GC at 100 while that is under
// gcSlowRate and at the high target once it goes over gcFastRate (the gap
// keeps a rate between them from flapping; between them at the first look
// the start's 200 stays). gRPC unary at max (meshbench -paths
// grpc-weft,grpc-haproxy -max, alternating, two runs each) read weft ÷
// HAProxy 1.09, 1.16 before and 1.19, 1.13 after: no change beyond the
// noise. The rate a hop reaches there was not recorded.
const (
	gcSlowRate = 4 << 20  // bytes/s: under this, the low target
	gcFastRate = 16 << 20 // bytes/s: over this, the high target
	gcLow      = 100
)

// gcTarget decides the GC target from the heap's cumulative allocated
// bytes; its zero value has not looked yet.
type gcTarget struct {
	high    int // the target while allocating fast (Config.GCPercent)
	cur     int // the target set now (0: not set by gcTarget yet)
	lastAt  time.Time
	lastTot uint64
}

// next records one look and returns the target to set, 0 for no change.
func (g *gcTarget) next(now time.Time, allocated uint64) int {
	prevAt, prevTot := g.lastAt, g.lastTot
	g.lastAt, g.lastTot = now, allocated
	wall := now.Sub(prevAt)
	if prevAt.IsZero() || wall <= 0 || allocated < prevTot {
		return 0
	}
	rate := float64(allocated-prevTot) / wall.Seconds()
	want := g.cur
	switch {
	case rate < gcSlowRate:
		want = gcLow
	case rate > gcFastRate:
		want = g.high
	case want == 0:
		want = g.high // between the bounds at the first look: as started
	}
	if want == g.cur {
		return 0
	}
	g.cur = want
	return want
}
