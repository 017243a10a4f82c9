package main

import (
	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/proxy/h2"
	"github.com/weftmesh/weft/sidecar"
)

// addH2Flags registers the HTTP/2 engine's flags (weft sidecar, weft run).
func addH2Flags(f *pflag.FlagSet, c *sidecar.H2Config) {
	f.StringVar(&c.Engine, "h2-engine", sidecar.DefaultH2Engine, "what serves HTTP/2 (h2c, gRPC, h2 over mTLS) on the outbound and inbound listeners: native (proxy/h2) or nethttp (net/http and httputil.ReverseProxy)")
	f.Uint32Var(&c.MaxConcurrentStreams, "h2-max-concurrent-streams", h2.DefaultMaxConcurrentStreams, "native h2 engine: streams a client may have open per connection (more are refused with REFUSED_STREAM)")
	f.Uint32Var(&c.MaxHeaderListSize, "h2-max-header-list-size", h2.DefaultMaxHeaderListSize, "native h2 engine: largest decoded header block a client may send, in bytes (a larger one closes the connection)")
}
