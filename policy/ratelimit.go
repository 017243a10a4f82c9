package policy

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/resource"
)

// RateLimiter is an instance's rate limit (TrafficPolicy.rateLimit),
// enforced by its inbound sidecar. Each bucket is GCRA — the token bucket
// kept as one "theoretical arrival time" — so Allow is one atomic
// compare-and-swap, no lock. Immutable but for the buckets' atomics.
type RateLimiter struct {
	Service   string
	interval  int64 // nanoseconds per request
	tolerance int64 // how far ahead of now the arrival time may run (burst)
	perSource bool

	all     bucket
	mu      sync.Mutex // guards adding to sources
	sources atomic.Pointer[map[string]*bucket]
	other   bucket // sources past maxSources share this one
}

// maxSources bounds per-source buckets: x-weft-source is the caller's word.
const maxSources = 1024

type bucket struct{ tat atomic.Int64 }

// NewRateLimiter returns the limiter for rl (nil when rl is nil).
func NewRateLimiter(service string, rl *resource.RateLimit) *RateLimiter {
	if rl == nil {
		return nil
	}
	iv := int64(math.Max(1, float64(time.Second)/rl.RequestsPerSecond))
	l := &RateLimiter{Service: service, interval: iv, tolerance: iv * int64(rl.BurstOrDefault()-1), perSource: rl.PerSource}
	empty := map[string]*bucket{}
	l.sources.Store(&empty)
	return l
}

// Allow reports whether a request from source may pass now.
func (l *RateLimiter) Allow(source string, now time.Time) bool {
	b := &l.all
	if l.perSource {
		b = l.bucketOf(source)
	}
	n := now.UnixNano()
	for {
		tat := b.tat.Load()
		next := max(tat, n) + l.interval
		if next-n > l.tolerance+l.interval {
			return false
		}
		if b.tat.CompareAndSwap(tat, next) {
			return true
		}
	}
}

func (l *RateLimiter) bucketOf(source string) *bucket {
	if b := (*l.sources.Load())[source]; b != nil {
		return b
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	m := *l.sources.Load()
	if b := m[source]; b != nil {
		return b
	}
	if len(m) >= maxSources {
		return &l.other
	}
	next := make(map[string]*bucket, len(m)+1)
	for k, v := range m {
		next[k] = v
	}
	b := &bucket{}
	next[strings.Clone(source)] = b // source may alias a connection's buffer
	l.sources.Store(&next)
	return b
}

// Same reports whether l enforces what rl says (so a rebuild keeps the
// buckets' state).
func (l *RateLimiter) Same(rl *resource.RateLimit) bool {
	if l == nil || rl == nil {
		return l == nil && rl == nil
	}
	o := NewRateLimiter(l.Service, rl)
	return o.interval == l.interval && o.tolerance == l.tolerance && o.perSource == l.perSource
}
