package sidecar

import (
	"testing"
	"time"
)

func TestGCTarget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type look struct {
		after time.Duration // since the previous look
		bytes uint64        // allocated since the previous look
		want  int           // target to set, 0 for none
	}
	tests := []struct {
		name  string
		looks []look
	}{
		{"slow from the start: 100, once", []look{{0, 0, 0}, {time.Second, 320 << 10, 100}, {time.Second, 320 << 10, 0}}},
		{"fast: the high target", []look{{0, 0, 0}, {time.Second, 40 << 20, 200}, {time.Second, 40 << 20, 0}}},
		{"between the bounds at first: as started", []look{{0, 0, 0}, {time.Second, 8 << 20, 200}}},
		{"slow, then fast, then slow", []look{{0, 0, 0}, {time.Second, 1 << 20, 100}, {time.Second, 30 << 20, 200},
			{time.Second, 8 << 20, 0}, {time.Second, 2 << 20, 100}}},
		{"between the bounds keeps the low target", []look{{0, 0, 0}, {time.Second, 1 << 20, 100}, {time.Second, 10 << 20, 0}}},
		{"the rate is per second", []look{{0, 0, 0}, {250 * time.Millisecond, 5 << 20, 200}, {250 * time.Millisecond, 512 << 10, 100}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := gcTarget{high: 200}
			now, total := t0, uint64(1<<20)
			for i, l := range tc.looks {
				now, total = now.Add(l.after), total+l.bytes
				if got := g.next(now, total); got != l.want {
					t.Fatalf("look %d (%d bytes in %s): target %d, want %d", i, l.bytes, l.after, got, l.want)
				}
			}
		})
	}
}
