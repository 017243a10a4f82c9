package route

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/balancer/consistenthash"
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
	if b := tab.Rules[0].Backend(balancer.PickInfo{}); b.Subset != "v2" || len(b.Endpoints) != 1 || b.Endpoints[0].ID != "b" {
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

// TestHashKeysStickyAcrossWeights: with a hash key the subset comes from
// the key, so 50/50 → 60/40 moves only the ~10% of keys in the range that
// changed hands (all from v2 to v1), and every other key keeps its
// instance (consistent_hash within the subset).
func TestHashKeysStickyAcrossWeights(t *testing.T) {
	var eps []*balancer.Endpoint
	for i := range 6 {
		v := "v1"
		if i%2 == 1 {
			v = "v2"
		}
		eps = append(eps, &balancer.Endpoint{ID: fmt.Sprintf("i%d", i), Address: fmt.Sprintf("10.0.0.%d:1", i), Labels: map[string]string{"version": v}})
	}
	b, err := balancer.Get(consistenthash.Name)
	if err != nil {
		t.Fatal(err)
	}
	pick := func(e []*balancer.Endpoint) balancer.Picker { return balancer.Build(b, e, balancer.BuildOptions{}) }
	compile := func(w1, w2 int) *Rule {
		spec := &resource.RouteSpec{Service: "orders",
			Subsets: []resource.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}},
			Rules:   []resource.RouteRule{{Backends: []resource.RouteBackend{{Subset: "v1", Weight: w1}, {Subset: "v2", Weight: w2}}}}}
		return &Compile("orders", spec, eps, func(*balancer.Endpoint) string { return "" }, pick, policy.Default(policy.NewLive())).Rules[0]
	}
	place := func(r *Rule, key string) (subset, id string) {
		info := balancer.PickInfo{Hash: xxhash.Sum64String(key), HasHash: true}
		be := r.Backend(info)
		ep, err := be.Picker.Pick(info)
		if err != nil {
			t.Fatal(err)
		}
		return be.Subset, ep.ID
	}
	before, after := compile(50, 50), compile(60, 40)
	const n = 20000
	moved, v1 := 0, 0
	perInstance := map[string]int{}
	for i := range n {
		key := fmt.Sprintf("user-%d", i)
		s1, id1 := place(before, key)
		if s, id := place(before, key); s != s1 || id != id1 {
			t.Fatalf("key %s placed twice: %s/%s then %s/%s", key, s1, id1, s, id)
		}
		perInstance[id1]++
		if s1 == "v1" {
			v1++
		}
		s2, id2 := place(after, key)
		switch {
		case s1 != s2:
			moved++
			if s1 != "v2" {
				t.Fatalf("key %s moved %s → %s; 50/50 → 60/40 only moves keys to v1", key, s1, s2)
			}
		case id1 != id2:
			t.Fatalf("key %s stayed in %s but moved %s → %s", key, s1, id1, id2)
		}
	}
	if f := float64(moved) / n; f < 0.08 || f > 0.12 {
		t.Errorf("%.1f%% of keys changed subsets, want about 10%%", 100*f)
	}
	if f := float64(v1) / n; f < 0.47 || f > 0.53 {
		t.Errorf("v1 took %.1f%% of keys at 50/50", 100*f)
	}
	// The remix keeps each subset's keys spread over its ring.
	for id, k := range perInstance {
		if share := float64(k) / n; share < 0.10 || share > 0.24 {
			t.Errorf("instance %s holds %.1f%% of keys, want about 1/6 (%v)", id, 100*share, perInstance)
		}
	}
}
