package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/weftmesh/weft/authz"
	"github.com/weftmesh/weft/security/mtls"
)

// CodeDenied is the x-weft-error of a request an AuthorizationPolicy denied.
const CodeDenied = "denied"

// HeaderPeerIdentity carries the caller's verified SPIFFE ID to the app.
// The inbound sets it on every request it forwards, replacing whatever the
// caller sent, empty when the caller was not verified (plaintext in
// permissive mode): the app can trust it.
const HeaderPeerIdentity = "X-Weft-Peer-Identity"

var fieldPeerIdentity = []byte(HeaderPeerIdentity)

// Authorizer is the inbound's authorization stage: the service's compiled
// policies, swapped whole when they change.
type Authorizer struct {
	snap atomic.Pointer[authz.Snapshot]
	// OnDeny is called for each denial (metrics, log); set before serving.
	OnDeny func(policy, reason, principal, method, path string)
}

// Set installs a new snapshot.
func (a *Authorizer) Set(s *authz.Snapshot) { a.snap.Store(s) }

// authorize is the one call each inbound path makes per request: the
// caller as the TLS listener verified it (nil when not verified), and,
// when the policies deny the request, the answer to send instead.
func (in *Inbound) authorize(remote net.Addr, method, target []byte, h authz.Headers, scratch *[]byte) (*mtls.Peer, *MeshError) {
	var src authz.Source
	peer, _ := mtls.PeerOf(remote)
	principal := ""
	if peer != nil && peer.Verified {
		src = authz.Source{Verified: true, Service: peer.ID.Service, Namespace: peer.ID.Namespace, Principal: peer.Principal}
		principal = peer.Principal
	} else {
		peer = nil
	}
	a := in.Authz
	if a == nil {
		return peer, nil
	}
	s := a.snap.Load()
	if s.Empty() {
		return peer, nil
	}
	d := s.Evaluate(&authz.Request{Source: src, Method: method, Target: target, Headers: h}, scratch)
	if d.Allowed {
		return peer, nil
	}
	who := principal
	if who == "" {
		who = "an unauthenticated caller"
	}
	if a.OnDeny != nil {
		a.OnDeny(d.Policy, d.Reason, principal, string(method), string(target))
	}
	return peer, &MeshError{Status: http.StatusForbidden, Code: CodeDenied,
		Message: fmt.Sprintf("%s may not %s %s: %s (%s)", who, method, pathOnly(target), d.Reason, d.Policy)}
}

type peerKey struct{}

// WithPeer keeps a connection's remote address (an mtls.Peer) in the
// context of its requests; the inbound's net/http server sets it in
// ConnContext.
func WithPeer(ctx context.Context, remote net.Addr) context.Context {
	return context.WithValue(ctx, peerKey{}, remote)
}

func peerFrom(r *http.Request) net.Addr {
	a, _ := r.Context().Value(peerKey{}).(net.Addr)
	return a
}

// writeDenied answers a denial: 403 with x-weft-error, or for gRPC a
// trailers-only PERMISSION_DENIED.
func writeDenied(w http.ResponseWriter, r *http.Request, e *MeshError) {
	if isGRPC(r) {
		h := w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set(HeaderError, e.Code)
		h.Set("Grpc-Status", strconv.Itoa(7)) // PERMISSION_DENIED
		h.Set("Grpc-Message", grpcEscape(e.Message))
		w.WriteHeader(http.StatusOK)
		return
	}
	e.Write(w)
}

// grpcEscape percent-encodes a grpc-message value (gRPC over HTTP/2:
// bytes outside printable ASCII, and '%').
func grpcEscape(s string) string {
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			out = append(out, '%', hex[c>>4], hex[c&15])
			continue
		}
		out = append(out, c)
	}
	return string(out)
}

// principalOf is the value of HeaderPeerIdentity for a caller.
func principalOf(p *mtls.Peer) string {
	if p == nil {
		return ""
	}
	return p.Principal
}
