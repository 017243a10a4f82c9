package capture

import "bytes"

// Kind is what the first bytes of a captured connection look like.
type Kind int

const (
	// KindUnknown: not (yet) recognisable as HTTP: passed through to the
	// original destination.
	KindUnknown Kind = iota
	// KindHTTP1: an HTTP/1.x request; Host is its Host header's name.
	KindHTTP1
	// KindH2: the HTTP/2 prior-knowledge preface (h2c, gRPC).
	KindH2
	// KindMore: an HTTP/1.x request line whose header block has not all
	// arrived; read more and ask again.
	KindMore
)

// MaxHead bounds the bytes read before a captured connection is routed:
// an HTTP/1.x request's header block must end within it.
const MaxHead = 16 << 10

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Sniff classifies the first bytes b of a connection the app opened. For an
// HTTP/1.x request it returns KindMore until the header block is complete
// (or b holds MaxHead bytes: then KindUnknown), then KindHTTP1 and the Host
// header's name without port, lower-cased ("" when the request has none).
// It never reads past b and accepts any input (fuzzed: FuzzSniff).
func Sniff(b []byte) (Kind, string) {
	if len(b) == 0 {
		return KindMore, ""
	}
	if bytes.HasPrefix(h2Preface, b) && len(b) < len(h2Preface) {
		return KindMore, ""
	}
	if bytes.HasPrefix(b, h2Preface) {
		return KindH2, ""
	}
	line, rest, complete := bytes.Cut(b, []byte("\r\n"))
	if !plausibleRequestLine(line, complete) {
		return KindUnknown, ""
	}
	if !complete {
		if len(b) >= MaxHead {
			return KindUnknown, ""
		}
		return KindMore, ""
	}
	end := bytes.Index(rest, []byte("\r\n\r\n"))
	if !bytes.HasPrefix(rest, []byte("\r\n")) && end < 0 {
		if len(b) >= MaxHead {
			return KindUnknown, ""
		}
		return KindMore, ""
	}
	head := rest
	if end >= 0 {
		head = rest[:end+2]
	}
	for len(head) > 0 {
		var l []byte
		l, head, _ = bytes.Cut(head, []byte("\r\n"))
		name, value, ok := bytes.Cut(l, []byte(":"))
		if ok && asciiEqualFold(name, "host") {
			return KindHTTP1, hostName(bytes.TrimSpace(value))
		}
	}
	return KindHTTP1, ""
}

// plausibleRequestLine reports whether line starts like "METHOD SP TARGET
// SP HTTP/1.x"; when the line is not complete yet, whether it can still
// become one.
func plausibleRequestLine(line []byte, complete bool) bool {
	sp := bytes.IndexByte(line, ' ')
	method := line
	if sp >= 0 {
		method = line[:sp]
	}
	if len(method) == 0 && (sp == 0 || complete) || len(method) > 16 {
		return false
	}
	for _, c := range method {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	if sp < 0 {
		return !complete
	}
	last := bytes.LastIndexByte(line, ' ')
	if last == sp {
		return !complete // the target is still arriving
	}
	proto := line[last+1:]
	if !complete {
		return true
	}
	return len(proto) == len("HTTP/1.1") && bytes.HasPrefix(proto, []byte("HTTP/1."))
}

// hostName is the host of a Host header value: no port, no trailing dot,
// lower case. An IPv6 literal keeps its brackets.
func hostName(v []byte) string {
	h := v
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && (h[0] != '[' || bytes.IndexByte(h, ']') < i) {
		h = h[:i]
	}
	h = bytes.TrimSuffix(h, []byte("."))
	return string(bytes.ToLower(h))
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
