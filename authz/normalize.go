// Package authz decides whether a request may reach a service, from the
// service's AuthorizationPolicies compiled into an immutable Snapshot. The
// inbound sidecar calls Snapshot.Evaluate once per request; it takes no
// lock and, with a reused scratch buffer, allocates nothing.
//
// Paths are matched in a normalised form, so one resource has one
// spelling and an encoding cannot slip past a rule:
//
//  1. The query ('?' onwards) is not part of the path.
//  2. Percent-escapes are decoded once (%2e → '.', %2F → '/', hex in either
//     case). A malformed escape, or an escape of '%' itself (%25: a
//     double-encoded path that an app decoding twice would read differently)
//     is refused.
//  3. Refused outright, raw or decoded: '#' (clients never send fragments),
//     '\' (some servers read it as '/'), ';' (path parameters, which some
//     servers strip), NUL and other control bytes, and bytes that are not
//     valid UTF-8 (overlong forms such as %C0%AE for '.').
//  4. Duplicate slashes are merged; "." and ".." segments are resolved
//     (RFC 3986 §5.2.4; ".." at the root stays at the root).
//
// A refused path is denied whenever the service has a policy; it is never
// forwarded as if it matched nothing. Case: deny rules match paths ASCII
// case-insensitively and allow rules case-sensitively, so a case change can
// neither escape a deny nor gain an allow. An exact path matches with or
// without one trailing slash.
package authz

import (
	"errors"
	"unicode/utf8"
)

// Errors of Normalize.
var (
	ErrBadEscape   = errors.New("malformed or double percent-encoding")
	ErrBadByte     = errors.New("'#', '\\', ';' or a control byte in the path")
	ErrBadUTF8     = errors.New("path is not valid UTF-8 once decoded (overlong or broken sequence)")
	ErrNotAbsolute = errors.New("path does not start with '/'")
)

// Normalize appends the normal form of raw (a request-target's path and
// query, origin-form) to dst[:0] and returns it. "*" (OPTIONS *) is kept.
func Normalize(dst, raw []byte) ([]byte, error) {
	dst = dst[:0]
	if len(raw) == 1 && raw[0] == '*' {
		return append(dst, '*'), nil
	}
	if len(raw) == 0 || raw[0] != '/' {
		return dst, ErrNotAbsolute
	}
	// Decode into dst, refusing what rule 3 says, and merging slashes.
	for i := 0; i < len(raw); i++ {
		b := raw[i]
		if b == '?' {
			break
		}
		if b == '%' {
			if i+2 >= len(raw) {
				return dst, ErrBadEscape
			}
			h, ok1 := unhex(raw[i+1])
			l, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return dst, ErrBadEscape
			}
			b = h<<4 | l
			if b == '%' {
				return dst, ErrBadEscape
			}
			i += 2
		}
		if b == '#' || b == '\\' || b == ';' || b < 0x20 || b == 0x7f {
			return dst, ErrBadByte
		}
		if b == '/' && len(dst) > 0 && dst[len(dst)-1] == '/' {
			continue
		}
		dst = append(dst, b)
	}
	if !utf8.Valid(dst) {
		return dst, ErrBadUTF8
	}
	return removeDots(dst), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// removeDots resolves "." and ".." segments in place. p starts with '/'
// and has no "//".
func removeDots(p []byte) []byte {
	out := 1 // p[:out] is the output, always starting with '/'
	i := 1
	for i <= len(p) {
		// Segment p[i:j].
		j := i
		for j < len(p) && p[j] != '/' {
			j++
		}
		seg := p[i:j]
		last := j >= len(p)
		switch {
		case len(seg) == 1 && seg[0] == '.':
			// Drop it; a trailing "." leaves a trailing slash.
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			// Drop the previous segment, if any.
			if out > 1 {
				k := out - 2 // out-1 is the '/' after the previous segment
				for k > 0 && p[k] != '/' {
					k--
				}
				out = k + 1
			}
		default:
			out += copy(p[out:], seg)
			if !last {
				p[out] = '/'
				out++
			}
		}
		i = j + 1
	}
	return p[:out]
}
