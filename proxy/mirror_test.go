package proxy

import (
	"io"
	"strings"
	"testing"
)

// TestMirrorBody: the net/http path's copy gets the body the primary read,
// once, when it ended within the limit; a larger body, or one closed
// before its end, is skipped (counted).
func TestMirrorBody(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      string
		limit     int
		readAll   bool
		wantBody  string
		wantSkips int
	}{
		{"within the limit", "hello world", 64, true, "hello world", 0},
		{"over the limit", strings.Repeat("x", 100), 64, true, "", 1},
		{"closed early", "hello world", 64, false, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			skips := 0
			b := &mirrorBody{src: io.NopCloser(strings.NewReader(tc.body)), limit: tc.limit,
				done: func(p []byte) { got = append(got, string(p)) }, skip: func() { skips++ }}
			if tc.readAll {
				read, err := io.ReadAll(struct{ io.Reader }{b}) // small reads, as a transport does
				if err != nil || string(read) != tc.body {
					t.Fatalf("the primary read %q, %v", read, err)
				}
			} else {
				io.ReadFull(b, make([]byte, 3))
			}
			b.Close()
			if (tc.wantBody == "") != (len(got) == 0) || (len(got) > 0 && (len(got) != 1 || got[0] != tc.wantBody)) {
				t.Errorf("copies sent %q, want %q", got, tc.wantBody)
			}
			if skips != tc.wantSkips {
				t.Errorf("%d skipped, want %d", skips, tc.wantSkips)
			}
		})
	}
}
