package publish

import (
	"net/http"
	"strings"
	"testing"

	"github.com/weftmesh/weft/messaging"
)

// FuzzHeaders: a publish request's headers come from any app. Headers
// either refuses them or returns message headers that hold the key and
// the message id as sent, only printable X-Msg-* values, within the
// bounds.
func FuzzHeaders(f *testing.F) {
	f.Add("application/json", "user-1", "", "X-Msg-Tenant", "acme", 1)
	f.Add("", "", "id-1", "X-Msg-A", "b\x01", 3)
	f.Add(strings.Repeat("t", 300), "k\x7f", "id 2", "X-Other", "", 0)
	f.Add("text/plain", strings.Repeat("k", 257), strings.Repeat("i", 129), "X-Msg-Big", strings.Repeat("v", 1000), 70)
	f.Fuzz(func(t *testing.T, ct, key, id, name, value string, repeat int) {
		in := http.Header{}
		if ct != "" {
			in.Set("Content-Type", ct)
		}
		if key != "" {
			in.Set(messaging.HTTPKey, key)
		}
		if id != "" {
			in.Set(messaging.HTTPMessageID, id)
		}
		repeat = min(max(repeat, 0), 100)
		for i := 0; i < repeat; i++ {
			in.Add(name, value)
		}
		h, err := Headers(in)
		if err != nil {
			return
		}
		if key != "" && h.Get(messaging.HdrKey) != key {
			t.Fatalf("key %q became %q", key, h.Get(messaging.HdrKey))
		}
		if got := h.Get(messaging.HdrMsgID); got == "" || id != "" && got != id {
			t.Fatalf("message id %q became %q", id, got)
		}
		n, size := 0, 0
		for k, vs := range h {
			if !strings.HasPrefix(k, messaging.HTTPHeaderPrefix) {
				continue
			}
			for _, v := range vs {
				n++
				size += len(k) + len(v)
				for i := 0; i < len(v); i++ {
					if v[i] < ' ' || v[i] == 0x7f {
						t.Fatalf("unprintable value %q carried", v)
					}
				}
			}
		}
		if n > messaging.MaxAppHeaders || size > messaging.MaxAppHeaderBytes {
			t.Fatalf("%d app headers of %d bytes carried", n, size)
		}
	})
}
