package h2

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// handle runs one downstream stream: route, then tries until one's
// response goes back (or the Router answers itself).
func (s *Server) handle(c *conn, ss *serverStream) {
	st, req, d, res := &ss.st, &ss.req, &ss.d, &ss.res
	if isClosed(st.done) {
		return // reset before it started: no work for a rapid reset
	}
	s.Router.Route(req, d)
	if d.Handler != nil {
		serveHandler(s, c, st, req, d, res)
	} else if d.HTTP1 != nil {
		forwardH1(s, c, st, req, d, res) // h1upstream.go
	} else {
		ss.body.in, ss.body.limit = &st.in, d.ReplayLimit
		ss.fw = forwarder{s: s, c: c, st: st, req: req, d: d, res: res, body: &ss.body, ss: ss}
		ss.fw.run()
	}
	res.End = time.Now()
	s.Router.Finish(req, d, res)
	c.finishStream(st)
}

// finishStream ends a downstream stream whose handler returned: a request
// body nobody will read is credited back, and what a caller still sends
// is read and dropped (drainData), up to a bound.
func (c *conn) finishStream(st *stream) {
	c.mu.Lock()
	local, reset := st.localEnd, st.reset
	if reset == nil && local && !st.remoteEnd {
		st.draining = true // the read loop drops the rest (drainData)
	}
	c.mu.Unlock()
	if reset == nil && !local {
		c.writeReset(st, http2.ErrCodeInternal)
	}
	if n := st.in.drop(); n > 0 {
		c.consumed(nil, n)
	}
}

type forwarder struct {
	s    *Server
	c    *conn // downstream
	st   *stream
	req  *Request
	d    *Decision
	res  *Result
	body *heldBody
	ss   *serverStream // the inline pump, the response and head scratch
}

func (fw *forwarder) run() {
	d, res := fw.d, fw.res
	for {
		if d.Addr == "" {
			fw.answer()
			return
		}
		fields := getFields()
		*fields = appendRequestFields(*fields, fw.req, d)
		res.UpstreamStart = time.Now()
		up, ust, err := fw.s.pool.open(context.Background(), d.Addr, *fields, fw.req.EndStream)
		putFields(fields)
		if err != nil {
			if fw.again(nil, err) {
				continue
			}
			fw.fail(err)
			return
		}
		ust.peer.Store(fw.st)
		fw.st.peer.Store(ust)
		var p *pump
		if !fw.req.EndStream {
			fw.body.rewind()
			if p = sendInline(&fw.ss.pump, fw.body, fw.c, fw.st, up, ust); p == nil {
				p = startPump(fw.body, fw.c, fw.st, up, ust)
			}
		}
		head, err := fw.waitHead(ust)
		if p != nil && !fw.body.whole() {
			d.Unreplayable = true
		}
		if err != nil {
			up.writeReset(ust, http2.ErrCodeCancel)
			p.halt()
			if errors.Is(err, ErrDownstreamGone) {
				res.Err = err
				return
			}
			if fw.again(nil, err) {
				continue
			}
			fw.fail(err)
			return
		}
		resp := &fw.ss.resp
		responseInto(resp, head)
		res.UpstreamHeaders = resp.At
		if fw.again(resp, nil) {
			up.writeReset(ust, http2.ErrCodeCancel)
			p.halt()
			continue
		}
		fw.relay(up, ust, head, p)
		return
	}
}

// again asks the Router whether to try again.
func (fw *forwarder) again(resp *Response, err error) bool {
	return fw.s.Router.Answered(fw.req, fw.d, resp, err)
}

// waitHead waits for the try's response head, within HeaderTimeout.
func (fw *forwarder) waitHead(ust *stream) (*http2.MetaHeadersFrame, error) {
	var timeout <-chan time.Time
	if t := fw.d.HeaderTimeout; t > 0 {
		tm := fw.ss.timer // stopped; Reset after Stop delivers no stale tick
		if tm == nil {
			tm = time.NewTimer(t)
		} else {
			tm.Reset(t)
		}
		defer tm.Stop()
		timeout = tm.C
	}
	select {
	case h := <-ust.head:
		return h, nil
	case <-ust.done:
		select {
		case h := <-ust.head:
			return h, nil
		default:
		}
		err := ust.resetErr()
		if errors.Is(err, ErrRefused) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrUpstreamReset, err)
	case <-fw.st.done:
		return nil, ErrDownstreamGone
	case <-timeout:
		return nil, ErrUpstreamTimeout
	}
}

func (st *stream) resetErr() error {
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	return st.reset
}

// relay sends the response head down, then its body and trailers as they
// come, crediting the upstream only for what the caller's window took.
func (fw *forwarder) relay(up *conn, ust *stream, head *http2.MetaHeadersFrame, p *pump) {
	c, st, res := fw.c, fw.st, fw.res
	end := head.StreamEnded()
	res.Status, _ = strconv.Atoi(head.PseudoValue("status"))
	if end {
		res.GRPCStatus = get(head.RegularFields(), "grpc-status")
	}
	fields := getFields()
	*fields = appendResponseFields(*fields, head, fw.d)
	err := c.writeHeaders(st, end, *fields)
	putFields(fields)
	if err != nil {
		up.writeReset(ust, http2.ErrCodeCancel)
		p.halt()
		res.Err = err
		return
	}
	res.HeadWritten = true
	// The idle timer wakes the reader (interrupt) and stop then says so;
	// armed only when a policy sets idleTimeout, reset per chunk.
	var idle atomic.Bool
	var idleTimer *time.Timer
	if t := fw.d.StreamIdle; t > 0 && !end {
		idleTimer = time.AfterFunc(t, func() { idle.Store(true); ust.in.interrupt() })
		defer idleTimer.Stop()
	}
	stop := func() bool { return isClosed(st.done) || idle.Load() }
	for !end {
		chunk, last, trailers, err := ust.in.next(stop)
		if err != nil {
			if isClosed(st.done) {
				up.writeReset(ust, http2.ErrCodeCancel)
				res.Err = ErrDownstreamGone
			} else if idle.Load() {
				up.writeReset(ust, http2.ErrCodeCancel)
				c.writeReset(st, http2.ErrCodeCancel)
				res.Err = ErrStreamIdle
			} else {
				c.writeReset(st, codeOf(err))
				res.Err = fmt.Errorf("%w: %w", ErrUpstreamReset, err)
			}
			p.halt()
			return
		}
		end = last
		if idleTimer != nil && !last {
			idleTimer.Reset(fw.d.StreamIdle)
		}
		if len(chunk) > 0 {
			n := len(chunk)
			werr := c.writeData(st, chunk, last && trailers == nil)
			putBuf(chunk)
			up.consumed(ust, n)
			res.RespBytes += int64(n)
			if werr != nil {
				up.writeReset(ust, http2.ErrCodeCancel)
				p.halt()
				res.Err = ErrDownstreamGone
				return
			}
		}
		if last {
			var werr error
			if trailers != nil {
				res.GRPCStatus = get(trailers, "grpc-status")
				werr = c.writeHeaders(st, true, trailers)
			} else if len(chunk) == 0 {
				werr = c.writeData(st, nil, true)
			}
			if werr != nil {
				res.Err = werr
			}
		}
	}
	if p != nil {
		// The answer is complete; a request body still coming has nowhere
		// to go (finishStream tells the caller).
		select {
		case <-p.done:
		default:
			up.writeReset(ust, http2.ErrCodeCancel)
			p.halt()
		}
		res.ReqBytes = p.n.Load()
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// answer sends the Router's own answer.
func (fw *forwarder) answer() {
	c, st, d, res := fw.c, fw.st, fw.d, fw.res
	fields := make([]hpack.HeaderField, 0, len(d.Header)+len(d.RespSet)+2)
	fields = append(fields, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(d.Status)})
	fields = appendLower(fields, d.Header)
	fields = appendLower(fields, d.RespSet)
	res.Status = d.Status
	if d.TrailersOnly {
		res.GRPCStatus = get(fields, "grpc-status")
		res.Err = c.writeHeaders(st, true, fields)
		res.HeadWritten = res.Err == nil
		return
	}
	fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(d.Body))})
	empty := len(d.Body) == 0 || fw.req.Method == "HEAD"
	if res.Err = c.writeHeaders(st, empty, fields); res.Err != nil {
		return
	}
	res.HeadWritten = true
	if !empty {
		res.Err = c.writeData(st, d.Body, true)
		res.RespBytes = int64(len(d.Body))
	}
}

// fail ends a request whose tries failed: the Router's answer when it
// gave one, else a reset.
func (fw *forwarder) fail(err error) {
	fw.res.Err = err
	if fw.d.Status != 0 && fw.d.Addr == "" {
		fw.answer()
		fw.res.Err = err
		return
	}
	fw.c.writeReset(fw.st, codeOf(err))
}

// ---------------------------------------------------------------- body

// heldBody is the request body as the tries read it: what the caller
// sends, and — up to limit bytes — a copy held so a retry can send it
// again.
type heldBody struct {
	in    *inbox
	limit int
	mu    sync.Mutex
	held  [][]byte
	heldN int
	over  bool
	eof   bool
	tr    []hpack.HeaderField
	pos   int
}

func (b *heldBody) rewind() {
	b.mu.Lock()
	b.pos = 0
	b.mu.Unlock()
}

// complete reports whether the rest of the body (from the current
// position) has all arrived, and its size.
func (b *heldBody) complete() (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for i := b.pos; i < len(b.held); i++ {
		n += len(b.held[i])
	}
	if b.eof {
		return n, true
	}
	b.in.mu.Lock()
	defer b.in.mu.Unlock()
	if !b.in.end {
		return 0, false
	}
	return n + b.in.n, true
}

// whole reports whether all of the body is held.
func (b *heldBody) whole() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof && !b.over
}

// next returns the next chunk, whether it came from the caller (so its
// window must be credited once sent) and whether the caller may recycle it.
func (b *heldBody) next(stop func() bool) (chunk []byte, end bool, tr []hpack.HeaderField, fresh, owned bool, err error) {
	b.mu.Lock()
	if b.pos < len(b.held) {
		chunk = b.held[b.pos]
		b.pos++
		end = b.eof && b.pos == len(b.held)
		if end {
			tr = b.tr
		}
		b.mu.Unlock()
		return chunk, end, tr, false, false, nil
	}
	if b.eof { // all held, and sent
		b.mu.Unlock()
		return nil, true, b.tr, false, false, nil
	}
	b.mu.Unlock()
	chunk, end, tr, err = b.in.next(stop)
	if err != nil {
		return nil, false, nil, false, false, err
	}
	b.mu.Lock()
	owned = true
	if b.limit > 0 && !b.over {
		if b.heldN+len(chunk) > b.limit {
			b.over, b.held = true, nil
		} else if len(chunk) > 0 {
			b.held = append(b.held, chunk)
			b.heldN += len(chunk)
			b.pos = len(b.held)
			owned = false
		}
	}
	if end {
		b.eof, b.tr = true, tr
	}
	b.mu.Unlock()
	return chunk, end, tr, true, owned, nil
}

// pump sends one try's request body upstream: a chunk is taken from the
// caller's queue only when the upstream's window has room for it, and the
// caller's window is credited once it is sent, so a slow upstream slows
// the caller down rather than filling the sidecar's memory.
type pump struct {
	stop atomic.Bool
	done chan struct{}
	in   *inbox
	n    atomic.Int64
	h2   h2Sink // the sink when the upstream is h2 (no allocation of its own)
}

// bodySink is where a pump writes a request body: a stream on an h2
// upstream (h2Sink) or an HTTP/1.1 exchange (h1Sink).
type bodySink interface {
	// data writes a chunk; last: nothing follows it (no trailers).
	data(chunk []byte, last bool) error
	// end finishes the body: trailers, or an empty END_STREAM when the
	// last data did not carry it.
	end(tr []hpack.HeaderField, wroteLast bool)
	// abort tells the upstream the caller reset: it has half a request.
	abort()
}

// h2Sink writes to ust on up; reserved: the window for all of it is
// already taken (sendInline).
type h2Sink struct {
	up       *conn
	ust      *stream
	reserved bool
}

func (k *h2Sink) data(chunk []byte, last bool) error {
	if k.reserved {
		return k.up.writeReserved(k.ust, chunk, last)
	}
	return k.up.writeData(k.ust, chunk, last)
}

func (k *h2Sink) end(tr []hpack.HeaderField, wroteLast bool) {
	if tr != nil {
		k.up.writeHeaders(k.ust, true, tr)
	} else if !wroteLast {
		k.up.writeData(k.ust, nil, true)
	}
}

func (k *h2Sink) abort() { k.up.writeReset(k.ust, http2.ErrCodeCancel) }

func startPump(b *heldBody, dc *conn, dst *stream, up *conn, ust *stream) *pump {
	p := &pump{done: make(chan struct{}), in: b.in}
	go func() {
		defer close(p.done)
		p.h2 = h2Sink{up: up, ust: ust}
		p.send(b, dc, dst, &p.h2, func() bool { return p.stop.Load() || isClosed(ust.done) })
	}()
	return p
}

// sendInline sends a request body that has all arrived and fits the
// upstream's send windows from the stream's own goroutine, with the
// window for all of it taken at once, so nothing can wait; nil when the
// body must be pumped. A unary gRPC call's body (one small message) has
// almost always arrived with its HEADERS, and this saves the pump's
// goroutine, its start and its wake-ups — about a fifth of the client
// sidecar's goroutine switches per call at max.
// p is the stream's own (no try's pump is running when the next starts:
// halt waits for it).
func sendInline(p *pump, b *heldBody, dc *conn, dst *stream, up *conn, ust *stream) *pump {
	n, ok := b.complete()
	if !ok || !up.tryReserve(ust, n) {
		return nil
	}
	p.done, p.in = closedChan, b.in
	p.h2 = h2Sink{up: up, ust: ust, reserved: true}
	p.send(b, dc, dst, &p.h2, nil)
	return p
}

// closedChan is a finished pump's done.
var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// send moves the body to k until its end, an error, or stop; a chunk
// is credited to the caller once it is written.
func (p *pump) send(b *heldBody, dc *conn, dst *stream, k bodySink, stop func() bool) {
	for {
		chunk, end, tr, fresh, owned, err := b.next(stop)
		if err != nil {
			if !errors.Is(err, errInterrupted) {
				k.abort() // the caller reset
			}
			return
		}
		if len(chunk) > 0 {
			err = k.data(chunk, end && tr == nil)
			if fresh {
				p.n.Add(int64(len(chunk)))
				dc.consumed(dst, len(chunk))
			}
			if owned {
				putBuf(chunk)
			}
			if err != nil {
				return
			}
		}
		if end {
			k.end(tr, len(chunk) > 0 && tr == nil)
			return
		}
	}
}

// halt stops the pump and waits for it.
func (p *pump) halt() {
	if p == nil {
		return
	}
	p.stop.Store(true)
	p.in.interrupt()
	<-p.done
}
