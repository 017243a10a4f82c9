package harness

import (
	"math"
	"testing"
)

func TestFamily(t *testing.T) {
	for _, c := range []struct{ path, family, shape, haproxy, proto string }{
		{PathWeft, "http/1.1", "weft", PathHAProxy, ProtoHTTP1},
		{PathWeftPolicy, "http/1.1", "weft-policy", PathHAProxy, ProtoHTTP1},
		{PathGRPCWeft, "grpc unary", "weft", PathGRPCHAProxy, ProtoGRPCUnary},
		{PathGRPCDirect, "grpc unary", "direct", PathGRPCHAProxy, ProtoGRPCUnary},
		{PathGRPCStreamWeft, "grpc stream", "weft", PathGRPCStreamHAProxy, ProtoGRPCStream},
	} {
		f, s := Family(c.path)
		if f != c.family || s != c.shape {
			t.Errorf("Family(%q) = %q, %q; want %q, %q", c.path, f, s, c.family, c.shape)
		}
		if got := pathIn(c.path, PathHAProxy); got != c.haproxy {
			t.Errorf("pathIn(%q, haproxy) = %q, want %q", c.path, got, c.haproxy)
		}
		if got := protoOf(c.path); got != c.proto {
			t.Errorf("protoOf(%q) = %q, want %q", c.path, got, c.proto)
		}
	}
}

// Each family's weft row is divided by its own HAProxy row, and added
// latency is taken against its own direct path.
func TestRatiosPerFamily(t *testing.T) {
	run := func(path string, p50, cpu float64) *RunResult {
		return &RunResult{Round: 1, Path: path, Kind: KindOpen, Rate: 1000, OK: 10,
			Latency: Latency{Count: 10, P50: p50, P99: p50 * 2}, ProxyCPUPerReq: Num(cpu), ProxyCPUUtil: Num(0.1), AuxCPUPerReq: NaN()}
	}
	rep := &Report{Meta: Meta{Paths: AllPaths}, Runs: []*RunResult{
		run(PathDirect, 0.1, math.NaN()), run(PathWeft, 0.3, 200), run(PathHAProxy, 0.2, 100),
		run(PathGRPCDirect, 0.2, math.NaN()), run(PathGRPCWeft, 0.8, 90), run(PathGRPCHAProxy, 0.5, 60),
	}}
	Finish(rep)
	want := map[string][2]float64{"http/1.1": {2, 2}, "grpc unary": {1.5, 2}}
	if len(rep.Ratios) != len(want) {
		t.Fatalf("ratios %+v, want one row per family", rep.Ratios)
	}
	for _, r := range rep.Ratios {
		w, ok := want[r.Family]
		if !ok {
			t.Fatalf("unexpected family %q", r.Family)
		}
		if math.Abs(float64(r.CPUVsHAProxy)-w[0]) > 1e-9 || math.Abs(float64(r.AddP50VsHAProx)-w[1]) > 1e-9 {
			t.Errorf("%s: CPU ratio %v, +p50 ratio %v; want %v, %v", r.Family, r.CPUVsHAProxy, r.AddP50VsHAProx, w[0], w[1])
		}
	}
}
