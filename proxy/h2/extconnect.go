package h2

import (
	"crypto/rand"
	"encoding/base64"
	"strings"

	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/proxy/h1"
)

// Extended CONNECT (RFC 8441): WebSocket over HTTP/2. The engine
// advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, takes a CONNECT with
// :protocol (and, then, :scheme and :path), and forwards it as any other
// stream — its DATA both ways is the tunnel — to an h2 upstream as an
// extended CONNECT again, or to an HTTP/1.1 app as the Upgrade request
// RFC 6455 has (writeH1Upgrade): GET with Connection: Upgrade, a
// Sec-WebSocket-Key of the engine's own (RFC 8441 has none), and on the
// app's 101 the caller gets 200 (without Sec-WebSocket-Accept) and the
// connection becomes the tunnel, each side's end of stream a half-close.

// extendedConnectOK checks an extended CONNECT's pseudo-fields (RFC 8441
// §4: :scheme and :path as for a request, :authority the target).
func extendedConnectOK(r *Request) bool {
	return r.Method == "CONNECT" && r.Scheme != "" && r.Path != "" && r.Authority != ""
}

// writeH1Upgrade writes an extended CONNECT as an HTTP/1.1 Upgrade head.
func writeH1Upgrade(x *h1.Exchange, r *Request, d *Decision, host string) error {
	if err := x.WriteHead("GET", r.Path, host); err != nil {
		return err
	}
	key := false
	for _, f := range r.Fields {
		if f.Name == "host" || dropped(f.Name, d.Set, d.Del) {
			continue
		}
		key = key || f.Name == "sec-websocket-key"
		if err := x.Field(f.Name, f.Value); err != nil {
			return err
		}
	}
	for _, f := range d.Set {
		if err := x.Field(f.Name, f.Value); err != nil {
			return err
		}
	}
	if err := x.Upgrade(r.Protocol); err != nil {
		return err
	}
	if strings.EqualFold(r.Protocol, "websocket") && !key {
		var k [16]byte
		rand.Read(k[:])
		if err := x.Field("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(k[:])); err != nil {
			return err
		}
	}
	return x.EndHead(0, false)
}

// switchedFields is the caller's answer to an upgrade the app took: 200
// and its fields, less the HTTP/1.1 handshake's own.
func switchedFields(fields []hpack.HeaderField) []hpack.HeaderField {
	out := fields[:0]
	for _, f := range fields {
		switch {
		case f.Name == ":status":
			f.Value = "200"
		case f.Name == "sec-websocket-accept", f.Name == "content-length":
			continue
		}
		out = append(out, f)
	}
	return out
}
