package policy

import (
	"sync/atomic"
	"time"
)

// Breaker counts what one sidecar has outstanding to a destination; the
// limits are the Policy's. Each Acquire that succeeds is paired with one
// Release. A request that finds maxRequests or maxConnections reached may
// wait for a slot (Wait) while at most maxPendingRequests wait.
type Breaker struct {
	requests, conns, pending atomic.Int64
	// wake carries a token per slot released while requests wait (nil
	// in a Breaker not made by NewLive: waiters then poll).
	wake chan struct{}
}

// Kinds of breaker slots.
const (
	SlotRequest = iota
	SlotConnection
	SlotPending
)

func (b *Breaker) counter(kind int) *atomic.Int64 {
	switch kind {
	case SlotConnection:
		return &b.conns
	case SlotPending:
		return &b.pending
	}
	return &b.requests
}

// Acquire takes a slot of kind under limit (0: unlimited, always granted
// and not counted), reporting false on overflow.
func (b *Breaker) Acquire(kind int, limit int64) bool {
	if limit <= 0 {
		return true
	}
	c := b.counter(kind)
	if c.Add(1) > limit {
		c.Add(-1)
		return false
	}
	return true
}

// Release gives back a slot taken by Acquire with the same limit, waking
// a waiter if there is one.
func (b *Breaker) Release(kind int, limit int64) {
	if limit <= 0 {
		return
	}
	b.counter(kind).Add(-1)
	if kind != SlotPending && b.pending.Load() > 0 && b.wake != nil {
		select {
		case b.wake <- struct{}{}:
		default: // enough tokens queued already
		}
	}
}

// Outcomes of Wait.
const (
	Acquired = iota
	QueueFull
	TimedOut
)

// waitPoll bounds one wait for a token: a waiter whose token went to
// another (each release wakes one waiter, any one) looks again this often.
const waitPoll = 20 * time.Millisecond

// Wait takes a slot of kind under limit; when none is free, it waits for
// one until deadline as one of at most maxPending pending requests
// (maxPending 0: no waiting). It reports Acquired, QueueFull (the pending
// requests were at maxPending) or TimedOut.
func (b *Breaker) Wait(kind int, limit, maxPending int64, deadline time.Time) int {
	if b.Acquire(kind, limit) {
		return Acquired
	}
	if !b.Acquire(SlotPending, maxPending) || maxPending <= 0 {
		return QueueFull
	}
	defer b.Release(SlotPending, maxPending)
	t := time.NewTimer(waitPoll)
	defer t.Stop()
	for {
		if b.Acquire(kind, limit) {
			return Acquired
		}
		left := time.Until(deadline)
		if left <= 0 {
			return TimedOut
		}
		t.Reset(min(left, waitPoll))
		select {
		case <-b.wake:
		case <-t.C:
		}
	}
}

// Counts returns requests, connections and pending requests outstanding.
func (b *Breaker) Counts() (requests, conns, pending int64) {
	return b.requests.Load(), b.conns.Load(), b.pending.Load()
}
