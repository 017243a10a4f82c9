package h2

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// FuzzHeaders: any HPACK block a client sends as a request head is either
// refused (a stream or connection error) or becomes a Request whose
// upstream head is well formed: the four pseudo-fields first, lower-case
// names, no connection-specific field, and a content-length that parses.
// Seeds in testdata/fuzz/FuzzHeaders.
func FuzzHeaders(f *testing.F) {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, fl := range []hpack.HeaderField{hf(":method", "POST"), hf(":scheme", "http"), hf(":authority", "orders"),
		hf(":path", "/a"), hf("content-type", "application/grpc"), hf("te", "trailers"), hf("grpc-timeout", "1S")} {
		enc.WriteField(fl)
	}
	f.Add(bytes.Clone(b.Bytes()), false)
	f.Add([]byte{0x82, 0x86, 0x84, 0x41, 0x01, 'a'}, true) // GET http / authority a, from the static table
	f.Fuzz(func(t *testing.T, block []byte, end bool) {
		mh, err := readHeaders(block, end)
		if err != nil {
			return
		}
		r, err := requestOf(mh)
		if err != nil {
			return
		}
		if r.Method == "" || (r.Method != "CONNECT" && (r.Path == "" || r.Scheme == "")) {
			t.Fatalf("accepted a request without its pseudo-fields: %+v", r)
		}
		out := requestFields(r, &Decision{Set: []hpack.HeaderField{hf("X-Weft-Source", "s")}})
		pseudo := true
		for _, fl := range out {
			if strings.HasPrefix(fl.Name, ":") {
				if !pseudo {
					t.Fatalf("pseudo-field %q after a regular one", fl.Name)
				}
				continue
			}
			pseudo = false
			if strings.ToLower(fl.Name) != fl.Name {
				t.Fatalf("upper-case name %q upstream", fl.Name)
			}
			switch fl.Name {
			case "connection", "transfer-encoding", "upgrade", "keep-alive", "proxy-connection", "host":
				t.Fatalf("%q forwarded", fl.Name)
			}
		}
	})
}
