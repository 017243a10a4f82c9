package pipeline

import (
	"net/url"
	"strings"
)

// cookieValue finds name's value in a Cookie header ("a=1; b=2").
func cookieValue(h, name string) string {
	for len(h) > 0 {
		var part string
		part, h, _ = strings.Cut(h, ";")
		part = strings.TrimSpace(part)
		if k, v, ok := strings.Cut(part, "="); ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// queryValue finds name's first value in the query of path, unescaped as
// url.Query would (so both engines hash a key alike).
func queryValue(path, name string) string {
	_, q, ok := strings.Cut(path, "?")
	if !ok {
		return ""
	}
	for len(q) > 0 {
		var part string
		part, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			if s, err := url.QueryUnescape(v); err == nil {
				return s
			}
		}
		return v
	}
	return ""
}
