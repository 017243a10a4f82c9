package capture

import (
	"strings"
	"testing"
)

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		kind Kind
		host string
	}{
		{"empty", "", KindMore, ""},
		{"get with host", "GET / HTTP/1.1\r\nHost: orders\r\n\r\n", KindHTTP1, "orders"},
		{"host with port, case", "POST /x HTTP/1.1\r\nUser-Agent: a\r\nhOsT:  Orders.Default:8080 \r\n\r\n", KindHTTP1, "orders.default"},
		{"trailing dot", "GET / HTTP/1.1\r\nHost: orders.\r\n\r\n", KindHTTP1, "orders"},
		{"ipv6 literal", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", KindHTTP1, "[::1]"},
		{"no host header", "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", KindHTTP1, ""},
		{"headers incomplete", "GET / HTTP/1.1\r\nHost: orders\r\n", KindMore, ""},
		{"request line incomplete", "GET /lon", KindMore, ""},
		{"method only so far", "GE", KindMore, ""},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", KindH2, ""},
		{"h2 preface partial", "PRI * HTTP/2", KindMore, ""},
		{"tls client hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", KindUnknown, ""},
		{"lower-case method", "get / HTTP/1.1\r\n\r\n", KindUnknown, ""},
		{"not http version", "GET / SMTP/1.0\r\n\r\n", KindUnknown, ""},
		{"redis inline", "PING\r\n", KindUnknown, ""},
		{"leading space", " GET / HTTP/1.1\r\n", KindUnknown, ""},
		{"head past MaxHead", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHead) + "\r\n", KindUnknown, ""},
		{"line past MaxHead", "GET /" + strings.Repeat("a", MaxHead), KindUnknown, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, host := Sniff([]byte(tc.in))
			if kind != tc.kind || host != tc.host {
				t.Errorf("Sniff(%.60q) = %v, %q; want %v, %q", tc.in, kind, host, tc.kind, tc.host)
			}
		})
	}
}

// FuzzSniff: any bytes an app sends are classified without a panic, a
// complete HTTP/1 head is never asked to grow, and the host is a slice of
// the input, lower-cased.
func FuzzSniff(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: orders\r\n\r\n"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Add([]byte("\x16\x03\x01"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, host := Sniff(b)
		if kind != KindHTTP1 && host != "" {
			t.Fatalf("host %q for kind %v", host, kind)
		}
		if kind == KindMore && len(b) >= MaxHead {
			t.Fatalf("KindMore for %d bytes (MaxHead %d)", len(b), MaxHead)
		}
		if host != "" && !strings.Contains(strings.ToLower(string(b)), host) {
			t.Fatalf("host %q not in the input", host)
		}
	})
}
