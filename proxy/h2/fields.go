package h2

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// requestFields is the head sent upstream: the pseudo-fields, the
// caller's fields but those the Decision removes or replaces, then the
// Decision's own.
func requestFields(r *Request, d *Decision) []hpack.HeaderField {
	return appendRequestFields(make([]hpack.HeaderField, 0, 4+len(r.Fields)+len(d.Set)), r, d)
}

// appendRequestFields is requestFields appending to out.
func appendRequestFields(out []hpack.HeaderField, r *Request, d *Decision) []hpack.HeaderField {
	out = append(out,
		hpack.HeaderField{Name: ":method", Value: r.Method},
		hpack.HeaderField{Name: ":scheme", Value: "http"},
		hpack.HeaderField{Name: ":authority", Value: r.Authority},
	)
	if r.Method != "CONNECT" || r.Protocol != "" {
		out = append(out, hpack.HeaderField{Name: ":path", Value: r.Path})
	}
	if r.Protocol != "" {
		out = append(out, hpack.HeaderField{Name: ":protocol", Value: r.Protocol})
	}
	for _, f := range r.Fields {
		if f.Name == "host" || dropped(f.Name, d.Set, d.Del) {
			continue
		}
		out = append(out, f)
	}
	return appendLower(out, d.Set)
}

// responseFields is the head sent to the caller.
func responseFields(h *http2.MetaHeadersFrame, d *Decision) []hpack.HeaderField {
	return appendResponseFields(make([]hpack.HeaderField, 0, 1+len(h.RegularFields())+len(d.RespSet)), h, d)
}

// appendResponseFields is responseFields appending to out.
func appendResponseFields(out []hpack.HeaderField, h *http2.MetaHeadersFrame, d *Decision) []hpack.HeaderField {
	reg := h.RegularFields()
	out = append(out, hpack.HeaderField{Name: ":status", Value: h.PseudoValue("status")})
	for _, f := range reg {
		if dropped(f.Name, d.RespSet, d.RespDel) {
			continue
		}
		out = append(out, f)
	}
	return appendLower(out, d.RespSet)
}

func dropped(name string, set []hpack.HeaderField, del []string) bool {
	for i := range set {
		if strings.EqualFold(set[i].Name, name) {
			return true
		}
	}
	for _, n := range del {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// appendLower appends fs with lower-case names (HTTP/2 requires them; the
// Router may have written canonical ones).
func appendLower(out, fs []hpack.HeaderField) []hpack.HeaderField {
	for _, f := range fs {
		if hasUpper(f.Name) {
			f.Name = strings.ToLower(f.Name)
		}
		out = append(out, f)
	}
	return out
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

func responseOf(h *http2.MetaHeadersFrame) *Response {
	r := &Response{}
	responseInto(r, h)
	return r
}

func responseInto(r *Response, h *http2.MetaHeadersFrame) {
	st, _ := strconv.Atoi(h.PseudoValue("status"))
	*r = Response{Status: st, Fields: h.RegularFields(), EndStream: h.StreamEnded(), At: time.Now()}
}

// fieldsPool holds the scratch a head is built in before it is encoded
// (at once, under the connection's write lock): two slices of a dozen
// fields per call were a third of the bytes the engine allocated.
var fieldsPool = sync.Pool{New: func() any { fs := make([]hpack.HeaderField, 0, 16); return &fs }}

func getFields() *[]hpack.HeaderField { return fieldsPool.Get().(*[]hpack.HeaderField) }

// putFields returns fs, emptied (so the pool holds no request's strings).
func putFields(fs *[]hpack.HeaderField) {
	clear(*fs)
	*fs = (*fs)[:0]
	fieldsPool.Put(fs)
}
