package control

import (
	"context"
	"net"
	"net/netip"
	"sort"
	"sync"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/weftmesh/weft/telemetry/aggregator"
)

// Stream metadata by which a pure client sidecar (one that registers no
// instance: no --app-port) names itself and its admin listener, so that
// the control plane scrapes it like any instance — its view of the
// destinations it calls (outlier ejections, client-side metrics) then
// shows in weft stat and weft get services.
const (
	MetaCallerService = "weft-caller-service"
	MetaCallerID      = "weft-caller-id"
	MetaCallerAdmin   = "weft-caller-admin"
)

// maxCallers bounds the pure clients scraped (streams are bounded anyway;
// this keeps one scrape round bounded too).
const maxCallers = 4096

// callers are the connected pure client sidecars to scrape, by stream.
type callers struct {
	mu sync.Mutex
	m  map[any]aggregator.Target
}

// join records the stream's caller, if its metadata names one whose admin
// address is on the stream's own host, and returns the call that forgets
// it.
func (c *callers) join(ctx context.Context, stream any) (leave func()) {
	t, ok := callerOf(ctx)
	if !ok {
		return func() {}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[any]aggregator.Target{}
	}
	if len(c.m) >= maxCallers {
		return func() {}
	}
	c.m[stream] = t
	return func() {
		c.mu.Lock()
		delete(c.m, stream)
		c.mu.Unlock()
	}
}

// targets lists the callers, sorted by instance.
func (c *callers) targets() []aggregator.Target {
	c.mu.Lock()
	out := make([]aggregator.Target, 0, len(c.m))
	for _, t := range c.m {
		out = append(out, t)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out
}

// callerOf reads a stream's caller metadata. The admin address is the
// sidecar's word, so it must be on the host the stream comes from: the
// control plane scrapes no address a sidecar merely names.
func callerOf(ctx context.Context) (aggregator.Target, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(k string) string {
		if v := md.Get(k); len(v) == 1 && len(v[0]) <= maxFieldLen {
			return v[0]
		}
		return ""
	}
	t := aggregator.Target{Service: get(MetaCallerService), Instance: get(MetaCallerID), Admin: get(MetaCallerAdmin)}
	if t.Service == "" || t.Instance == "" || t.Admin == "" {
		return t, false
	}
	host, _, err := net.SplitHostPort(t.Admin)
	if err != nil {
		return t, false
	}
	admin, err := netip.ParseAddr(host)
	p, ok := peer.FromContext(ctx)
	if err != nil || !ok {
		return t, false
	}
	from, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return t, false
	}
	same := admin.Unmap() == from.Addr().Unmap() || (admin.IsLoopback() && from.Addr().IsLoopback())
	return t, same
}
