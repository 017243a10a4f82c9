package policy

import (
	"testing"
	"time"
)

// TestBreakerWait: past the limit a request waits for a slot while fewer
// than maxPending wait, gets one when a slot is released, and gives up at
// its deadline; beyond maxPending it overflows at once.
func TestBreakerWait(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxPending int64
		release    bool
		want       int
	}{
		{"no queue", 0, true, QueueFull},
		{"released", 1, true, Acquired},
		{"deadline", 1, false, TimedOut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := NewLive()
			b := &live.Breaker
			if !b.Acquire(SlotRequest, 1) {
				t.Fatal("first slot refused")
			}
			got := make(chan int, 1)
			if tc.maxPending == 0 {
				got <- b.Wait(SlotRequest, 1, 0, time.Now().Add(time.Second))
			} else {
				go func() { got <- b.Wait(SlotRequest, 1, tc.maxPending, time.Now().Add(300*time.Millisecond)) }()
			}
			if tc.maxPending > 0 {
				waitFor(t, func() bool { _, _, p := b.Counts(); return p == 1 })
				start := time.Now()
				if r := b.Wait(SlotRequest, 1, tc.maxPending, time.Now().Add(5*time.Second)); r != QueueFull || time.Since(start) > time.Second {
					t.Errorf("with the queue full: %d after %s, want QueueFull at once", r, time.Since(start))
				}
			}
			if tc.release {
				b.Release(SlotRequest, 1)
			}
			select {
			case r := <-got:
				if r != tc.want {
					t.Errorf("Wait = %d, want %d", r, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Wait did not return")
			}
			if _, _, p := b.Counts(); p != 0 {
				t.Errorf("%d still pending", p)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
