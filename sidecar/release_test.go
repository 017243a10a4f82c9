package sidecar

import (
	"testing"
	"time"
)

func TestReleaserDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const ms = time.Millisecond
	type look struct {
		at   time.Duration // since t0
		cpu  time.Duration // total
		free uint64
		want bool
	}
	for _, tc := range []struct {
		name  string
		looks []look
	}{
		{"first look only records", []look{{0, 0, 64 << 20, false}}},
		{"quiet with free heap", []look{{0, 0, 0, false}, {500 * ms, 2 * ms, 8 << 20, true}}},
		{"busy", []look{{0, 0, 0, false}, {500 * ms, 50 * ms, 8 << 20, false}}},
		{"little free", []look{{0, 0, 0, false}, {500 * ms, 0, 1 << 20, false}}},
		{"after a burst not again at once, then once more", []look{
			{0, 0, 0, false}, {500 * ms, 100 * ms, 1 << 20, false}, {1000 * ms, 101 * ms, 1 << 20, true},
			{1500 * ms, 200 * ms, 1 << 20, false}, {1700 * ms, 201 * ms, 1 << 20, false},
			{2200 * ms, 202 * ms, 1 << 20, true}, // the burst between, and its follow-up
			{3700 * ms, 203 * ms, 1 << 20, true}, // the second burst's follow-up
			{5200 * ms, 204 * ms, 1 << 20, false},
		}},
		{"free heap again at once", []look{
			{0, 0, 0, false}, {500 * ms, 0, 8 << 20, true}, {1000 * ms, 0, 8 << 20, true},
		}},
		{"quiet again after load", []look{
			{0, 0, 0, false}, {500 * ms, 100 * ms, 1 << 20, false},
			{1000 * ms, 101 * ms, 1 << 20, true},
			{1500 * ms, 101 * ms, 1 << 20, false}, // before the follow-up
			{2500 * ms, 136 * ms, 1 << 20, false}, // not quiet (nor busy)
			{3000 * ms, 137 * ms, 1 << 20, true},  // the follow-up
			{5000 * ms, 137 * ms, 1 << 20, false}, // quiet, no burst since
		}},
		{"steady trickle between the bounds", []look{
			{0, 0, 0, false}, {500 * ms, 20 * ms, 1 << 20, false},
			{1000 * ms, 25 * ms, 1 << 20, false}, {1500 * ms, 45 * ms, 1 << 20, false},
			{2000 * ms, 50 * ms, 1 << 20, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r releaser
			for i, l := range tc.looks {
				if got := r.due(t0.Add(l.at), l.cpu, l.free); got != l.want {
					t.Fatalf("look %d (%+v): due = %v, want %v", i, l, got, l.want)
				}
			}
		})
	}
}
