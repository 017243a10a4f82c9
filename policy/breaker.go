package policy

import "sync/atomic"

// Breaker counts what one sidecar has outstanding to a destination; the
// limits are the Policy's. Each Acquire that succeeds is paired with one
// Release.
type Breaker struct {
	requests, conns, pending atomic.Int64
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

// Release gives back a slot taken by Acquire with the same limit.
func (b *Breaker) Release(kind int, limit int64) {
	if limit > 0 {
		b.counter(kind).Add(-1)
	}
}

// Counts returns requests, connections and pending requests outstanding.
func (b *Breaker) Counts() (requests, conns, pending int64) {
	return b.requests.Load(), b.conns.Load(), b.pending.Load()
}
