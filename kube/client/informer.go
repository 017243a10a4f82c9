package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Informer keeps the objects of one resource in one namespace ("" for
// all) as the API server has them: it lists, then watches from the list's
// resourceVersion (with bookmarks, so a quiet watch stays fresh), and
// lists again when the watch fails or its version is gone (410), with
// backoff. After every change it calls OnChange; List and Get read the
// current objects. This is what client-go's reflector and informer do,
// for the level-triggered callers here (every change recomputes).
type Informer struct {
	c   *Client
	res Resource
	ns  string
	log *slog.Logger
	// OnChange is called after every add, update or delete, after each
	// list, and every Resync; it must not block, and may be called from
	// two of Run's goroutines at once.
	OnChange func()
	// Resync, when positive, calls OnChange that often even without a
	// change, so a caller's failed write (a status) is tried again (what
	// client-go's resync period did).
	Resync time.Duration

	mu     sync.RWMutex
	items  map[string]Object
	synced atomic.Bool
}

// NewInformer returns an informer of r in ns; Run starts it.
func NewInformer(c *Client, r Resource, ns string, log *slog.Logger) *Informer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Informer{c: c, res: r, ns: ns, log: log.With("resource", r.String()), items: map[string]Object{}}
}

// Timings of the list/watch loop.
var (
	// minWatch and maxWatch bound the server-side timeout asked for each
	// watch (a random one between, as client-go does, so many clients do
	// not re-watch at once).
	minWatch, maxWatch = 5 * time.Minute, 10 * time.Minute
	// backoffMin and backoffMax bound the wait before listing again after
	// a failure, doubling from one to the other.
	backoffMin, backoffMax = 500 * time.Millisecond, 15 * time.Second
)

// HasSynced says whether the first list has been stored.
func (i *Informer) HasSynced() bool { return i.synced.Load() }

// List returns the current objects, in no order. They are shared: do not
// modify them.
func (i *Informer) List() []Object {
	i.mu.RLock()
	defer i.mu.RUnlock()
	out := make([]Object, 0, len(i.items))
	for _, o := range i.items {
		out = append(out, o)
	}
	return out
}

// Get returns the object ns/name (nil when absent). It is shared: do not
// modify it.
func (i *Informer) Get(ns, name string) Object {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.items[Key(ns, name)]
}

func (i *Informer) changed() {
	if i.OnChange != nil {
		i.OnChange()
	}
}

// Run lists and watches until ctx is done.
func (i *Informer) Run(ctx context.Context) {
	if i.Resync > 0 {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			t := time.NewTicker(i.Resync)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if i.HasSynced() {
						i.changed()
					}
				}
			}
		})
	}
	fails := 0
	var lastErr string
	for ctx.Err() == nil {
		l, err := i.c.List(ctx, i.res, i.ns)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Said once per distinct error: a kind whose CRD is not
			// installed fails the same way every time.
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				i.log.Warn("kubernetes list failed; retrying", "err", err)
			}
			fails++
			if !sleep(ctx, backoff(fails)) {
				return
			}
			continue
		}
		if lastErr != "" {
			i.log.Info("kubernetes list works again")
			lastErr = ""
		}
		fails = 0
		i.replace(l.Items)
		i.synced.Store(true)
		i.changed()
		rv := l.ResourceVersion
		for ctx.Err() == nil {
			start := time.Now()
			var events int
			rv, events, err = i.watch(ctx, rv)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				// The server ended the watch (its timeout): watch again from
				// where it got, unless it ended at once with nothing, which
				// would spin.
				if events > 0 || time.Since(start) > time.Second {
					fails = 0
					continue
				}
				err = errors.New("the watch ended at once")
			}
			fails++
			if IsGone(err) {
				i.log.Debug("kubernetes watch too old; listing again", "err", err)
			} else {
				i.log.Warn("kubernetes watch failed; listing again", "err", err)
			}
			if !sleep(ctx, backoff(fails)) {
				return
			}
			break
		}
	}
}

// watch applies one watch's events from rv; it returns the version
// reached, the number of events, and nil when the server ended the watch.
func (i *Informer) watch(ctx context.Context, rv string) (string, int, error) {
	timeout := minWatch + rand.N(maxWatch-minWatch+1)
	s, err := i.c.Watch(ctx, i.res, i.ns, rv, timeout)
	if err != nil {
		return rv, 0, err
	}
	defer s.Close()
	n := 0
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return rv, n, nil
		}
		if err != nil {
			return rv, n, err
		}
		n++
		if ev.Type == Error {
			return rv, n, ev.Err()
		}
		if v := ev.Object.ResourceVersion(); v != "" {
			rv = v
		}
		switch ev.Type {
		case Added, Modified:
			i.mu.Lock()
			i.items[ev.Object.Key()] = ev.Object
			i.mu.Unlock()
		case Deleted:
			i.mu.Lock()
			delete(i.items, ev.Object.Key())
			i.mu.Unlock()
		case Bookmark:
			continue
		}
		i.changed()
	}
}

func (i *Informer) replace(items []Object) {
	m := make(map[string]Object, len(items))
	for _, o := range items {
		m[o.Key()] = o
	}
	i.mu.Lock()
	i.items = m
	i.mu.Unlock()
}

// backoff is the wait after the n-th failure in a row: doubling from
// backoffMin up to backoffMax, with up to a quarter taken off at random.
func backoff(n int) time.Duration {
	d := backoffMin
	for k := 1; k < n && d < backoffMax; k++ {
		d *= 2
	}
	d = min(d, backoffMax)
	return d - rand.N(d/4+1)
}

// sleep waits d or until ctx is done; it says whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
