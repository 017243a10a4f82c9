package deliver

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   Verdict
		reason string // substring
	}{
		{"200 empty", 200, "", Ack, ""},
		{"204", 204, "", Ack, ""},
		{"200 success", 200, `{"status":"SUCCESS"}`, Ack, ""},
		{"200 success lower case", 200, `{"status":"success"}`, Ack, ""},
		{"200 text body", 200, "ok\n", Ack, ""},
		{"200 json without status", 200, `{"received":true}`, Ack, ""},
		{"200 json array", 200, `[1,2]`, Ack, ""},
		{"200 malformed json", 200, `{"status":`, Ack, ""},
		{"200 retry", 200, `{"status":"RETRY"}`, Retry, "RETRY"},
		{"200 retry with spaces", 200, ` { "status" : " retry " } `, Retry, "RETRY"},
		{"200 deadletter", 200, `{"status":"DEADLETTER"}`, DeadLetter, "DEADLETTER"},
		{"200 drop", 200, `{"status":"DROP"}`, DeadLetter, ""},
		{"200 unknown status", 200, `{"status":"MAYBE"}`, Retry, `unknown status "MAYBE"`},
		{"200 status not a string", 200, `{"status":3}`, Ack, ""},
		{"500", 500, "boom", Retry, `500 Internal Server Error: "boom"`},
		{"503", 503, "", Retry, "503"},
		{"429", 429, "", Retry, "429"},
		{"408", 408, "", Retry, "408"},
		{"404", 404, "404 page not found\n", DeadLetter, "404 Not Found"},
		{"400", 400, "bad", DeadLetter, "not retried"},
		{"422", 422, "", DeadLetter, "422"},
		{"302", 302, "", Retry, "302"},
		{"long body truncated", 500, strings.Repeat("x", 10000), Retry, "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, reason := ParseAnswer(tt.status, []byte(tt.body))
			if v != tt.want {
				t.Fatalf("verdict %s, want %s (reason %q)", v, tt.want, reason)
			}
			if !strings.Contains(reason, tt.reason) {
				t.Fatalf("reason %q, want it to contain %q", reason, tt.reason)
			}
			if len(reason) > 400 {
				t.Fatalf("reason is %d bytes", len(reason))
			}
		})
	}
}

// FuzzParseAnswer: any answer from the app yields a verdict and a bounded,
// printable reason, and never panics.
func FuzzParseAnswer(f *testing.F) {
	for _, s := range []struct {
		status int
		body   string
	}{
		{200, ""}, {200, `{"status":"SUCCESS"}`}, {200, `{"status":"RETRY"}`}, {200, `{"status":"DEADLETTER"}`},
		{500, "boom"}, {404, "not found"}, {200, `{"status":"\u00e9\u0000"}`}, {299, "{"},
	} {
		f.Add(s.status, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		v, reason := ParseAnswer(status, body)
		if v > DeadLetter {
			t.Fatalf("verdict %d", v)
		}
		if v == Ack && reason != "" {
			t.Fatalf("ack with a reason %q", reason)
		}
		if v != Ack && reason == "" {
			t.Fatalf("%s without a reason", v)
		}
		if len(reason) > 1200 {
			t.Fatalf("reason is %d bytes", len(reason))
		}
		if !utf8.ValidString(reason) {
			t.Fatalf("reason is not UTF-8: %q", reason)
		}
		for _, r := range reason {
			if r < ' ' && r != '\t' {
				t.Fatalf("control character in reason %q", reason)
			}
		}
	})
}
