package h1

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// Client is the engine's upstream side for another engine: the native
// HTTP/2 engine (proxy/h2) forwarding a stream to an HTTP/1.1 app. It
// shares what the engine's own exchanges use — the pool of upstream
// connections (pool.go), head and chunk framing, and the response parser
// with its limits — so an app cannot smuggle a second response past this
// path either, and a request costs no http.Request, header map or
// goroutine pair.
type Client struct {
	lim Limits
	ups upstreams
}

// NewClient returns a Client; dial, when set, opens its connections
// (default: TCP with lim.DialTimeout).
func NewClient(lim Limits, dial func(addr string) (net.Conn, error)) *Client {
	c := &Client{lim: lim.withDefaults()}
	c.ups.init(&c.lim)
	c.ups.dial = dial
	return c
}

// CloseIdle closes the pooled connections.
func (c *Client) CloseIdle() { c.ups.closeIdle() }

// Close stops pooling: idle connections close now, those in use when
// their exchange ends.
func (c *Client) Close() { c.ups.shutdown() }

// Exchange is one request and its response on one upstream connection.
// The request (WriteHead, WriteBody, EndBody) may be written from one
// goroutine while another reads the response (ReadHead, Next): an
// upstream may answer before it has read the whole body. Done or Close
// ends it, once neither side is in use.
type Exchange struct {
	cl      *Client
	uc      *upConn
	out     outbuf
	blk     *block
	method  string
	chunked bool // the request body's framing
	reqLeft int64
	reqDone bool        // the request was written whole
	failed  atomic.Bool // the connection's state is unknown: it is not pooled
	upgrade bool        // the head asks for a protocol switch (Upgrade)
	raw     bool        // switched (101): bytes go through unframed

	resp    respMeta
	mode    int
	left    int64 // modeCL: body bytes left; modeChunked: of the current chunk
	inChunk bool  // modeChunked: a chunk's data (then its CRLF) is being read
	eof     bool
	idle    time.Duration
	trailer []Field
	tbuf    []byte
	nul     outbuf // readLine's sink: nothing is ever written to it
}

// ErrResponseFraming wraps a response the engine's parser refused
// (malformed head or chunked framing, too large, a 101 to a request that
// asked for no upgrade).
var ErrResponseFraming = errors.New("h1: malformed upstream response")

// Open returns an exchange on a pooled connection to addr (found live
// first) or a new one. Its error is the dialer's (*net.OpError, Op
// "dial"): nothing was sent.
func (c *Client) Open(addr string) (*Exchange, error) {
	uc, err := c.ups.get(addr, true)
	if err != nil {
		return nil, err
	}
	x := &Exchange{cl: c, uc: uc, blk: blockPool.Get().(*block)}
	x.out = outbuf{buf: x.blk[:0], dst: timedConn{uc.nc, c.lim.WriteTimeout}}
	return x, nil
}

// Reused reports whether the connection served an earlier request (a
// failure before any response byte may then be the peer's idle close).
func (x *Exchange) Reused() bool { return x.uc.reused }

// timedConn gives every write to the upstream a deadline, so a body
// written to an app that stopped reading fails instead of hanging.
type timedConn struct {
	nc net.Conn
	d  time.Duration
}

func (t timedConn) Write(p []byte) (int, error) {
	t.nc.SetWriteDeadline(time.Now().Add(t.d))
	return t.nc.Write(p)
}

// WriteHead starts the request: "METHOD target HTTP/1.1" and Host (from
// the HTTP/2 :authority). Fields follow with Field, then EndHead.
func (x *Exchange) WriteHead(method, target, host string) error {
	if !validString(method, &tchar) || target == "" || !validString(target, &targetByte) || !validString(host, &hostByte) {
		return fmt.Errorf("%w: request line or host", ErrInvalidField)
	}
	x.method = method
	o := &x.out
	o.writeString(method)
	o.writeString(" ")
	o.writeString(target)
	o.writeString(" HTTP/1.1\r\nHost: ")
	o.writeString(host)
	o.writeString("\r\n")
	return nil
}

// Field adds one field to the head. Fields that are hop-by-hop or the
// engine's own framing (Host, Content-Length, Transfer-Encoding,
// Connection, Keep-Alive, Proxy-Connection, TE but "trailers", Upgrade,
// Proxy-Authorization, Expect) are dropped; a name or value not valid on
// the wire fails the request rather than risk a split head.
func (x *Exchange) Field(name, value string) error {
	if name == "" || !validString(name, &tchar) || !validString(value, &valueByte) {
		return fmt.Errorf("%w: %q", ErrInvalidField, name)
	}
	switch fieldKind([]byte(name)) {
	case kOther, kDate:
	case kTE:
		if value != "trailers" {
			return nil
		}
	default:
		return nil
	}
	o := &x.out
	o.writeString(name)
	o.writeString(": ")
	o.writeString(value)
	o.writeString("\r\n")
	return nil
}

// Upgrade asks the upstream to switch to proto (Connection: Upgrade,
// Upgrade: proto; call before EndHead). A 101 answer then makes the
// exchange a tunnel (Switched): WriteBody writes bytes unframed, EndBody
// half-closes the connection, and Next reads until the upstream closes.
// Added for WebSocket over HTTP/2 (RFC 8441) to an HTTP/1.1 app.
func (x *Exchange) Upgrade(proto string) error {
	if proto == "" || !validString(proto, &valueByte) {
		return fmt.Errorf("%w: upgrade %q", ErrInvalidField, proto)
	}
	x.upgrade = true
	o := &x.out
	o.writeString("Connection: Upgrade\r\nUpgrade: ")
	o.writeString(proto)
	o.writeString("\r\n")
	return nil
}

// Switched reports that the upstream took the upgrade (101).
func (x *Exchange) Switched() bool { return x.raw }

// EndHead ends the head with the body's framing: contentLength bytes
// (0 with body false sends none and no Content-Length unless the method
// usually has a body), or chunked when it is -1 (unknown). Without a body
// the request is complete and flushed.
func (x *Exchange) EndHead(contentLength int64, body bool) error {
	o := &x.out
	switch {
	case !body:
		if methodHasBody(x.method) {
			o.writeString("Content-Length: 0\r\n")
		}
	case contentLength >= 0:
		o.writeString("Content-Length: ")
		o.writeInt(contentLength)
		o.writeString("\r\n")
		x.reqLeft = contentLength
	default:
		o.writeString("Transfer-Encoding: chunked\r\n")
		x.chunked = true
	}
	o.writeString("\r\n")
	if !body || contentLength == 0 {
		x.reqDone = true
	}
	return x.fail(o.flush())
}

func methodHasBody(m string) bool { return m == "POST" || m == "PUT" || m == "PATCH" }

// WriteBody sends p of the request body, at once.
func (x *Exchange) WriteBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	o := &x.out
	if x.raw {
		o.write(p)
	} else if x.chunked {
		o.writeHex(int64(len(p)))
		o.writeString("\r\n")
		o.write(p)
		o.writeString("\r\n")
	} else {
		if int64(len(p)) > x.reqLeft {
			x.failed.Store(true)
			return errors.New("h1: request body longer than its content-length")
		}
		o.write(p)
		x.reqLeft -= int64(len(p))
	}
	return x.fail(o.flush())
}

// EndBody ends the request body; trailers go on a chunked body only
// (HTTP/1.1 has nowhere else for them). A body of known length must have
// been sent whole.
func (x *Exchange) EndBody(trailers []Field) error {
	o := &x.out
	if x.raw {
		if err := x.fail(o.flush()); err != nil {
			return err
		}
		closeWrite(x.uc.nc) // tunnel.go
		return nil
	}
	if x.chunked {
		o.writeString("0\r\n")
		for _, f := range trailers {
			if len(f.Name) > 0 && allIn(f.Name, &tchar) && allIn(f.Value, &valueByte) && fieldKind(f.Name) == kOther {
				o.write(f.Name)
				o.writeString(": ")
				o.write(f.Value)
				o.writeString("\r\n")
			}
		}
		o.writeString("\r\n")
	} else if x.reqLeft != 0 {
		x.failed.Store(true)
		return errors.New("h1: request body shorter than its content-length")
	}
	if err := x.fail(o.flush()); err != nil {
		return err
	}
	x.reqDone = true
	return nil
}

func (x *Exchange) fail(err error) error {
	if err != nil {
		x.failed.Store(true)
	}
	return err
}

// ReadHead reads the response's final head, skipping interim ones (100
// Continue, 103 Early Hints), waiting at most timeout (0: no bound) for
// it. A timeout is os.ErrDeadlineExceeded; a malformed head is
// ErrResponseFraming.
func (x *Exchange) ReadHead(timeout time.Duration) error {
	uc := x.uc
	if timeout > 0 {
		uc.nc.SetReadDeadline(time.Now().Add(timeout))
		defer uc.nc.SetReadDeadline(time.Time{})
	}
	for i := 0; ; i++ {
		if err := readResponseHead(&x.uc.in, &x.cl.lim, &x.resp); err != nil {
			x.failed.Store(true)
			if pe, ok := err.(*protoError); ok {
				return fmt.Errorf("%w: %w", ErrResponseFraming, pe)
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		st := x.resp.status
		if st == 101 && x.upgrade {
			x.raw, x.mode = true, modeEOF // what follows is the other protocol
			return nil
		}
		if st == 101 {
			x.failed.Store(true)
			return fmt.Errorf("%w: %w", ErrResponseFraming, errUnexpected101)
		}
		if st >= 200 {
			break
		}
		if i == maxInterim {
			x.failed.Store(true)
			return fmt.Errorf("%w: %w", ErrResponseFraming, errInterims)
		}
	}
	r := &x.resp
	switch {
	case bodyless([]byte(x.method), r.status):
		x.mode, x.eof = modeNone, true
	case r.chunked:
		x.mode = modeChunked
	case r.contentLength >= 0:
		x.mode, x.left = modeCL, r.contentLength
		x.eof = x.left == 0
	default:
		x.mode = modeEOF
	}
	return nil
}

// Status is the final response's status code.
func (x *Exchange) Status() int { return x.resp.status }

// ContentLength is the response body's declared length, -1 when not
// known (chunked or close-delimited).
func (x *Exchange) ContentLength() int64 {
	if x.resp.chunked {
		return -1
	}
	return x.resp.contentLength
}

// Ended reports that the response body has been read whole (right after
// ReadHead: that there is none — a HEAD request, 204, 304, an empty
// Content-Length body).
func (x *Exchange) Ended() bool { return x.eof }

// AppendFields appends the response head's end-to-end fields (hop-by-hop
// and framing ones left out) to dst. They alias the connection's buffer:
// valid until the first Next.
func (x *Exchange) AppendFields(dst []Field) []Field {
	r := &x.resp
	for i := range r.fields {
		if !r.hop[i] {
			dst = append(dst, r.fields[i])
		}
	}
	return dst
}

// SetIdle bounds the wait for each piece of the response body (0: none).
func (x *Exchange) SetIdle(d time.Duration) { x.idle = d }

// Next returns the next piece of the response body, valid until the next
// call, and io.EOF after the last (then Trailers holds a chunked body's
// trailer fields). Errors: the read's, io.ErrUnexpectedEOF for a body cut
// short, ErrResponseFraming.
func (x *Exchange) Next() ([]byte, error) {
	if x.eof {
		return nil, io.EOF
	}
	b, err := x.next()
	if err != nil && err != io.EOF {
		x.failed.Store(true)
		if pe, ok := err.(*protoError); ok {
			err = fmt.Errorf("%w: %w", ErrResponseFraming, pe)
		}
	}
	return b, err
}

func (x *Exchange) next() ([]byte, error) {
	in := &x.uc.in
	switch x.mode {
	case modeCL:
		b, err := x.take()
		x.eof = err == nil && x.left == 0
		return b, err
	case modeEOF:
		if in.r == in.w {
			if err := x.fill(); err != nil {
				if err == io.EOF {
					x.eof = true
				}
				return nil, err
			}
		}
		b := in.buf[in.r:in.w]
		in.r = in.w
		return b, nil
	}
	// Chunked: a chunk's data as it comes, its CRLF, the next size line;
	// the trailer section after the last.
	for {
		if x.inChunk && x.left > 0 {
			return x.take()
		}
		if x.inChunk {
			for in.w-in.r < 2 {
				if err := x.fill(); err != nil {
					return nil, readErr(err)
				}
			}
			if in.buf[in.r] != '\r' || in.buf[in.r+1] != '\n' {
				return nil, errChunkCRLF
			}
			in.r += 2
			x.inChunk = false
		}
		line, err := x.line(min(maxChunkLine, len(in.buf)), errChunkLine)
		if err != nil {
			return nil, err
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return nil, err
		}
		if size == 0 {
			if err := x.readTrailers(); err != nil {
				return nil, err
			}
			x.eof = true
			return nil, io.EOF
		}
		x.inChunk, x.left = true, size
	}
}

// take returns what is buffered (or, if nothing is, read) of the next
// x.left bytes of the body.
func (x *Exchange) take() ([]byte, error) {
	in := &x.uc.in
	if in.r == in.w {
		if err := x.fill(); err != nil {
			return nil, readErr(err)
		}
	}
	k := int(min(int64(in.w-in.r), x.left))
	b := in.buf[in.r : in.r+k]
	in.r += k
	x.left -= int64(k)
	return b, nil
}

// fill reads more of the response, within the idle bound.
func (x *Exchange) fill() error {
	if x.idle > 0 {
		x.uc.nc.SetReadDeadline(time.Now().Add(x.idle))
	}
	return x.uc.in.fill()
}

func (x *Exchange) line(max int, errLong error) ([]byte, error) {
	if x.idle > 0 {
		x.uc.nc.SetReadDeadline(time.Now().Add(x.idle))
	}
	return readLine(&x.uc.in, &x.nul, max, errLong)
}

// readTrailers reads the trailer section, held to the head's limits,
// keeping the end-to-end fields (copied: the buffer moves on).
func (x *Exchange) readTrailers() error {
	lim := &x.cl.lim
	total, count := 0, 0
	x.tbuf, x.trailer = x.tbuf[:0], x.trailer[:0]
	type span struct{ n0, n1, v0, v1 int }
	var spans []span
	for {
		line, err := x.line(min(lim.MaxHeaderBytes-total, len(x.uc.in.buf)), errTrailer)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		total += len(line) + 2
		if count++; count > lim.MaxHeaders {
			return errTrailer
		}
		name, value, err := parseField(line)
		if err != nil {
			return err
		}
		if fieldKind(name) != kOther {
			continue
		}
		s := span{n0: len(x.tbuf)}
		x.tbuf = append(x.tbuf, name...)
		s.n1, s.v0 = len(x.tbuf), len(x.tbuf)
		x.tbuf = append(x.tbuf, value...)
		s.v1 = len(x.tbuf)
		spans = append(spans, s)
	}
	for _, s := range spans {
		x.trailer = append(x.trailer, Field{Name: x.tbuf[s.n0:s.n1], Value: x.tbuf[s.v0:s.v1]})
	}
	return nil
}

// Trailers are a chunked response's trailer fields (end-to-end ones),
// after Next returned io.EOF.
func (x *Exchange) Trailers() []Field { return x.trailer }

// Done ends the exchange, pooling the connection when both the request
// and the response went whole and the upstream keeps it open; otherwise
// it is closed.
func (x *Exchange) Done() {
	r := &x.resp
	uc := x.uc
	if uc == nil {
		return
	}
	reusable := !x.failed.Load() && x.reqDone && x.eof && x.mode != modeEOF && !r.connClose &&
		(r.minor == 1 || r.connKeepAlive) && uc.in.r == uc.in.w
	if x.idle > 0 {
		uc.nc.SetReadDeadline(time.Time{})
	}
	x.release()
	if reusable {
		x.cl.ups.put(uc)
	} else {
		uc.close()
	}
}

// Close ends the exchange and closes its connection (a read or write
// blocked on it in another goroutine returns).
func (x *Exchange) Close() {
	if x.uc == nil {
		return
	}
	uc := x.uc
	x.release()
	uc.close()
}

// Abort closes the connection under a read or write still in progress
// (another goroutine's), which then fails; Close or Done must follow.
func (x *Exchange) Abort() {
	x.failed.Store(true)
	x.uc.nc.Close()
}

func (x *Exchange) release() {
	x.uc = nil
	if x.blk != nil {
		blockPool.Put(x.blk)
		x.blk, x.out = nil, outbuf{}
	}
	x.resp.fields, x.resp.code, x.resp.host = x.resp.fields[:0], nil, nil
}

func validString(s string, class *[256]bool) bool {
	for i := 0; i < len(s); i++ {
		if !class[s[i]] {
			return false
		}
	}
	return true
}
