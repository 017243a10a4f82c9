package h1

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
	"unicode/utf8"
)

// writeFields writes the fields not marked hop-by-hop and not replaced by
// a same-named field in set.
func writeFields(o *outbuf, fields []Field, hop []bool, set []Field) {
	for i := range fields {
		f := &fields[i]
		if hop[i] || inSet(set, f.Name) {
			continue
		}
		o.write(f.Name)
		o.writeString(": ")
		o.write(f.Value)
		o.writeString("\r\n")
	}
}

func inSet(set []Field, name []byte) bool {
	for i := range set {
		if EqualFold(set[i].Name, name) {
			return true
		}
	}
	return false
}

// checkFields validates fields the Router supplies: they go on the wire as
// they are, so a CR or LF in one would split the message. It reports
// whether they hold a Host.
func checkFields(fs []Field, request bool) (host bool, err error) {
	for i := range fs {
		f := &fs[i]
		if len(f.Name) == 0 || !allIn(f.Name, &tchar) || !allIn(f.Value, &valueByte) {
			return false, fmt.Errorf("%w: %q", ErrInvalidField, f.Name)
		}
		switch fieldKind(f.Name) {
		case kHost:
			host = true
			if request && !allIn(f.Value, &hostByte) {
				return false, fmt.Errorf("%w: %q", ErrInvalidField, f.Name)
			}
		case kContentLength, kTransferEncoding, kConnection, kKeepAlive, kProxyConnection, kTE, kUpgrade:
			return false, fmt.Errorf("%w: %q is the engine's to set", ErrInvalidField, f.Name)
		}
	}
	return host, nil
}

// writeRequestHead writes the forwarded head: origin-form target, HTTP/1.1
// (keep-alive, so no Connection field), Host as received unless Set
// replaces it, the end-to-end fields, Set, then the framing the engine
// itself re-emits.
func (c *conn) writeRequestHead(setHost bool) {
	req, m, o := &c.req, &c.m, &c.out
	o.write(req.Method)
	o.writeString(" ")
	o.write(req.path)
	o.writeString(" HTTP/1.1\r\n")
	if !setHost {
		o.writeString("Host: ")
		o.write(req.Host)
		o.writeString("\r\n")
	}
	writeFields(o, req.Fields, m.hop, c.d.Set)
	if c.tun == tunUpgrade {
		c.writeUpgradeFields()
	}
	for i := range c.d.Set {
		f := &c.d.Set[i]
		o.write(f.Name)
		o.writeString(": ")
		o.write(f.Value)
		o.writeString("\r\n")
	}
	if m.teTrailers {
		o.writeString("TE: trailers\r\n")
	}
	switch {
	case req.Chunked:
		o.writeString("Transfer-Encoding: chunked\r\n")
	case req.ContentLength >= 0:
		o.writeString("Content-Length: ")
		o.writeInt(req.ContentLength)
		o.writeString("\r\n")
	}
	o.writeString("\r\n")
}

// writeResponseHead writes the final response head downstream: HTTP/1.1,
// the upstream's status and reason, its end-to-end fields, then framing and
// connection fields for this hop. It decides whether the downstream
// connection closes after this response.
func (c *conn) writeResponseHead(mode int) {
	req, r, o, s := &c.req, &c.resp, &c.out, c.s
	o.writeString("HTTP/1.1 ")
	o.write(r.code)
	o.writeString("\r\n")
	writeFields(o, r.fields, r.hop, c.d.RespSet)
	for i := range c.d.RespSet {
		f := &c.d.RespSet[i]
		o.write(f.Name)
		o.writeString(": ")
		o.write(f.Value)
		o.writeString("\r\n")
	}
	if !r.hasDate {
		c.writeDate() // RFC 9110 §6.6.1: a forwarder adds the Date a response lacks
	}
	http10 := req.ProtoMinor == 0
	switch mode {
	case modeNone:
		if r.contentLength >= 0 {
			o.writeString("Content-Length: ")
			o.writeInt(r.contentLength)
			o.writeString("\r\n")
		} else if r.chunked && !http10 && r.status >= 200 && r.status != 204 && r.status != 304 {
			o.writeString("Transfer-Encoding: chunked\r\n") // HEAD: what a GET would get
		}
	case modeCL:
		o.writeString("Content-Length: ")
		o.writeInt(r.contentLength)
		o.writeString("\r\n")
	case modeChunked, modeEOF:
		// Chunked passes through; a close-delimited body is re-chunked so
		// the connection stays open. HTTP/1.0 knows no chunked: the body is
		// sent bare and the connection closed to end it.
		if http10 {
			c.closeAfter = true
		} else {
			o.writeString("Transfer-Encoding: chunked\r\n")
		}
	}
	if c.closeAfter || s.draining.Load() || s.inShutdown.Load() {
		c.closeAfter = true
		o.writeString("Connection: close\r\n")
	} else if http10 {
		o.writeString("Connection: keep-alive\r\n")
	}
	o.writeString("\r\n")
}

// writeDate writes a Date field for now, formatted into the connection's
// own array (no allocation).
func (c *conn) writeDate() {
	c.out.writeString("Date: ")
	c.out.write(time.Now().UTC().AppendFormat(c.date[:0], http.TimeFormat))
	c.out.writeString("\r\n")
}

// writeAnswer writes a local answer (the Router's) and returns its status.
// An answer that cannot be sent as given (a bad status or field) becomes a
// 500 rather than a malformed or split response.
func (c *conn) writeAnswer(status int, header []Field, body []byte) int {
	if status == 0 {
		return c.writeError(500, "no_route", "the router gave neither an upstream nor an answer")
	}
	if _, err := checkFields(header, false); status < 200 || status > 999 || err != nil {
		return c.writeError(500, "invalid_answer", "the router's answer cannot be sent: status or header field invalid")
	}
	respSet := c.d.RespSet
	if _, err := checkFields(respSet, false); err != nil {
		respSet = nil
	}
	o, s := &c.out, c.s
	o.writeString("HTTP/1.1 ")
	o.writeInt(int64(status))
	o.writeString(" ")
	if t := http.StatusText(status); t != "" {
		o.writeString(t)
	} else {
		o.writeString("Status")
	}
	o.writeString("\r\n")
	c.writeDate()
	for i := range header {
		o.write(header[i].Name)
		o.writeString(": ")
		o.write(header[i].Value)
		o.writeString("\r\n")
	}
	for i := range respSet {
		o.write(respSet[i].Name)
		o.writeString(": ")
		o.write(respSet[i].Value)
		o.writeString("\r\n")
	}
	withBody := status != 204 && status != 304
	if withBody {
		o.writeString("Content-Length: ")
		o.writeInt(int64(len(body)))
		o.writeString("\r\n")
	}
	if c.closeAfter || s.draining.Load() || s.inShutdown.Load() {
		c.closeAfter = true
		o.writeString("Connection: close\r\n")
	} else if c.req.ProtoMinor == 0 {
		o.writeString("Connection: keep-alive\r\n")
	}
	o.writeString("\r\n")
	if withBody && string(c.req.Method) != "HEAD" {
		o.write(body)
	}
	return status
}

// writeError writes the engine's own answer: status, an x-weft-error code
// and a JSON body {"error": code, "message": msg}, as the mesh's other
// errors look.
func (c *conn) writeError(status int, code, msg string) int {
	b := append(c.scratch[:0], `{"error":"`...)
	b = append(b, code...)
	b = append(b, `","message":`...)
	b = appendJSONString(b, msg)
	b = append(b, "}\n"...)
	c.scratch = b
	hdr := [...]Field{
		{Name: []byte("X-Weft-Error"), Value: []byte(code)},
		{Name: []byte("Content-Type"), Value: []byte("application/json")},
		{Name: []byte("Cache-Control"), Value: []byte("no-store")},
	}
	return c.writeAnswer(status, hdr[:], b)
}

// reject answers a malformed request and ends the connection: after a
// framing error nothing that follows can be trusted to start a request.
func (c *conn) reject(pe *protoError) {
	c.outBlk = blockPool.Get().(*block)
	c.out = outbuf{buf: c.outBlk[:0], dst: c.downW}
	c.closeAfter = true
	c.req.Method, c.req.ProtoMinor = nil, 1
	c.d.RespSet = nil
	code := "bad_request"
	if pe.status == 505 || pe.status == 501 {
		code = "unsupported"
	}
	c.writeError(pe.status, code, pe.msg)
	c.out.flush()
	blockPool.Put(c.outBlk)
	c.outBlk, c.out = nil, outbuf{}
}

// defaultStatus is the status of the engine's answer to a failed exchange.
func defaultStatus(err error) int {
	var op *net.OpError
	switch {
	case errors.As(err, &op) && op.Op == "dial":
		return 503
	case errors.Is(err, ErrUpstreamTimeout):
		return 504
	case errors.Is(err, ErrBadRequest):
		if pe := (*protoError)(nil); errors.As(err, &pe) && pe.status == 408 {
			return 408 // a request body too slow (bodyReader)
		}
		return 400
	case errors.Is(err, ErrInvalidField):
		return 500
	}
	return 502
}

// errorCode is the x-weft-error code for defaultStatus's answers; they are
// the codes package proxy uses.
func errorCode(status int) string {
	switch status {
	case 503:
		return "connect_failed"
	case 504:
		return "upstream_timeout"
	case 400:
		return "bad_request"
	case 408:
		return "request_timeout"
	case 500:
		return "invalid_route"
	}
	return "upstream_reset"
}

func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}
