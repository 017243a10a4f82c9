package resource

import (
	"strings"
	"testing"
)

// FuzzParseHashKey: a TrafficPolicy's hashKey is untrusted input (any
// manifest, any API client). Whatever it is, ParseHashKey returns a key or
// an error bounded by the input (quoted), and an accepted key
// is exactly the text it came from.
func FuzzParseHashKey(f *testing.F) {
	for _, s := range []string{"", "source_ip", "header:x-user-id", "cookie:session", "query:q", "header:", ":x", "header:a:b", "Header:x", "source_ip:x", "header:" + strings.Repeat("a", 257)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseHashKey(s)
		if err != nil {
			if k != (HashKey{}) {
				t.Fatalf("%q: error %v with key %+v", s, err, k)
			}
			if len(err.Error()) > 4*len(s)+200 { // %q may spell a byte in 4
				t.Fatalf("%q: error of %d bytes", s, len(err.Error()))
			}
			return
		}
		var back string
		switch k.Source {
		case HashNone:
			back = ""
		case HashSourceIP:
			back = "source_ip"
		case HashHeader:
			back = "header:" + k.Name
		case HashCookie:
			back = "cookie:" + k.Name
		case HashQuery:
			back = "query:" + k.Name
		default:
			t.Fatalf("%q: source %d", s, k.Source)
		}
		if back != s {
			t.Fatalf("%q parsed to %+v, which reads %q", s, k, back)
		}
		if len(k.Name) > 256 {
			t.Fatalf("%q: name of %d bytes accepted", s, len(k.Name))
		}
	})
}
