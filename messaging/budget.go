package messaging

import (
	"context"
	"sync"
)

// Budget bounds bytes held at once (messages being published, or pulled
// and not yet settled): a caller takes bytes before holding a message and
// gives them back after, waiting while the budget is spent.
type Budget struct {
	mu   sync.Mutex
	free int64
	size int64
	wake chan struct{} // closed on every release
}

// NewBudget returns a budget of size bytes.
func NewBudget(size int64) *Budget {
	return &Budget{free: size, size: size, wake: make(chan struct{})}
}

// Size is the budget's total.
func (b *Budget) Size() int64 { return b.size }

// Acquire takes n bytes (at most the whole budget), waiting until they are
// free or ctx ends.
func (b *Budget) Acquire(ctx context.Context, n int64) error {
	n = min(n, b.size)
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			return nil
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// AcquireAll waits until at least least bytes are free, then takes the
// free bytes, at most most, and returns how many; the caller gives back
// what it did not use.
func (b *Budget) AcquireAll(ctx context.Context, least, most int64) (int64, error) {
	least = min(least, b.size)
	most = max(most, least)
	for {
		b.mu.Lock()
		if b.free >= least {
			n := min(b.free, most)
			b.free -= n
			b.mu.Unlock()
			return n, nil
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Release gives n bytes back.
func (b *Budget) Release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.free = min(b.free+n, b.size)
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}
