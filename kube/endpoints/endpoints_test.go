package endpoints

import (
	"strings"
	"testing"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/kube/client"
)

func slice(ports ...map[string]any) client.Object {
	ps := make([]any, len(ports))
	for i := range ports {
		ps[i] = ports[i]
	}
	return client.Object{"ports": ps}
}

func port(name string, n int64, proto string) map[string]any {
	return map[string]any{"name": name, "port": n, "protocol": proto}
}

func TestPickPort(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sl      client.Object
		want    string
		port    int64
		errWord string
	}{
		{"only", slice(port("", 8080, "TCP")), "", 8080, ""},
		{"http wins", slice(port("metrics", 9090, "TCP"), port("http", 8080, "TCP")), "", 8080, ""},
		{"annotation", slice(port("http", 8080, "TCP"), port("grpc", 9000, "TCP")), "grpc", 9000, ""},
		{"annotation names a missing port", slice(port("http", 8080, "TCP")), "grpc", 0, `names port "grpc"`},
		{"two, none http", slice(port("a", 1, "TCP"), port("b", 2, "TCP")), "", 0, "none is named http"},
		{"udp only", slice(port("dns", 53, "UDP")), "", 0, "no TCP port"},
		{"udp ignored", slice(port("dns", 53, "UDP"), port("web", 80, "")), "", 80, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickPort(tc.sl, tc.want)
			if tc.errWord != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errWord) {
					t.Fatalf("err = %v, want one with %q", err, tc.errWord)
				}
				return
			}
			if err != nil || got != tc.port {
				t.Fatalf("pickPort = %d, %v; want %d", got, err, tc.port)
			}
		})
	}
}

func TestInstanceConditions(t *testing.T) {
	d := &Discovery{}
	for _, tc := range []struct {
		name        string
		conds       map[string]any
		ready, term bool
	}{
		{"no conditions: ready", nil, true, false},
		{"ready", map[string]any{"ready": true}, true, false},
		{"not ready", map[string]any{"ready": false}, false, false},
		{"terminating, serving", map[string]any{"ready": false, "serving": true, "terminating": true}, false, true},
		{"terminating, not serving", map[string]any{"ready": false, "serving": false, "terminating": true}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := map[string]any{"addresses": []any{"10.1.2.3"}, "zone": "z1"}
			if tc.conds != nil {
				e["conditions"] = tc.conds
			}
			in := d.instance(e, "ns", "orders", 8080)
			if in.Ready != tc.ready || (in.Labels[labelTerminating] == "true") != tc.term {
				t.Errorf("ready %v terminating-serving %v, want %v %v", in.Ready, in.Labels[labelTerminating], tc.ready, tc.term)
			}
			if in.Address != "10.1.2.3:8080" || in.Zone != "z1" || in.Id != "k8s/ns/10.1.2.3:8080" {
				t.Errorf("instance %v", in)
			}
		})
	}
	hint := map[string]any{"addresses": []any{"10.1.2.3"}, "hints": map[string]any{"forZones": []any{map[string]any{"name": "z2"}}}}
	if in := d.instance(hint, "ns", "orders", 80); in.Zone != "z2" {
		t.Errorf("zone from hints = %q, want z2", in.Zone)
	}
}

// Terminating but serving endpoints take traffic only when nothing is ready.
func TestFallback(t *testing.T) {
	term := func(id string) *pb.Instance {
		return &pb.Instance{Id: id, Labels: map[string]string{labelTerminating: "true"}}
	}
	ins := fallback([]*pb.Instance{{Id: "a", Ready: true}, term("b")})
	if ins[1].Ready {
		t.Error("a terminating endpoint got traffic while another was ready")
	}
	ins = fallback([]*pb.Instance{{Id: "a"}, term("b")})
	if ins[0].Ready || !ins[1].Ready {
		t.Errorf("with nothing ready: a %v, b %v; want only the serving terminating b", ins[0].Ready, ins[1].Ready)
	}
}
