package deliver

import (
	"encoding/json"
	"testing"
)

// appendJSONString writes what encoding/json reads back as the string
// encoding/json itself would have written (invalid UTF-8 as U+FFFD).
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `quo"te`, `back\slash`, "new\nline\r\t", "\x00\x01\x1f\x7f", "é日本\U0001F600",
		"bad \xff utf8 \xc3", "\u2028\u2029", "<html>&amp;", "X-Msg-Tenant"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q encoded as %s: not JSON: %v", s, got, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Fatalf("%q encoded as %s reads back %q; encoding/json's %s reads back %q", s, got, back, want, wantBack)
		}
	})
}
