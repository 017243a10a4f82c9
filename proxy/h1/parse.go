package h1

import "bytes"

// The parsers below work on a complete head found by headScan, so they
// never block and never copy: every slice they produce aliases the head.
// They are strict where leniency has been a request-smuggling vector
// (RFC 9112 §11.2): lines end in CRLF only (a bare LF is an error, not a
// line end, so no two parsers on the path can disagree on where a line
// stops), no obs-fold, no whitespace between a field name and its colon,
// exactly one framing, exact versions.

// protoError is a peer's protocol violation. For a request it carries the
// status of the answer (400, 431, 505); an upstream's violation becomes a
// 502 wrapped in ErrMalformedResponse.
type protoError struct {
	status int
	msg    string
}

func (e *protoError) Error() string { return "h1: " + e.msg }

var (
	errBareLF        = &protoError{400, "line ends in a bare LF; lines must end in CRLF"}
	errObsFold       = &protoError{400, "obsolete line folding (a line starting with a space or tab)"}
	errRequestLine   = &protoError{400, "malformed request line"}
	errMethod        = &protoError{400, "invalid method"}
	errTarget        = &protoError{400, "invalid request target"}
	errEmptyPathQry  = &protoError{400, "absolute-form target with an empty path and a query; send http://host/?query"}
	errStarTarget    = &protoError{400, "target * is only for OPTIONS"}
	errVersionSyntax = &protoError{400, "malformed HTTP version"}
	errVersion       = &protoError{505, "HTTP version not supported; use HTTP/1.1 or HTTP/1.0"}
	errFieldName     = &protoError{400, "invalid field name (or whitespace before the colon)"}
	errNoColon       = &protoError{400, "field line without a colon"}
	errFieldValue    = &protoError{400, "invalid byte in a field value"}
	errHeadTooLarge  = &protoError{431, "head too large"}
	errTooManyFields = &protoError{431, "too many header fields"}
	errNoHost        = &protoError{400, "missing Host header"}
	errManyHosts     = &protoError{400, "more than one Host header"}
	errHost          = &protoError{400, "invalid Host"}
	errTEAndCL       = &protoError{400, "both Transfer-Encoding and Content-Length"}
	errTE            = &protoError{400, "unsupported Transfer-Encoding; only chunked"}
	errTE10          = &protoError{400, "Transfer-Encoding in an HTTP/1.0 message"}
	errCL            = &protoError{400, "invalid Content-Length"}
	errManyCL        = &protoError{400, "conflicting Content-Length values"}
	errStatusLine    = &protoError{400, "malformed status line"}
	errChunkSize     = &protoError{400, "malformed chunk size line"}
	errChunkCRLF     = &protoError{400, "chunk data not followed by CRLF"}
	errChunkLine     = &protoError{400, "chunk size line too long"}
	errTrailer       = &protoError{400, "trailer section too large"}
	errPreface       = &protoError{505, "HTTP/2 connection preface"} // handed to the fallback when there is one
	// errNotHTTP has no status: the connection is closed without an
	// answer (see notHTTP).
	errNotHTTP = &protoError{0, "not HTTP/1.x (the request line's version is no HTTP version); closed without an answer"}
)

// Byte classes: RFC 9110 §5.6.2 tchar; §5.5 field-value (VCHAR, SP, HTAB,
// obs-text; no other CTL, so no CR, LF or NUL); request-target bytes (no
// CTL, no space); and the Host bytes net/http accepts (no userinfo "@", no
// "/", "?", "#").
var tchar, valueByte, targetByte, hostByte = func() (t, v, g, h [256]bool) {
	for c := 0; c < 256; c++ {
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		t[c] = alnum || bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), byte(c)) >= 0
		v[c] = c == '\t' || c >= 0x20 && c != 0x7f
		g[c] = c > 0x20 && c != 0x7f && c != '#'
		h[c] = alnum || bytes.IndexByte([]byte("!$%&'()*+,-.:;=[]_~"), byte(c)) >= 0
	}
	return
}()

func allIn(b []byte, class *[256]bool) bool {
	for _, c := range b {
		if !class[c] {
			return false
		}
	}
	return true
}

// equalFold reports whether b equals s, ASCII case-insensitively.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// EqualFold reports whether a equals b, ASCII case-insensitively (header
// names), without allocating.
func EqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, s string) bool {
	return len(b) >= len(s) && equalFold(b[:len(s)], s)
}

// Field kinds the engine acts on.
const (
	kOther = iota
	kHost
	kContentLength
	kTransferEncoding
	kConnection
	kKeepAlive
	kProxyConnection
	kTE
	kUpgrade
	kProxyAuthorization
	kProxyAuthenticate
	kExpect
	kDate
)

func fieldKind(name []byte) int {
	switch len(name) {
	case 2:
		if equalFold(name, "te") {
			return kTE
		}
	case 4:
		if equalFold(name, "host") {
			return kHost
		}
		if equalFold(name, "date") {
			return kDate
		}
	case 6:
		if equalFold(name, "expect") {
			return kExpect
		}
	case 7:
		if equalFold(name, "upgrade") {
			return kUpgrade
		}
	case 10:
		if equalFold(name, "connection") {
			return kConnection
		}
		if equalFold(name, "keep-alive") {
			return kKeepAlive
		}
	case 14:
		if equalFold(name, "content-length") {
			return kContentLength
		}
	case 16:
		if equalFold(name, "proxy-connection") {
			return kProxyConnection
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return kTransferEncoding
		}
	case 18:
		if equalFold(name, "proxy-authenticate") {
			return kProxyAuthenticate
		}
	case 19:
		if equalFold(name, "proxy-authorization") {
			return kProxyAuthorization
		}
	}
	return kOther
}

// headScan finds the end of a head as bytes arrive, remembering how far it
// got so a head trickling in is scanned once in all (O(n), not O(n²)).
type headScan struct {
	off   int // head bytes already split into complete lines
	lines int // complete non-empty lines so far
}

// scan looks for the empty line ending the head that starts at b[0]. It
// returns the head's length (through the final CRLF), or 0 when more bytes
// are needed. maxBytes bounds the head, maxLines its non-empty lines.
func (hs *headScan) scan(b []byte, maxBytes, maxLines int) (int, error) {
	for {
		i := bytes.IndexByte(b[hs.off:], '\n')
		if i < 0 {
			if len(b) > maxBytes {
				return 0, errHeadTooLarge
			}
			return 0, nil
		}
		lf := hs.off + i
		if lf+1 > maxBytes {
			return 0, errHeadTooLarge
		}
		if lf == hs.off || b[lf-1] != '\r' {
			return 0, errBareLF
		}
		if lf-1 == hs.off { // "\r\n" alone: the end (the caller strips leading ones)
			return lf + 1, nil
		}
		hs.lines++
		if hs.lines > maxLines+1 { // +1: the start line
			return 0, errTooManyFields
		}
		hs.off = lf + 1
	}
}

// nextLine splits off the first CRLF-terminated line of a scanned head.
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	return b[:i-1], b[i+1:]
}

// parseField splits a field line, rejecting obs-fold, whitespace before
// the colon, non-tchar names and CTLs in the value; OWS around the value is
// dropped.
func parseField(line []byte) (name, value []byte, err error) {
	if line[0] == ' ' || line[0] == '\t' {
		return nil, nil, errObsFold
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return nil, nil, errNoColon
	}
	name = line[:colon]
	if len(name) == 0 || !allIn(name, &tchar) {
		return nil, nil, errFieldName
	}
	value = line[colon+1:]
	if !allIn(value, &valueByte) {
		return nil, nil, errFieldValue
	}
	return name, trimOWS(value), nil
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// nextToken splits a comma-separated list element off v, without OWS.
func nextToken(v []byte) (tok, rest []byte) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		return trimOWS(v[:i]), v[i+1:]
	}
	return trimOWS(v), nil
}

// parseContentLength accepts 1 to 18 digits: no sign, no list, no
// whitespace inside, so no overflow and one reading only.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseVersion reads "HTTP/1.0" or "HTTP/1.1"; another well-formed
// version is errVersion (505), anything else errVersionSyntax.
func parseVersion(v []byte) (int, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' || v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' {
		return 0, errVersionSyntax
	}
	if v[5] != '1' || v[7] > '1' {
		return 0, errVersion
	}
	return int(v[7] - '0'), nil
}

// notHTTP reports whether the third word of a request line (one word: no
// space in it) claims no HTTP version at all, as in h2spec's invalid
// connection preface "INVALID CONNECTION PREFACE" or "OPTIONS * RTSP/1.0".
// Such a peer is no HTTP/1.x client, so an HTTP/1.1 answer means nothing to
// it; on a port that also takes HTTP/2 with prior knowledge it is most
// likely an HTTP/2 client with a bad preface, which RFC 9113 §3.4 says must
// see the connection end (a connection error before any frame: the TCP
// connection closed). So it is closed without an answer, where RFC 9112 §3
// only says SHOULD answer 400 — what net/http, nginx and HAProxy do, on
// ports that speak HTTP/1.x alone. Nothing is forwarded either way. A line
// that looks like HTTP (a version starting "HTTP", any case: "http/1.1",
// "HTTP/1.1x", "HTTP/1.2"), a target with a space in it or no version
// keeps its 400 or 505: that peer may read it.
func notHTTP(ver []byte) bool {
	return len(ver) > 0 && bytes.IndexByte(ver, ' ') < 0 && (len(ver) < 4 || !equalFold(ver[:4], "HTTP"))
}

// framing collects what the fields of one head say about its body and
// connection; shared by requests and responses.
type framing struct {
	contentLength int64 // -1: none
	chunked       bool
	hasTE         bool
	connClose     bool
	connKeepAlive bool
	connUpgrade   bool
	hasUpgrade    bool
	teTrailers    bool
	expect100     bool
	hasDate       bool
	hosts         int
	host          []byte
}

// field folds one parsed field into f and reports whether the engine
// drops it when forwarding (hop-by-hop or re-emitted framing). minor is
// the message's HTTP/1.x minor version.
func (f *framing) field(kind int, value []byte, minor int) (hop bool, err error) {
	switch kind {
	case kHost:
		f.hosts++
		if f.hosts > 1 {
			return true, errManyHosts
		}
		if !allIn(value, &hostByte) {
			return true, errHost
		}
		f.host = value
		return true, nil
	case kContentLength:
		n, ok := parseContentLength(value)
		if !ok {
			return true, errCL
		}
		if f.contentLength >= 0 && f.contentLength != n {
			return true, errManyCL
		}
		f.contentLength = n
		return true, nil
	case kTransferEncoding:
		if minor == 0 {
			return true, errTE10
		}
		// Exactly one field saying exactly "chunked": a second field, a
		// list or another coding is how smuggling starts.
		if f.hasTE || !equalFold(value, "chunked") {
			return true, errTE
		}
		f.hasTE, f.chunked = true, true
		return true, nil
	case kConnection:
		for v := value; len(v) > 0; {
			var tok []byte
			tok, v = nextToken(v)
			switch {
			case equalFold(tok, "close"):
				f.connClose = true
			case equalFold(tok, "keep-alive"):
				f.connKeepAlive = true
			case equalFold(tok, "upgrade"):
				f.connUpgrade = true
			}
		}
		return true, nil
	case kTE:
		for v := value; len(v) > 0; {
			var tok []byte
			tok, v = nextToken(v)
			if i := bytes.IndexByte(tok, ';'); i >= 0 {
				tok = trimOWS(tok[:i])
			}
			if equalFold(tok, "trailers") {
				f.teTrailers = true
			}
		}
		return true, nil
	case kUpgrade:
		f.hasUpgrade = true
		return true, nil
	case kKeepAlive, kProxyConnection, kProxyAuthorization, kProxyAuthenticate:
		return true, nil
	case kExpect:
		if minor >= 1 && equalFold(value, "100-continue") {
			f.expect100 = true
		}
	case kDate:
		f.hasDate = true
	}
	return false, nil
}

// dropConnectionListed marks the fields named in Connection as hop-by-hop
// (RFC 9110 §7.6.1).
func dropConnectionListed(fields []Field, hop []bool) {
	for i := range fields {
		if !equalFold(fields[i].Name, "connection") {
			continue
		}
		for v := fields[i].Value; len(v) > 0; {
			var tok []byte
			tok, v = nextToken(v)
			if len(tok) == 0 {
				continue
			}
			for j := range fields {
				if !hop[j] && EqualFold(fields[j].Name, tok) {
					hop[j] = true
				}
			}
		}
	}
}

// reqMeta is what the engine keeps about a request besides Request.
type reqMeta struct {
	framing
	hop     []bool // per field: not forwarded
	connect bool
	upgrade bool // an Upgrade the client asked for (Upgrade field named in Connection)
}

var slash = []byte("/")

// validEscapes reports whether every "%" in the path (the query is not
// checked, as net/http does not) starts a two-hex-digit escape. A path the
// engine routes on must not read differently to an app that decodes it.
func validEscapes(target []byte) bool {
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		target = target[:q]
	}
	for i := bytes.IndexByte(target, '%'); i >= 0; i = bytes.IndexByte(target, '%') {
		if i+2 >= len(target) || !isHex(target[i+1]) || !isHex(target[i+2]) {
			return false
		}
		target = target[i+3:]
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// parseRequest parses a complete request head (as found by headScan) into
// req and m. errPreface reports an HTTP/2 prior-knowledge preface.
func parseRequest(head []byte, maxFields int, req *Request, m *reqMeta) error {
	line, rest := nextLine(head)
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return errRequestLine
	}
	method := line[:sp]
	line = line[sp+1:]
	sp = bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return errRequestLine
	}
	target, ver := line[:sp], line[sp+1:]
	if notHTTP(ver) {
		return errNotHTTP
	}
	if !allIn(method, &tchar) {
		return errMethod
	}
	if !allIn(target, &targetByte) {
		return errTarget
	}
	if string(method) == "PRI" && string(target) == "*" && string(ver) == "HTTP/2.0" {
		return errPreface
	}
	minor, err := parseVersion(ver)
	if err != nil {
		return err
	}
	req.Method, req.Target, req.ProtoMinor = method, target, minor
	req.Host, req.path = nil, nil

	m.framing = framing{contentLength: -1}
	m.connect, m.upgrade = false, false
	req.Fields, m.hop = req.Fields[:0], m.hop[:0]
	for len(rest) > 2 {
		line, rest = nextLine(rest)
		if len(req.Fields) == maxFields {
			return errTooManyFields
		}
		name, value, err := parseField(line)
		if err != nil {
			return err
		}
		hop, err := m.field(fieldKind(name), value, minor)
		if err != nil {
			return err
		}
		req.Fields = append(req.Fields, Field{Name: name, Value: value})
		m.hop = append(m.hop, hop)
	}
	f := &m.framing
	if f.hasTE && f.contentLength >= 0 {
		return errTEAndCL
	}
	if minor == 1 && f.hosts == 0 {
		return errNoHost
	}
	req.Host = f.host

	switch {
	case string(method) == "CONNECT":
		if !allIn(target, &hostByte) {
			return errTarget
		}
		m.connect = true
	case target[0] == '/':
		req.path = target
	case string(target) == "*":
		if string(method) != "OPTIONS" {
			return errStarTarget
		}
		req.path = target
	case hasPrefixFold(target, "http://"):
		auth := target[len("http://"):]
		end := bytes.IndexAny(auth, "/?")
		if end < 0 {
			end = len(auth)
		}
		if end < len(auth) && auth[end] == '?' {
			return errEmptyPathQry
		}
		if end == 0 || !allIn(auth[:end], &hostByte) {
			return errTarget
		}
		req.Host = auth[:end]
		if req.path = auth[end:]; len(req.path) == 0 {
			req.path = slash
		}
	default:
		return errTarget
	}

	if !validEscapes(req.path) {
		return errTarget
	}

	req.Chunked = f.chunked
	req.ContentLength = f.contentLength
	if f.chunked {
		req.ContentLength = -1
	}
	req.KeepAlive = minor == 1 && !f.connClose || minor == 0 && f.connKeepAlive && !f.connClose
	m.upgrade = f.hasUpgrade && f.connUpgrade
	dropConnectionListed(req.Fields, m.hop)
	return nil
}

// respMeta is a parsed response head.
type respMeta struct {
	framing
	status int
	minor  int
	code   []byte  // status code and reason as received ("200 OK")
	fields []Field // in order
	hop    []bool
}

// parseResponse parses a complete response head. The same rules as for
// requests apply, so an upstream cannot smuggle a second response past
// the engine either.
func parseResponse(head []byte, maxFields int, m *respMeta) error {
	line, rest := nextLine(head)
	if len(line) < 12 || line[8] != ' ' {
		return errStatusLine
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return errStatusLine
	}
	code := line[9:]
	st := 0
	for i := 0; i < 3; i++ {
		c := code[i]
		if c < '0' || c > '9' {
			return errStatusLine
		}
		st = st*10 + int(c-'0')
	}
	if st < 100 || len(code) > 3 && code[3] != ' ' || !allIn(code[3:], &valueByte) {
		return errStatusLine
	}
	m.status, m.minor, m.code = st, minor, code
	m.framing = framing{contentLength: -1}
	m.fields, m.hop = m.fields[:0], m.hop[:0]
	for len(rest) > 2 {
		line, rest = nextLine(rest)
		if len(m.fields) == maxFields {
			return errTooManyFields
		}
		name, value, err := parseField(line)
		if err != nil {
			return err
		}
		hop := false // a Host (or Expect) in a response means nothing to the engine
		if k := fieldKind(name); k != kHost && k != kExpect {
			if hop, err = m.field(k, value, minor); err != nil {
				return err
			}
		}
		m.fields = append(m.fields, Field{Name: name, Value: value})
		m.hop = append(m.hop, hop)
	}
	if m.hasTE && m.contentLength >= 0 {
		return errTEAndCL
	}
	dropConnectionListed(m.fields, m.hop)
	return nil
}

// bodyless reports whether a response to method with status has no body
// whatever its fields say (RFC 9112 §6.3).
func bodyless(method []byte, status int) bool {
	return status < 200 || status == 204 || status == 304 || string(method) == "HEAD"
}
