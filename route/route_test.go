package route

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/resource"
)

type req struct {
	method, path string
	hdr          map[string]string
}

func (r req) Method() string            { return r.method }
func (r req) Path() string              { return r.path }
func (r req) Header(name string) string { return r.hdr[strings.ToLower(name)] }

func TestMatchAndSubsets(t *testing.T) {
	spec := &resource.RouteSpec{Service: "orders",
		Subsets: []resource.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}},
		Rules: []resource.RouteRule{
			{Match: &resource.RouteMatch{Headers: []resource.HeaderMatch{{Name: "x-user", Regex: "u[0-9]+"}}}, Backends: []resource.RouteBackend{{Subset: "v2", Weight: 1}}, Timeout: "1s"},
			{Match: &resource.RouteMatch{Path: &resource.StringMatch{Prefix: "/api"}, Method: "POST"}, Backends: []resource.RouteBackend{{Subset: "v1", Weight: 1}}},
			{Match: &resource.RouteMatch{Path: &resource.StringMatch{Exact: "/x"}}},
		}}
	eps := []*balancer.Endpoint{{ID: "a", Labels: map[string]string{"version": "v1"}}, {ID: "b"}, {ID: "c", Labels: map[string]string{"zone": "z"}}}
	version := func(ep *balancer.Endpoint) string {
		if ep.ID == "b" {
			return "v2" // --version v2, no label
		}
		return ""
	}
	pick := func(e []*balancer.Endpoint) balancer.Picker { return fixedPicker{e[0]} }
	base := policy.Default(policy.NewLive())
	tab := Compile("orders", spec, eps, version, pick, base)
	for _, tc := range []struct {
		r    req
		rule int // -1: none
	}{
		{req{"GET", "/a", map[string]string{"x-user": "u12"}}, 0},
		{req{"GET", "/a", map[string]string{"x-user": "u12x"}}, -1}, // regex is anchored
		{req{"POST", "/api/v1?q=1", nil}, 1},
		{req{"GET", "/api/v1", nil}, -1},
		{req{"GET", "/x?y", nil}, 2},
		{req{"GET", "/xy", nil}, -1},
	} {
		got := -1
		if r := tab.Match(tc.r); r != nil {
			got = r.Index
		}
		if got != tc.rule {
			t.Errorf("%+v matched rule %d, want %d", tc.r, got, tc.rule)
		}
	}
	if b := tab.Rules[0].Backend(); b.Subset != "v2" || len(b.Endpoints) != 1 || b.Endpoints[0].ID != "b" {
		t.Errorf("subset v2 = %+v, want instance b (its --version)", b)
	}
	if p := tab.Rules[0].Policy; p == nil || p.Timeout.String() != "1s" || p.Live != base.Live {
		t.Errorf("rule 0's policy %+v, want the base with a 1s timeout sharing its live state", p)
	}
	if tab.Rules[1].Policy != nil {
		t.Error("rule 1 sets no timeout or retries but has its own policy")
	}
}

type fixedPicker struct{ ep *balancer.Endpoint }

func (f fixedPicker) Pick(balancer.PickInfo) (*balancer.Endpoint, error) { return f.ep, nil }
