package pipeline

import (
	"testing"
	"time"
)

// FuzzParseGRPCTimeout: grpc-timeout is the caller's word; any value is
// either refused or read as a duration that formats back to one at least
// as long.
func FuzzParseGRPCTimeout(f *testing.F) {
	for _, s := range []string{"100m", "5S", "1H", "99999999n", "0u", "", "m", "-1S", "1x", "123456789S"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseGRPCTimeout(s)
		if !ok {
			return
		}
		if d < 0 {
			t.Fatalf("%q read as negative %s", s, d)
		}
		if d > 0 && d < 100000*time.Hour {
			back, ok := ParseGRPCTimeout(FormatGRPCTimeout(d))
			if !ok || back < d {
				t.Fatalf("%q = %s formats as %q = %s", s, d, FormatGRPCTimeout(d), back)
			}
		}
	})
}
