package policy

import (
	"math"
	"sync/atomic"
	"time"
)

// Budget is a destination's retry allowance: every request deposits ratio
// of a token, the clock deposits minPerSecond tokens a second, every retry
// withdraws one. A retry without a whole token is not sent, so retries stay
// within ratio × requests + minPerSecond × seconds however the instances
// fail. Tokens are held in thousandths, so a deposit is one atomic add.
type Budget struct {
	ratio     atomic.Int64 // thousandths of a token per request
	perSecond atomic.Int64 // whole tokens per second
	tokens    atomic.Int64 // thousandths
	last      atomic.Int64 // unix nanos of the last clock deposit
	cap       atomic.Int64 // see ceiling
}

const milli = 1000

func (b *Budget) init() { b.last.Store(time.Now().UnixNano()) }

func (b *Budget) configure(ratio float64, perSecond int) {
	first := b.ratio.Load() == 0 && b.perSecond.Load() == 0 && b.tokens.Load() == 0
	b.ratio.Store(int64(math.Round(ratio * milli)))
	b.perSecond.Store(int64(perSecond))
	b.cap.Store(int64(perSecond)*milli + 100*b.ratio.Load())
	if first {
		// A new destination starts with one second's allowance.
		b.tokens.Store(int64(perSecond) * milli)
	}
}

// ceiling bounds saved-up tokens, so a long quiet spell cannot fund a
// burst of retries larger than one second's allowance plus 100 requests'.
func (b *Budget) ceiling() int64 { return b.cap.Load() }

// Request deposits one request's share.
func (b *Budget) Request() {
	r := b.ratio.Load()
	if r == 0 {
		return
	}
	if b.tokens.Add(r) > b.ceiling() {
		b.tokens.Add(-r)
	}
}

// Withdraw takes one token for a retry, reporting false when there is none.
func (b *Budget) Withdraw(now time.Time) bool {
	n := now.UnixNano()
	if last := b.last.Load(); n-last >= int64(10*time.Millisecond) && b.last.CompareAndSwap(last, n) {
		add := b.perSecond.Load() * milli * (n - last) / int64(time.Second)
		if t := b.tokens.Add(add); t > b.ceiling() {
			b.tokens.Add(b.ceiling() - t)
		}
	}
	for {
		t := b.tokens.Load()
		if t < milli {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-milli) {
			return true
		}
	}
}

// Tokens is the whole tokens left (for the admin view and tests).
func (b *Budget) Tokens() int64 { return b.tokens.Load() / milli }
