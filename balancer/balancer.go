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
	"time"
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

	lastRTT atomic.Int64 // nanoseconds; see Observe
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
type Builder interface {
	Name() string
	Build(endpoints []*Endpoint) Picker
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

// LoadHeader is the response header in which an instance's sidecar reports
// the instance's load to its callers (like gRPC's ORCA): the inbound sidecar
// adds it to every response, the calling sidecar hands its value to
// Endpoint.ReportLoad. Its format belongs to the load_aware balancer.
const LoadHeader = "x-weft-load"

// Observe records one finished exchange with this endpoint: the time to its
// response head and whether the attempt failed. The request pipeline calls
// it once per attempt; latency-aware pickers read what it keeps. It must not
// block or allocate.
func (e *Endpoint) Observe(rtt time.Duration, failed bool) {
	e.lastRTT.Store(int64(rtt))
}

// ReportLoad records the value of a LoadHeader the endpoint sent. The
// pipeline calls it with the raw header value; it must not block or
// allocate, and ignores values it cannot read.
func (e *Endpoint) ReportLoad(v []byte) {}
