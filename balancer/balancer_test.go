package balancer_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/balancer"
	_ "github.com/weftmesh/weft/balancer/all"
)

var want = []string{"consistent_hash", "least_request", "load_aware", "modulo", "random", "round_robin"}

func TestNames(t *testing.T) {
	names := balancer.Names()
	if !slices.IsSorted(names) {
		t.Errorf("Names() = %v, not sorted", names)
	}
	if !slices.Equal(names, want) {
		t.Errorf("Names() = %v, want %v", names, want)
	}
}

func TestGet(t *testing.T) {
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			b, err := balancer.Get(name)
			if err != nil {
				t.Fatal(err)
			}
			if b.Name() != name {
				t.Errorf("Get(%q).Name() = %q", name, b.Name())
			}
		})
	}
}

func TestGetUnknown(t *testing.T) {
	for _, name := range []string{"", "roundrobin", "ROUND_ROBIN", "maglev"} {
		t.Run(name, func(t *testing.T) {
			b, err := balancer.Get(name)
			if err == nil {
				t.Fatalf("Get(%q) = %v, want an error", name, b)
			}
			msg := err.Error()
			if !strings.Contains(msg, "unknown load balancing algorithm") {
				t.Errorf("error %q does not say the algorithm is unknown", msg)
			}
			for _, valid := range want {
				if !strings.Contains(msg, valid) {
					t.Errorf("error %q does not list valid name %q", msg, valid)
				}
			}
		})
	}
}

func TestNeedsHashKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"consistent_hash", true},
		{"modulo", true},
		{"least_request", false},
		{"random", false},
		{"round_robin", false},
		{"no_such_algorithm", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := balancer.NeedsHashKey(tc.name); got != tc.want {
				t.Errorf("NeedsHashKey(%q) = %v, want %v", tc.name, got, tc.want)
			}
		})
	}
}

// TestEmptyBuild checks every algorithm copes with the empty set that the
// Builder contract says never comes.
func TestEmptyBuild(t *testing.T) {
	for _, name := range balancer.Names() {
		t.Run(name, func(t *testing.T) {
			b, _ := balancer.Get(name)
			for _, info := range []balancer.PickInfo{{}, {Hash: 1, HasHash: true}} {
				if ep, err := b.Build(nil, balancer.BuildOptions{}).Pick(info); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
					t.Errorf("Build(nil).Pick(%+v) = %v, %v; want nil, ErrNoEndpoints", info, ep, err)
				}
			}
		})
	}
	if ep, err := balancer.Empty().Pick(balancer.PickInfo{}); ep != nil || !errors.Is(err, balancer.ErrNoEndpoints) {
		t.Errorf("Empty().Pick = %v, %v; want nil, ErrNoEndpoints", ep, err)
	}
}
