package h1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	stateActive int32 = iota
	stateIdle         // waiting for a request with nothing buffered
)

type action int

const (
	actNext action = iota
	actClose
	actHandedOff
	actPark // go on in a fresh goroutine (see parkAfter)
)

// parkAfter is how long a connection that has served a request waits idle
// on its goroutine before moving to a fresh one. A goroutine's stack grows
// during an exchange (idle sidecar goroutines averaged 5.6 KiB of stack)
// and Go shrinks it only at a GC, by half each time, which an idle sidecar
// hardly runs; a fresh goroutine starts at the runtime's initial size and
// waiting takes little of it. The move costs one goroutine start per
// connection idle that long and nothing on a busy one (the idle read's
// deadline is set anyway). With 2,000 idle connections it took the client
// sidecar's stacks in use from +11.0 to +4.0 MiB (2 KiB each, the
// minimum), its RSS from +24.5 to +20.4 MiB (go run ./bench/idleconns).
const parkAfter = time.Second

// errPark ends readHead for a move to a fresh goroutine.
var errPark = errors.New("h1: park")

// Where the request body stands.
const (
	bodyDone    = iota // none, or all of it read
	bodyUnread         // not a byte of it consumed
	bodyPartial        // some consumed: the connection cannot be reused
)

// Response body delimitation.
const (
	modeNone = iota
	modeCL
	modeChunked
	modeEOF
)

// maxDiscard bounds the request body the engine reads and drops to keep a
// connection open after answering locally, as net/http does.
const maxDiscard = 256 << 10

// maxInterim bounds 1xx responses before the final one.
const maxInterim = 32

var errConnect = &protoError{501, "CONNECT is not supported here"}

var connPool = sync.Pool{New: func() any { return new(conn) }}

// conn is one downstream connection's state, pooled whole (buffers,
// Request, Decision, field arrays) so a new connection allocates only what
// net.Listener.Accept does.
type conn struct {
	s     *Server
	nc    net.Conn
	downW io.Writer
	in    inbuf
	inBlk *block
	state atomic.Int32
	up    atomic.Pointer[upConn] // for Shutdown to wake a blocked exchange

	out     outbuf // one write buffer serves both directions: the exchange is synchronous
	outBlk  *block
	outDown bool // out points downstream

	req     Request
	m       reqMeta
	resp    respMeta
	d       Decision
	res     Result
	keep    []byte // Method and Host, kept for Finish
	scratch []byte // error answers
	date    [len(http.TimeFormat)]byte
	discOut outbuf
	disc    discard

	replay   []byte // the request body held whole (Decision.ReplayLimit)
	replayed bool
	idle     idleReader
	respView Response

	served     int
	rdArmed    bool // a read deadline readHead set may still be on nc
	body       int
	tun        uint8 // the request asks for a tunnel: tunUpgrade, tunConnect (upgrade.go)
	bodyRd     bodyReader
	closeAfter bool
	reqStart   int64

	// For waiting idle without a read buffer (awaitRequest); raw is nil
	// when nc has no fd.
	raw     syscall.RawConn
	rawDone bool // raw was looked up
	readFn  func(fd uintptr) bool
	readErr error
	// idleBytes takes the first bytes after a long idle wait without a
	// buffer on a connection with no fd (awaitShed).
	idleBytes [256]byte

	// The idle wait's end (IdleTimeout), kept across a move to a fresh
	// goroutine; parked says the wait was interrupted for such a move, and
	// spawnServed is served when the current goroutine started.
	idleUntil   time.Time
	parked      bool
	spawnServed int
	pk          parkState // park_linux.go
}

func newConn(s *Server, nc net.Conn) *conn {
	c := connPool.Get().(*conn)
	c.s, c.nc, c.downW = s, nc, nc
	c.in = inbuf{src: nc} // the buffer is taken when the first bytes come
	c.req.RemoteAddr = nc.RemoteAddr()
	c.d = Decision{}
	c.discOut = outbuf{dst: &c.disc}
	c.served = 0
	c.state.Store(stateActive)
	return c
}

// free returns c to the pool, dropping every reference into buffers that
// are not pooled with it.
func (c *conn) free() {
	if c.inBlk != nil {
		blockPool.Put(c.inBlk)
	}
	if c.outBlk != nil {
		blockPool.Put(c.outBlk)
	}
	c.s, c.nc, c.downW, c.inBlk, c.outBlk = nil, nil, nil, nil, nil
	c.in, c.out = inbuf{}, outbuf{}
	c.up.Store(nil)
	c.raw, c.rawDone, c.readErr = nil, false, nil
	c.idleUntil, c.parked, c.spawnServed = time.Time{}, false, 0
	c.pk = parkState{}
	c.req = Request{Fields: c.req.Fields[:0]}
	clear(c.req.Fields[:cap(c.req.Fields)])
	clear(c.resp.fields[:cap(c.resp.fields)])
	c.resp.code, c.resp.host, c.m.host = nil, nil, nil
	c.d = Decision{}
	c.res = Result{}
	connPool.Put(c)
}

func (c *conn) serveRequest() action {
	s := c.s
	start, n, err := c.readHead()
	if err == errPark {
		return actPark
	}
	if err != nil {
		if pe, ok := err.(*protoError); ok {
			c.logReject(pe)
			c.reject(pe)
		}
		return actClose
	}
	c.served++
	err = parseRequest(c.in.buf[start:start+n], s.lim.MaxHeaders, &c.req, &c.m)
	switch {
	case err == errPreface, err == nil && c.m.connect && !c.tunnels():
		if s.Fallback != nil {
			return c.handoff(start)
		}
		if err == nil {
			err = errConnect
		}
		c.logReject(err.(*protoError))
		c.reject(err.(*protoError))
		return actClose
	case err == errNotHTTP:
		c.logReject(errNotHTTP)
		return actClose
	case err != nil:
		c.logReject(err.(*protoError))
		c.reject(err.(*protoError))
		return actClose
	case c.m.upgrade && s.Fallback != nil && !c.tunnels():
		return c.handoff(start)
	case s.handoff != nil && s.Fallback != nil && s.handoff.HandOff(&c.req):
		return c.handoff(start)
	}
	c.in.r = start + n
	c.reqStart = c.in.consumed() - int64(n)
	if pe := c.prepareTunnel(); pe != nil {
		c.logReject(pe)
		c.reject(pe)
		return actClose
	}
	if c.rdArmed && (c.hadBody() || c.tun != tunNone) {
		// The head's deadline goes before a body is read. A request
		// without one reads nothing more from the client: its deadline
		// stays until the next head's replaces it, one SetReadDeadline
		// (a timer change, ~0.5 us on a TLS connection here) less per
		// request.
		c.nc.SetReadDeadline(time.Time{})
		c.rdArmed = false
	}
	if s.lim.BodyTimeout > 0 && c.hadBody() {
		return c.exchangeTimedBody()
	}
	return c.exchange()
}

// logReject logs a rejected request at debug level; the Router never sees
// these requests, so this is where they show.
func (c *conn) logReject(pe *protoError) {
	if c.s.log.Enabled(context.Background(), slog.LevelDebug) {
		c.s.log.Debug("rejected request", "remote", c.nc.RemoteAddr(), "status", pe.status, "reason", pe.msg)
	}
}

// readHead waits for a complete request head in c.in and returns where it
// starts and its length. Waiting with nothing buffered is idle time
// (IdleTimeout; ReadHeaderTimeout for a connection's first request);
// from the first byte of a head, ReadHeaderTimeout applies. The deadline is
// left for serveRequest to clear once the head is in (c.rdArmed): a body
// may take as long as it takes.
func (c *conn) readHead() (start, n int, err error) {
	in, lim := &c.in, &c.s.lim
	deadline := false
	headerDeadline := false
	if in.r == in.w {
		in.r, in.w = 0, 0
		raw := c.dropIdleBuffer()
		c.state.Store(stateIdle)
		if c.s.inShutdown.Load() {
			c.state.Store(stateActive)
			return 0, 0, ErrServerClosed
		}
		wait := lim.IdleTimeout
		if c.served == 0 {
			wait, headerDeadline = lim.ReadHeaderTimeout, true
		}
		now := time.Now()
		if !c.parked {
			c.idleUntil = now.Add(wait)
		}
		c.parked = false
		until := c.idleUntil
		// Parked without a goroutine (epollPark), a connection may park
		// again at once; moved to a fresh one, only after a request.
		park := raw && (epollPark || c.served > c.spawnServed) && until.Sub(now) > 2*parkAfter
		// Without an fd the wait holds the read buffer, but only for
		// parkAfter: then it goes on without it (awaitShed).
		shed := !raw && c.served > 0 && until.Sub(now) > 2*parkAfter
		if park || shed {
			until = now.Add(parkAfter)
		}
		c.nc.SetReadDeadline(until)
		deadline = true
		err := c.awaitRequest(raw)
		if shed && errors.Is(err, os.ErrDeadlineExceeded) && !c.s.inShutdown.Load() && time.Now().Before(c.idleUntil) {
			err = c.awaitShed()
		}
		c.state.Store(stateActive)
		if err != nil {
			if park && errors.Is(err, os.ErrDeadlineExceeded) && !c.s.inShutdown.Load() && time.Now().Before(c.idleUntil) {
				c.parked = true
				return 0, 0, errPark
			}
			return 0, 0, err
		}
	}
	var hs headScan
	skipped := 0
	for {
		// RFC 9112 §2.2: ignore empty lines before a request line (some
		// clients send a CRLF after a POST body).
		if hs.off == 0 {
			for in.w-in.r >= 2 && in.buf[in.r] == '\r' && in.buf[in.r+1] == '\n' {
				in.r += 2
				skipped += 2
			}
		}
		if skipped > lim.MaxHeaderBytes {
			return 0, 0, errHeadTooLarge
		}
		if b := in.buf[in.r:in.w]; len(b) > 0 && !(hs.off == 0 && len(b) == 1 && b[0] == '\r') {
			n, err := hs.scan(b, lim.MaxHeaderBytes-skipped, lim.MaxHeaders)
			if err != nil {
				return 0, 0, err
			}
			if n > 0 {
				if deadline {
					c.rdArmed = true
				}
				return in.r, n, nil
			}
		}
		if !headerDeadline {
			c.nc.SetReadDeadline(time.Now().Add(lim.ReadHeaderTimeout))
			headerDeadline, deadline = true, true
		}
		if !grow(in, lim.MaxHeaderBytes) {
			return 0, 0, errHeadTooLarge
		}
		if err := in.fill(); err != nil {
			return 0, 0, err
		}
	}
}

// awaitRequest waits for the first bytes of the next request with nothing
// buffered. On a connection with an fd it holds no read buffer while it
// waits: the block goes back to the pool and the wait happens in
// RawConn.Read, whose callback takes a block from the pool only for the
// read syscall itself and gives it back when that finds nothing (EAGAIN).
// That is the same syscalls as a plain Read (one try, the netpoller wait,
// the read) and no allocation, and an idle kept-alive connection costs its
// conn struct, socket and goroutine instead of those plus 16 KiB: with
// 2,000 idle client connections the client sidecar's Go heap in use grew by
// 38.8 MiB before this, by 8.2 MiB after, its RSS by 36.9 and 24.5 MiB
// (go run ./bench/idleconns). Without an fd
// (a TLS connection, a test's net.Pipe) the block is kept and read into.
func (c *conn) awaitRequest(raw bool) error {
	if !raw {
		return c.in.fill()
	}
	c.readErr = nil
	if err := c.raw.Read(c.readFn); err != nil {
		return err
	}
	return c.readErr
}

// awaitShed goes on waiting for a request on a connection without an fd
// (TLS, the sidecar's wrapped inbound connections: they cannot park) that
// has been idle for parkAfter, without its read buffer: the 16 KiB block
// goes back to the pool and the wait is a Read into idleBytes, the first
// bytes are copied into a block taken when they come, and the rest of the
// head follows through fill (from tls.Conn's own record buffer, no
// syscall; a plain wrapped socket pays one read more per idle period). A
// busy connection never gets here. An idle mTLS connection holds its
// goroutine, TLS state and idleBytes instead of those plus 16 KiB.
func (c *conn) awaitShed() error {
	// Under s.mu: readers of s.conns see the buffer's change ordered.
	c.s.mu.Lock()
	c.dropBuffer()
	c.s.mu.Unlock()
	c.nc.SetReadDeadline(c.idleUntil)
	for tries := 0; ; tries++ {
		n, err := c.nc.Read(c.idleBytes[:])
		if n > 0 {
			c.takeBuffer()
			c.in.w = copy(c.in.buf, c.idleBytes[:n])
			c.in.n += int64(n)
			return nil
		}
		if err != nil {
			return err
		}
		if tries == 100 {
			return io.ErrNoProgress
		}
	}
}

// dropIdleBuffer gives the read buffer back for an idle wait, when
// awaitRequest can wait without it, and reports whether it did; otherwise
// the connection keeps (or takes) one.
func (c *conn) dropIdleBuffer() bool {
	if !c.rawDone {
		c.rawDone = true
		if sc, ok := c.nc.(syscall.Conn); ok && rawIdle {
			if raw, err := sc.SyscallConn(); err == nil {
				c.raw = raw
			}
		}
		if c.readFn == nil {
			c.readFn = c.idleRead // once per pooled conn: a method value allocates
		}
	}
	if c.raw == nil {
		c.takeBuffer()
		return false
	}
	c.dropBuffer()
	return true
}

// dropBuffer returns the read buffer (and a grown one, to the collector)
// with nothing in it, first clearing what still points into it or into an
// upstream connection's buffer, so a block the pool lets go is not kept
// alive by a stale slice.
func (c *conn) dropBuffer() {
	if c.inBlk != nil {
		blockPool.Put(c.inBlk)
		c.inBlk = nil
	}
	c.in.buf, c.in.r, c.in.w = nil, 0, 0
	c.m.host, c.resp.host, c.resp.code = nil, nil, nil
	clear(c.resp.fields)
	c.resp.fields = c.resp.fields[:0]
}

// takeBuffer gives the connection a read buffer if it has none.
func (c *conn) takeBuffer() {
	if c.in.buf == nil {
		if c.inBlk == nil {
			c.inBlk = blockPool.Get().(*block)
		}
		c.in.buf = c.inBlk[:]
	}
}

// grow makes room in a full buffer whose bytes start at 0, up to what a
// head of limit bytes needs. Heads beyond the pooled buffer's size are
// rare, so the larger buffer is simply allocated.
func grow(in *inbuf, limit int) bool {
	if in.w < len(in.buf) || in.r > 0 {
		return true
	}
	size := min(2*len(in.buf), max(limit+1, len(in.buf)))
	if size <= len(in.buf) {
		return false
	}
	b := make([]byte, size)
	in.w = copy(b, in.buf[in.r:in.w])
	in.r = 0
	in.buf = b
	return true
}

// handoff passes the connection, from the request at start on, to the
// Fallback.
func (c *conn) handoff(start int) action {
	c.nc.SetDeadline(time.Time{})
	c.rdArmed = false
	rc := &replayConn{Conn: c.nc, buf: bytes.Clone(c.in.buf[start:c.in.w])}
	c.in.r, c.in.w = 0, 0
	c.s.untrack(c)
	c.s.Fallback(rc)
	return actHandedOff
}

// keepMethodHost copies Method and Host out of the read buffer, which the
// body will overwrite, so they stay valid in Finish.
func (c *conn) keepMethodHost() {
	r := &c.req
	nm := len(r.Method)
	c.keep = append(append(c.keep[:0], r.Method...), r.Host...)
	r.Method, r.Host = c.keep[:nm:nm], c.keep[nm:]
}

func (c *conn) exchange() action {
	s, req, d, res := c.s, &c.req, &c.d, &c.res
	*res = Result{Start: time.Now()}
	req.Start = res.Start
	c.closeAfter = !req.KeepAlive || s.draining.Load() || s.inShutdown.Load()
	c.body = bodyDone
	if req.Chunked || req.ContentLength > 0 {
		c.body = bodyUnread
	}
	d.Addr, d.Set, d.Status, d.Header, d.Body, d.HeaderTimeout = "", nil, 0, nil, nil, 0
	d.ReplayLimit, d.IdleTimeout, d.RespSet, d.Direct, d.Transport = 0, 0, nil, false, nil
	c.replayed, req.Held = false, nil
	s.Router.Route(req, d)
	c.keepMethodHost()

	c.outBlk = blockPool.Get().(*block)
	c.out = outbuf{buf: c.outBlk[:0], dst: c.downW}
	c.outDown = true
	if d.Addr == "" {
		c.drainBody()
		res.Status = c.writeAnswer(d.Status, d.Header, d.Body)
		res.HeadWritten = true
		if err := c.out.flush(); err != nil {
			res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
			c.closeAfter = true
		}
		c.finish()
	} else {
		c.forward()
		pending := res.Err != nil && !res.HeadWritten && !errors.Is(res.Err, ErrDownstream)
		if pending {
			d.Status, d.Header, d.Body = 0, nil, nil
			res.Status = defaultStatus(res.Err)
		}
		c.finish()
		if pending {
			c.drainBody()
			c.direct(c.downW, true)
			if d.Status != 0 {
				c.writeAnswer(d.Status, d.Header, d.Body)
			} else {
				// The engine's own answer, from the error: a Router's
				// Finish may have overwritten res.Status (with 0) without
				// giving an answer.
				st := defaultStatus(res.Err)
				c.writeError(st, errorCode(st), res.Err.Error())
			}
			if c.out.flush() != nil {
				c.closeAfter = true
			}
		}
	}
	blockPool.Put(c.outBlk)
	c.outBlk, c.out = nil, outbuf{}
	if c.closeAfter {
		return actClose
	}
	return actNext
}

// finish completes the Result and calls the Router's Finish, leaving in
// req only what stays valid there.
func (c *conn) finish() {
	res, req := &c.res, &c.req
	if c.outDown {
		res.RespBytes += c.out.n
		c.out.n = 0
	}
	res.ReqBytes = c.in.consumed() - c.reqStart
	if c.outDown && !c.out.last.IsZero() {
		// The start of the last write downstream: a server's End then never
		// falls after its caller's, however the scheduler delays this
		// goroutine once the bytes are on their way.
		res.End = c.out.last
	} else {
		res.End = time.Now()
	}
	clear(req.Fields) // they point into the read buffer, which may go idle
	req.Target, req.path, req.Fields = nil, nil, req.Fields[:0]
	c.s.Router.Finish(req, &c.d, res)
}

// direct flushes the write buffer and points it at dst. It returns the
// flush error, which belongs to the previous destination.
func (c *conn) direct(dst io.Writer, down bool) error {
	err := c.out.flush()
	if c.outDown {
		c.res.RespBytes += c.out.n
	}
	c.out.n, c.out.err = 0, nil
	c.out.dst, c.outDown = dst, down
	return err
}

// drainBody reads and drops a request body that was not forwarded, so the
// connection can carry the next request; when that is not possible or too
// much, the connection is closed after the answer instead.
func (c *conn) drainBody() {
	switch c.body {
	case bodyDone:
		return
	case bodyPartial:
		c.closeAfter = true
		return
	}
	if c.m.expect100 && c.in.r == c.in.w {
		// The client holds the body back until it sees 100 Continue.
		c.closeAfter = true
		return
	}
	c.disc.left = maxDiscard
	var rerr, werr error
	if c.req.Chunked {
		rerr, werr = copyChunked(&c.in, &c.discOut, true, c.chunkLimits())
	} else {
		rerr, werr = copyN(&c.in, &c.discOut, c.req.ContentLength)
	}
	c.discOut.err = nil
	if rerr != nil || werr != nil {
		c.body = bodyPartial
		c.closeAfter = true
		return
	}
	c.body = bodyDone
}

func (c *conn) chunkLimits() chunkLimits {
	return chunkLimits{maxTrailerBytes: c.s.lim.MaxHeaderBytes, maxTrailers: c.s.lim.MaxHeaders}
}

// forward sends the request upstream and relays the response, trying
// other addresses (Router.Next) when a dial fails and a fresh connection
// when a reused one turns out dead before answering.
func (c *conn) forward() {
	s, req, d, res := c.s, &c.req, &c.d, &c.res
	if c.tun == tunConnect && d.Direct {
		c.connectDirect()
		return
	}
	if d.Transport != nil {
		c.roundTripHTTP() // roundtrip.go
		return
	}
	setHost, err := checkFields(d.Set, true)
	if err == nil {
		_, err = checkFields(d.RespSet, false)
	}
	if err != nil {
		res.Err = err
		return
	}
	if d.ReplayLimit > 0 && c.body == bodyUnread && !req.Chunked && req.ContentLength <= int64(d.ReplayLimit) &&
		!(c.m.expect100 && c.in.r == c.in.w) {
		if err := c.holdBody(); err != nil {
			res.Err = err
			return
		}
	}
	retried := false
	for {
		res.Attempts++
		// A request roundTrip may send again on a fresh connection when a
		// reused one turns out dead (bodyless or held, idempotent) skips the
		// pool's liveness read: one read syscall per hop and request less
		// (the weft pair made 31 syscalls per request at 1000 req/s,
		// HAProxy's 19). Its retry checks, so that a pool of dead
		// connections (a restarted app) costs one try, not one per
		// connection.
		check := retried || !c.canReplay() || !idempotent(req)
		now := time.Now()
		up, pooled, err := s.ups.getAt(d.Addr, check, now)
		if err != nil {
			if !s.Router.Next(req, d, err) {
				res.Err = err
				return
			}
			if setHost, err = checkFields(d.Set, true); err != nil {
				res.Err = err
				return
			}
			continue
		}
		c.up.Store(up)
		if res.UpstreamStart.IsZero() {
			// The first try's: the wait on every try (and between
			// them) is the upstream's, not the sidecar's overhead.
			// Popped from the pool at once, the clock read before get is
			// that time still.
			if !pooled {
				now = time.Now()
			}
			res.UpstreamStart = now
		}
		retry := c.roundTrip(up, setHost, retried)
		c.up.Store(nil)
		if !retry {
			return
		}
		retried = true
		if setHost, err = checkFields(d.Set, true); err != nil {
			res.Err = err
			return
		}
	}
}

// holdBody reads the whole request body (of known length) into c.replay,
// so that it can be sent on more than one try.
func (c *conn) holdBody() error {
	n := int(c.req.ContentLength)
	k := min(c.in.w-c.in.r, n)
	c.replay = append(c.replay[:0], c.in.buf[c.in.r:c.in.r+k]...)
	c.in.r += k
	if rest := n - k; rest > 0 {
		// The rest straight from the connection, exactly: c.in.fill would
		// reuse the buffer that the request's head, still to be written
		// upstream, lives in.
		c.replay = slices.Grow(c.replay, rest)[:n]
		m, err := io.ReadFull(c.in.src, c.replay[k:])
		c.in.n += int64(m)
		if err != nil {
			c.replay = c.replay[:k+m]
			c.body = bodyPartial
			c.closeAfter = true
			if pe, ok := err.(*protoError); ok {
				return fmt.Errorf("%w: %w", ErrBadRequest, pe) // a body too slow (bodyReader)
			}
			return fmt.Errorf("%w: reading request body: %w", ErrDownstream, readErr(err))
		}
	}
	c.body = bodyDone
	c.replayed = true
	c.req.Held = c.replay
	return nil
}

// canReplay reports whether the request can be sent again.
func (c *conn) canReplay() bool {
	return c.body == bodyDone && (!c.hadBody() || c.replayed)
}

// retrier is the Router's Retrier, if it is one.
func (c *conn) retrier() Retrier {
	r, _ := c.s.Router.(Retrier)
	return r
}

// idleReader sets a read deadline before every read of a response body
// (Decision.IdleTimeout).
type idleReader struct {
	nc net.Conn
	d  time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	r.nc.SetReadDeadline(time.Now().Add(r.d))
	return r.nc.Read(p)
}

// discardResponse drops a response a Retrier did not want, keeping the
// upstream connection when its body is small enough to read past.
func (c *conn) discardResponse(up *upConn, mode int) {
	resp := &c.resp
	reusable := !resp.connClose && (resp.minor == 1 || resp.connKeepAlive)
	c.disc.left = maxDiscard
	var rerr, werr error
	switch mode {
	case modeCL:
		rerr, werr = copyN(&up.in, &c.discOut, resp.contentLength)
	case modeChunked:
		rerr, werr = copyChunked(&up.in, &c.discOut, true, c.chunkLimits())
	case modeEOF:
		reusable = false
	}
	c.discOut.buf, c.discOut.err = c.discOut.buf[:0], nil
	if reusable && rerr == nil && werr == nil && up.in.r == up.in.w {
		c.up.Store(nil)
		c.s.ups.put(up)
		return
	}
	c.dropUpstream(up)
}

// dropUpstream closes an upstream connection whose state is unknown.
func (c *conn) dropUpstream(up *upConn) {
	c.up.Store(nil)
	up.close()
}

// roundTrip runs the exchange over up. It reports true (having closed up)
// when the request should be sent again on a fresh connection: up was a
// reused connection that failed before a single response byte, and the
// request can be replayed (no body; an idempotent method, by net/http's
// rule). The liveness check in get catches most dead connections first;
// this covers a peer closing in the instant between check and send.
func (c *conn) roundTrip(up *upConn, setHost, retried bool) (retry bool) {
	req, d, res, m := &c.req, &c.d, &c.res, &c.m
	o := &c.out
	closeBefore := c.closeAfter
	c.direct(up.nc, false)
	c.writeRequestHead(setHost)

	earlyFinal := false     // a final response came before the body was sent
	headerDeadline := false // d.HeaderTimeout's deadline is set
	headArmed := false      // and still on up after the head was read
	if d.HeaderTimeout == 0 && up.rdArmed {
		// An earlier exchange's header deadline, left on the connection.
		up.nc.SetReadDeadline(time.Time{})
		up.rdArmed = false
	}
	var werr error
	if c.body == bodyUnread {
		if m.expect100 && c.in.r == c.in.w {
			if werr = o.flush(); werr == nil {
				var ok bool
				if earlyFinal, ok = c.awaitContinue(up); !ok {
					c.dropUpstream(up)
					return false
				}
				c.direct(up.nc, false)
			}
		}
		if werr == nil && !earlyFinal {
			c.body = bodyPartial
			var rerr error
			if req.Chunked {
				rerr, werr = copyChunked(&c.in, o, false, c.chunkLimits())
			} else {
				rerr, werr = copyN(&c.in, o, req.ContentLength)
			}
			if rerr != nil {
				// The upstream holds half a request: it goes. The client
				// gets a 400 for a malformed body, or nothing if it left.
				if pe, ok := rerr.(*protoError); ok {
					res.Err = fmt.Errorf("%w: %w", ErrBadRequest, pe)
				} else {
					res.Err = fmt.Errorf("%w: reading request body: %w", ErrDownstream, rerr)
				}
				c.closeAfter = true
				c.dropUpstream(up)
				return false
			}
			if werr == nil {
				c.body = bodyDone
			}
		}
	}
	if c.replayed && werr == nil {
		o.write(c.replay)
		werr = o.err
	}
	switch {
	case werr != nil:
	case o.n == 0 && !earlyFinal && up.in.n == 0:
		// The whole request in one write, nothing read from up yet: it is
		// written so that the reply is waited for before it is read (one
		// read syscall less per hop, await.go). A request whose body went
		// out in pieces, or that saw an interim response, reads first: an
		// early answer may have come meanwhile. The wait is the header
		// timeout's already.
		if d.HeaderTimeout > 0 {
			up.nc.SetReadDeadline(time.Now().Add(d.HeaderTimeout))
			headerDeadline = true
		}
		werr = o.flushAwait(up)
	default:
		werr = o.flush()
	}
	if werr != nil {
		// Read on anyway: an upstream that answers early (413, 401) and
		// closes makes the write fail while its answer waits to be read.
		c.closeAfter = true
	}

	if !earlyFinal {
		c.direct(c.downW, true)
		if d.HeaderTimeout > 0 && !headerDeadline {
			up.nc.SetReadDeadline(time.Now().Add(d.HeaderTimeout))
		}
		down, err := c.readFinalHead(up)
		headArmed = d.HeaderTimeout > 0 && err == nil
		if err != nil {
			if down {
				res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
				c.closeAfter = true
			} else if !retried && up.reused && up.in.n == 0 && (!c.hadBody() || c.replayed) && idempotent(req) &&
				!errors.Is(err, os.ErrDeadlineExceeded) {
				// A dead reused connection, found by the request (the
				// write may have failed too: a peer that reset it).
				c.closeAfter = closeBefore
				c.dropUpstream(up)
				return true
			} else {
				res.Err = upstreamError(err, werr)
				if rt := c.retrier(); rt != nil && rt.Answered(req, d, nil, res.Err) && c.canReplay() {
					res.Err = nil
					c.dropUpstream(up)
					return true
				}
			}
			c.dropUpstream(up)
			return false
		}
	} else {
		c.direct(c.downW, true)
		c.closeAfter = true // the client may still send the body
	}
	res.UpstreamHeaders = time.Now()
	resp := &c.resp
	res.Status = resp.status
	res.GRPCStatus = grpcStatusOf(resp.fields)

	mode := modeNone
	switch {
	case bodyless(req.Method, resp.status):
	case resp.chunked:
		mode = modeChunked
	case resp.contentLength >= 0:
		mode = modeCL
	default:
		mode = modeEOF
	}
	if headArmed {
		if c.tun == tunNone && (mode == modeNone || mode == modeCL && int64(up.in.w-up.in.r) >= resp.contentLength) {
			// Nothing more is read from up for this response: the header
			// deadline stays (up.rdArmed) until the next exchange sets its
			// own or clears it, one SetReadDeadline less per request.
			up.rdArmed = true
		} else {
			up.nc.SetReadDeadline(time.Time{}) // a body takes as long as it takes
			up.rdArmed = false
		}
	}
	if rt := c.retrier(); rt != nil {
		c.respView = Response{Status: resp.status, Fields: resp.fields, At: res.UpstreamHeaders}
		again := rt.Answered(req, d, &c.respView, nil)
		c.respView.Fields = nil
		if again && werr == nil && !earlyFinal && c.canReplay() {
			res.GRPCStatus = ""
			c.discardResponse(up, mode)
			return true
		}
	}
	if c.tun != tunNone && c.switched() {
		c.switchProtocols(up)
		return false
	}
	reusable := werr == nil && !earlyFinal && c.body == bodyDone && mode != modeEOF &&
		!resp.connClose && (resp.minor == 1 || resp.connKeepAlive)
	sentBefore := c.out.n // interim responses
	c.writeResponseHead(mode)
	res.HeadWritten = true
	var rerr error
	werr = nil
	if d.IdleTimeout > 0 && mode != modeNone {
		c.idle = idleReader{nc: up.nc, d: d.IdleTimeout}
		up.in.src = &c.idle
	}
	switch mode {
	case modeChunked:
		lim := c.chunkLimits()
		lim.grpcStatus = &res.GRPCStatus
		rerr, werr = copyChunked(&up.in, o, req.ProtoMinor == 0, lim)
	case modeCL:
		rerr, werr = copyN(&up.in, o, resp.contentLength)
	case modeEOF:
		rerr, werr = copyUntilEOF(&up.in, o, req.ProtoMinor == 1)
	}
	if up.in.src == &c.idle {
		up.in.src = up.nc
		up.nc.SetReadDeadline(time.Time{})
		c.idle = idleReader{}
	}
	switch {
	case rerr != nil && c.out.n == sentBefore:
		// Not a byte of the response has left the buffer (a small
		// response that turned out malformed or cut short): drop it, and
		// the client gets an error answer instead of a truncated body.
		c.out.buf = c.out.buf[:0]
		res.HeadWritten = false
		res.Err = upstreamError(rerr, nil)
		c.dropUpstream(up)
	case rerr != nil:
		res.Err = upstreamError(rerr, nil)
		c.closeAfter = true // the downstream cannot be told otherwise
		c.dropUpstream(up)
	case werr != nil:
		res.Err = fmt.Errorf("%w: %w", ErrDownstream, werr)
		c.closeAfter = true
		c.dropUpstream(up)
	default:
		// The response is read whole: the upstream connection is free
		// before the last bytes go downstream, so another exchange can
		// have it while they do.
		if reusable && up.in.r == up.in.w {
			c.up.Store(nil)
			c.s.ups.put(up)
		} else {
			c.dropUpstream(up)
		}
		if err := o.flush(); err != nil {
			res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
			c.closeAfter = true
		}
	}
	return false
}

func (c *conn) hadBody() bool { return c.req.Chunked || c.req.ContentLength > 0 }

// idempotent is net/http's rule for replaying a request on a new
// connection.
func idempotent(r *Request) bool {
	switch string(r.Method) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return r.Get("Idempotency-Key") != nil || r.Get("X-Idempotency-Key") != nil
}

// upstreamError wraps a failure reading from the upstream; werr, when set,
// is the failed request write that caused it.
func upstreamError(err, werr error) error {
	if pe, ok := err.(*protoError); ok {
		return fmt.Errorf("%w: %w", ErrMalformedResponse, pe)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrUpstreamTimeout, err)
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if werr != nil {
		return fmt.Errorf("%w: writing request: %w", ErrUpstreamClosed, werr)
	}
	return fmt.Errorf("%w: %w", ErrUpstreamClosed, err)
}

// awaitContinue waits, up to ExpectContinueTimeout, for the upstream's
// answer to "Expect: 100-continue", relaying interim responses. It reports
// whether a final response came instead (then the body is not sent), and
// false in ok after a failure recorded in c.res.
func (c *conn) awaitContinue(up *upConn) (final, ok bool) {
	res := &c.res
	up.nc.SetReadDeadline(time.Now().Add(c.s.lim.ExpectContinueTimeout))
	defer up.nc.SetReadDeadline(time.Time{})
	for i := 0; ; i++ {
		err := c.readResponseHead(up)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false, true
		}
		if err == nil && c.resp.status == 101 {
			err = errUnexpected101
		}
		if err == nil && c.resp.status < 200 && i == maxInterim {
			err = errInterims
		}
		if err != nil {
			res.Err = upstreamError(err, nil)
			return false, false
		}
		if c.resp.status >= 200 {
			return true, true
		}
		if err := c.relayInterim(); err != nil {
			res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
			c.closeAfter = true
			return false, false
		}
		if c.resp.status == 100 {
			return false, true
		}
	}
}

var (
	errUnexpected101 = &protoError{502, "101 Switching Protocols to a request without Upgrade"}
	errInterims      = &protoError{502, "too many interim responses"}
)

// readFinalHead reads response heads until a final one, relaying interim
// ones (100 Continue, 103 Early Hints) in order to an HTTP/1.1 client; down
// reports that the error was writing downstream.
func (c *conn) readFinalHead(up *upConn) (down bool, err error) {
	for i := 0; ; i++ {
		if err := c.readResponseHead(up); err != nil {
			return false, err
		}
		st := c.resp.status
		if st >= 200 {
			return false, nil
		}
		if st == 101 {
			if c.tun == tunUpgrade {
				return false, nil // the upgrade taken (upgrade.go)
			}
			return false, errUnexpected101
		}
		if i == maxInterim {
			return false, errInterims
		}
		if err := c.relayInterim(); err != nil {
			return true, err
		}
	}
}

// relayInterim sends an interim response on at once (an HTTP/1.0 client
// gets none).
func (c *conn) relayInterim() error {
	if c.req.ProtoMinor == 0 {
		return nil
	}
	prev, prevDown := c.out.dst, c.outDown
	if err := c.direct(c.downW, true); err != nil {
		return err
	}
	o := &c.out
	o.writeString("HTTP/1.1 ")
	o.write(c.resp.code)
	o.writeString("\r\n")
	writeFields(o, c.resp.fields, c.resp.hop, nil)
	o.writeString("\r\n")
	err := o.flush()
	c.direct(prev, prevDown)
	return err
}

// readResponseHead reads and parses the next response head from up.
func (c *conn) readResponseHead(up *upConn) error {
	return readResponseHead(&up.in, &c.s.lim, &c.resp)
}

// readResponseHead reads and parses the next response head from in into
// resp (also Client's).
func readResponseHead(in *inbuf, lim *Limits, resp *respMeta) error {
	var hs headScan
	for {
		if in.r < in.w {
			n, err := hs.scan(in.buf[in.r:in.w], lim.MaxHeaderBytes, lim.MaxHeaders)
			if err != nil {
				return err
			}
			if n > 0 {
				err := parseResponse(in.buf[in.r:in.r+n], lim.MaxHeaders, resp)
				in.r += n
				return err
			}
		}
		if !grow(in, lim.MaxHeaderBytes) {
			return errHeadTooLarge
		}
		if err := in.fill(); err != nil {
			return err
		}
	}
}
