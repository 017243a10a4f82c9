// Package balancer defines how a sidecar chooses one instance of a destination
// service for a request. The discovery client builds a Picker from each new
// endpoint set with the Builder named by the service's TrafficPolicy, and the
// proxy calls Pick on every request; algorithms live one per subpackage
// (balancer/roundrobin, …) and register themselves by name in init.
package balancer

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Endpoint is one ready instance of a destination service as the balancer sees
// it. The sidecar keeps one Endpoint per instance ID across endpoint-set
// changes, so per-endpoint state such as InFlight survives a rebuild.
type Endpoint struct {
	ID      string
	Address string // host:port of the instance's inbound sidecar listener
	Labels  map[string]string
	Zone    string
	// Weight is reserved for weighted and load-aware balancing; 0 means 1.
	Weight uint32

	// InFlight counts requests sent to this endpoint and not yet finished. The
	// proxy increments it around each request; least_request reads it.
	InFlight atomic.Int64

	// What Observe and ReportLoad keep (endpoint.go). Each is one or two
	// atomics written without a lock: two concurrent writers may each win
	// one word of a pair, which skews one estimate by one sample at most.
	rtt    atomic.Uint64 // float64 bits: peak-EWMA of the time to response head, ns; 0 = none yet
	rttAt  atomic.Int64  // Mono time of the last rtt update
	fails  atomic.Int32  // consecutive failed attempts
	load   atomic.Uint64 // the last load report, packed (see packLoad); 0 = none
	loadAt atomic.Int64  // Mono time of the last load report
}

// PickInfo is what a picker may know of the request. It is passed by value and
// holds no pointers to the request so that Pick never allocates.
type PickInfo struct {
	// Hash is the 64-bit hash of the request's hash key (see HasHash).
	Hash uint64
	// HasHash says whether the request carried the configured hash key. Hash
	// algorithms fall back to random when it does not.
	HasHash bool
}

// Picker chooses an endpoint. It is immutable once built, safe for concurrent
// use, and must not block, lock or allocate: it runs on every request.
type Picker interface {
	Pick(info PickInfo) (*Endpoint, error)
}

// Builder makes a Picker for a set of ready endpoints. endpoints is sorted by
// ID and never empty; the builder may keep the slice but must not modify it.
// Callers build through the package's Build, which adds zone preference.
type Builder interface {
	Name() string
	Build(endpoints []*Endpoint, opts BuildOptions) Picker
}

// BuildOptions is what a destination's policy and the calling sidecar tell
// a builder beyond the endpoints. The zero value means every default.
type BuildOptions struct {
	// HashBalanceFactor is consistent_hash's bound on load: no endpoint gets
	// more than HashBalanceFactor × the mean in-flight requests (rounded
	// up). 0 means DefaultHashBalanceFactor; values below 1 are taken as 1.
	HashBalanceFactor float64
	// Zone is the calling sidecar's zone ("": none). Build prefers the
	// endpoints of that zone (see zone.go); builders themselves ignore it.
	Zone string
}

// DefaultHashBalanceFactor is loadBalancer.hashBalanceFactor's default, the
// c = 1.25 that Google's "consistent hashing with bounded loads" suggests
// (and HAProxy's hash-balance-factor 125): keys stay put until their
// endpoint holds 25% more than its share.
const DefaultHashBalanceFactor = 1.25

// BalanceFactor returns the factor to use: the default for 0, at least 1.
func (o BuildOptions) BalanceFactor() float64 {
	switch {
	case o.HashBalanceFactor == 0:
		return DefaultHashBalanceFactor
	case o.HashBalanceFactor < 1:
		return 1
	}
	return o.HashBalanceFactor
}

// ErrNoEndpoints is returned by Pick when there is nothing to pick.
var ErrNoEndpoints = errors.New("no ready endpoints")

// HashBased is implemented by builders whose algorithm needs a hash key.
type HashBased interface {
	NeedsHashKey() bool
}

var (
	mu       sync.RWMutex
	builders = map[string]Builder{}
)

// Register makes a builder available by its name. It is meant to be called
// from init functions only; registering a name twice panics, as that is a
// programming error caught by any test.
func Register(b Builder) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := builders[b.Name()]; dup {
		panic(fmt.Sprintf("balancer: %q registered twice", b.Name()))
	}
	builders[b.Name()] = b
}

// Get returns the builder registered under name.
func Get(name string) (Builder, error) {
	mu.RLock()
	b, ok := builders[name]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown load balancing algorithm %q (valid: %s)", name, strings.Join(Names(), ", "))
	}
	return b, nil
}

// Names lists the registered algorithms, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(builders))
	for n := range builders {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NeedsHashKey reports whether the named algorithm requires a hash key.
func NeedsHashKey(name string) bool {
	b, err := Get(name)
	if err != nil {
		return false
	}
	h, ok := b.(HashBased)
	return ok && h.NeedsHashKey()
}

// empty is the picker for an empty endpoint set.
type empty struct{}

func (empty) Pick(PickInfo) (*Endpoint, error) { return nil, ErrNoEndpoints }

// Empty returns a picker that always fails with ErrNoEndpoints.
func Empty() Picker { return empty{} }
