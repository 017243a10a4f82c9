package proxy

import (
	"net/http"

	"github.com/weftmesh/weft/proxy/h1"
)

// Tunnels on the fast path: the h1 engine carries WebSocket (Upgrade) and
// CONNECT itself when its Router is an h1.Tunneler, so they run through
// the same pipeline as any request (route, pick, authorization, Answered,
// End) with no net/http in the way. An outbound CONNECT names a service
// (CONNECT orders:5432): it is forwarded to an instance's sidecar, whose
// inbound dials its app's port (Decision.Direct) — the port in the target
// is not used, as with --upstream.

var (
	_ h1.Tunneler = (*FastOutbound)(nil)
	_ h1.Tunneler = (*FastInbound)(nil)
)

var connectPath = []byte("*")

func isConnect(req *h1.Request) bool { return string(req.Method) == http.MethodConnect }

// authzPath is the path an AuthorizationPolicy sees: "*" for a CONNECT,
// as on the net/http path.
func authzPath(req *h1.Request) []byte {
	if isConnect(req) {
		return connectPath
	}
	return req.Path()
}

// Tunnel implements h1.Tunneler: an upgraded connection is long-lived, not
// a request in flight on its instance; a CONNECT counts as a TCP tunnel.
func (f *FastOutbound) Tunnel(req *h1.Request, d *h1.Decision) func(sent, received int64) {
	st := d.State.(*fastState)
	if st.local {
		return nil
	}
	st.call.Detach()
	if !isConnect(req) {
		return nil
	}
	return f.o.tel.TCPClient(st.call.Service)
}

// Tunnel implements h1.Tunneler for calls into the app.
func (f *FastInbound) Tunnel(req *h1.Request, d *h1.Decision) func(sent, received int64) {
	st := d.State.(*inState)
	if st.tracked {
		f.in.LoadTracker.End() // not a request in flight any more
		st.tracked = false
	}
	if !isConnect(req) {
		return nil
	}
	hdr := http.Header{}
	if v := req.Get(HeaderSource); v != nil {
		hdr.Set(HeaderSource, string(v))
	}
	return f.in.Telemetry.TCPServer(&http.Request{Header: hdr})
}

// BodyTimeoutError answers a request body the listener's body timeouts
// cut (the engine's 408, with the mesh's error body).
func BodyTimeoutError() *MeshError {
	return &MeshError{Status: http.StatusRequestTimeout, Code: "request_timeout",
		Message: "request body too slow: it stalled, or arrived slower than the sidecar's minimum rate (--read-body-timeout, --min-body-rate)"}
}
