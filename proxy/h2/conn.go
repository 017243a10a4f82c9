package h2

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// conn is one HTTP/2 connection, downstream (server) or upstream (client).
// Its read loop owns the Framer's read side; every write goes through wmu
// (the Framer's write side and the HPACK encoder, whose state must follow
// the order of the HEADERS frames on the wire). mu guards the stream map
// and the send windows; cond wakes writers waiting for window.
type conn struct {
	nc     net.Conn
	br     *bufio.Reader // the Framer's read side (and the preface's)
	fr     *http2.Framer
	lim    *Limits
	server bool

	wmu  sync.Mutex
	bw   *bufio.Writer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu       sync.Mutex
	cond     sync.Cond
	streams  map[uint32]*stream
	handlers int32 // server: stream handlers running
	sendWin  int64 // connection send window
	// peer settings
	peerInitWin    int32
	peerMaxStreams uint32
	// receive accounting (read loop adds, consumers refund)
	recvWin     int32 // what the peer may still send on the connection
	recvUnacked int32 // consumed, not yet granted back
	closed      bool
	closeErr    error
	goAway      bool   // no new streams (sent or received GOAWAY)
	goAwayID    uint32 // client: last stream the server will process
	idleTimer   *time.Timer
	done        chan struct{}
	flushCh     chan struct{}
	onClose     func() // the pool's, for an upstream connection; set before it is used
}

func newConn(nc net.Conn, lim *Limits, server bool) *conn {
	c := &conn{nc: nc, lim: lim, server: server, streams: map[uint32]*stream{},
		sendWin: initialWindow, peerInitWin: initialWindow, peerMaxStreams: 100,
		recvWin: initialWindow, done: make(chan struct{}), flushCh: make(chan struct{}, 1)}
	if server {
		c.peerMaxStreams = 1 << 31
	}
	c.cond.L = &c.mu
	c.bw = bufio.NewWriterSize(timedWriter{nc}, 16<<10)
	// The Framer reads a frame as two io.ReadFulls (the 9-byte header,
	// then the payload): straight from the socket that was two read
	// syscalls per frame, and a unary call is 2 frames in and 3 back —
	// 27% of a sidecar's CPU at max in the grpc-weft profile. Buffered,
	// one read takes every frame that has arrived (a payload larger than
	// the buffer still goes straight into the Framer's). Upstreams carry
	// many streams' responses, so they get the larger buffer; there are
	// few of them.
	rsize := 4 << 10
	if !server {
		rsize = 16 << 10
	}
	c.br = bufio.NewReaderSize(nc, rsize)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.SetMaxReadFrameSize(maxFrame)
	// One DataFrame per connection, reused by every ReadFrame, not one
	// per DATA frame: the read loops are done with a frame (its payload
	// copied into the inbox) before they read the next.
	c.fr.SetReuseFrames()
	c.fr.MaxHeaderListSize = lim.MaxHeaderListSize
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	// Bounds every literal (HPACK bomb): no string longer than the list.
	c.fr.ReadMetaHeaders.SetMaxStringLength(int(lim.MaxHeaderListSize))
	c.henc = hpack.NewEncoder(&c.hbuf)
	go c.flusher()
	return c
}

// stream is one stream on a conn. Its inbox holds what the peer sent
// (DATA, trailers); sendWin is guarded by conn.mu.
type stream struct {
	c       *conn
	id      uint32
	sendWin int64
	in      inbox
	// recv accounting, guarded by conn.mu
	recvWin     int32
	recvUnacked int32
	remoteEnd   bool // END_STREAM received
	localEnd    bool // END_STREAM or RST sent
	reset       error
	done        chan struct{} // closed when the stream is reset or the conn fails
	// client side: the response head
	head chan *http2.MetaHeadersFrame
	// server side
	contentLen int64 // declared request content-length, -1 unknown
	got        int64 // DATA bytes received
	gotHeaders bool  // a trailer block ends it
	draining   bool  // answered; DATA still coming is dropped
	drained    int64
	// peer is the stream this one is forwarded to or from, woken when
	// this one ends.
	peer atomic.Pointer[stream]
}

func (c *conn) newStream(id uint32) *stream {
	st := &stream{}
	c.initStream(st, id)
	return st
}

// initStream readies a zero stream (one a serverStream holds). Callers
// hold mu (peerInitWin).
func (c *conn) initStream(st *stream, id uint32) {
	st.c, st.id, st.sendWin, st.recvWin = c, id, int64(c.peerInitWin), c.lim.StreamWindow
	st.done, st.contentLen = make(chan struct{}), -1
	st.in.cond.L = &st.in.mu
}

// ---------------------------------------------------------------- writes

// writeTimeout bounds one flush: a peer that reads nothing at all (not a
// slow reader — flow control already bounds what it is sent) would
// otherwise hold the connection's writers, and its read loop's SETTINGS
// and PING answers, forever.
const writeTimeout = 30 * time.Second

// timedWriter gives every socket write writeTimeout.
type timedWriter struct{ nc net.Conn }

func (w timedWriter) Write(p []byte) (int, error) {
	w.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return w.nc.Write(p)
}

// flush sends what the frame writes buffered. Callers hold wmu.
func (c *conn) flush() error {
	if err := c.bw.Flush(); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

// kick asks the connection's flusher to send what is buffered, instead of
// a write syscall per frame: frames written close together (a response's
// HEADERS, DATA and trailers; the WINDOW_UPDATEs of several streams) go
// out in one write, as the flusher runs once the writers have moved on.
// Callers hold wmu.
func (c *conn) kick() error {
	select {
	case c.flushCh <- struct{}{}:
	default:
	}
	return nil
}

// flusher is the connection's one flushing goroutine; it ends with the
// connection.
func (c *conn) flusher() {
	for {
		select {
		case <-c.flushCh:
			// Let the goroutines that are already runnable (other
			// streams' forwarders, the read loops handing them frames)
			// write theirs first: with nothing else runnable this
			// returns at once, under load one write carries many
			// streams' frames. At max (meshbench, 32 connections) this
			// took the pair from 52–63 to 38–40 µs per unary call and
			// from 35 to 15 µs per stream round trip; at 1000 calls/s
			// nothing else is runnable and p50 is unchanged.
			runtime.Gosched()
			c.wmu.Lock()
			if c.bw.Buffered() > 0 {
				c.flush()
			}
			c.wmu.Unlock()
		case <-c.done:
			return
		}
	}
}

func (c *conn) encode(fields []hpack.HeaderField) []byte {
	c.hbuf.Reset()
	for _, f := range fields {
		c.henc.WriteField(f)
	}
	return c.hbuf.Bytes()
}

// writeHeaders sends a header block on id, in CONTINUATION frames when it
// is larger than a frame.
func (c *conn) writeHeadersLocked(id uint32, end bool, fields []hpack.HeaderField) error {
	block := c.encode(fields)
	first := true
	for {
		frag := block
		if len(frag) > maxFrame {
			frag = frag[:maxFrame]
		}
		block = block[len(frag):]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			c.fail(err)
			return err
		}
		if len(block) == 0 {
			return nil
		}
	}
}

func (c *conn) writeHeaders(st *stream, end bool, fields []hpack.HeaderField) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeHeadersLocked(st.id, end, fields); err != nil {
		return err
	}
	if end {
		c.endLocal(st)
	}
	return c.kick()
}

// writeData sends p on st, waiting for send window; end sets END_STREAM
// on the last frame.
func (c *conn) writeData(st *stream, p []byte, end bool) error {
	for len(p) > 0 || end {
		n, err := c.reserve(st, len(p))
		if err != nil {
			return err
		}
		last := end && n == len(p)
		c.wmu.Lock()
		err = c.fr.WriteData(st.id, last, p[:n])
		if err == nil {
			if last {
				c.endLocal(st)
			}
			err = c.kick()
		} else {
			c.fail(err)
		}
		c.wmu.Unlock()
		if err != nil {
			return err
		}
		p = p[n:]
		if last {
			return nil
		}
	}
	return nil
}

// writeReserved sends p on st, whose window the caller has taken
// (tryReserve), in frames of at most maxFrame, under one wmu hold.
func (c *conn) writeReserved(st *stream, p []byte, end bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for {
		n := min(len(p), maxFrame)
		last := end && n == len(p)
		if err := c.fr.WriteData(st.id, last, p[:n]); err != nil {
			c.fail(err)
			return err
		}
		p = p[n:]
		if last {
			c.endLocal(st)
		}
		if len(p) == 0 {
			return c.kick()
		}
	}
}

// tryReserve takes n bytes of send window on st and the connection, all
// or nothing, without waiting: false when either has less, or the
// stream or connection is gone.
func (c *conn) tryReserve(st *stream, n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := int64(n)
	if st.reset != nil || c.closed || st.sendWin < k || c.sendWin < k {
		return false
	}
	st.sendWin -= k
	c.sendWin -= k
	return true
}

// reserve takes up to n bytes (at least 1, at most a frame) of send
// window on st and the connection, waiting for it; n 0 (an empty
// END_STREAM frame) needs none.
func (c *conn) reserve(st *stream, n int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if st.reset != nil {
			return 0, st.reset
		}
		if c.closed {
			return 0, c.closeErr
		}
		if n == 0 {
			return 0, nil
		}
		if st.sendWin > 0 && c.sendWin > 0 {
			k := int64(min(n, maxFrame))
			k = min(k, st.sendWin, c.sendWin)
			st.sendWin -= k
			c.sendWin -= k
			return int(k), nil
		}
		c.cond.Wait()
	}
}

func (c *conn) writeReset(st *stream, code http2.ErrCode) {
	c.mu.Lock()
	already := st.reset != nil // ours, the peer's, or the connection's
	c.mu.Unlock()
	if already {
		return
	}
	c.wmu.Lock()
	if c.fr.WriteRSTStream(st.id, code) == nil {
		c.kick()
	}
	c.wmu.Unlock()
	c.resetStream(st, resetError{code}, true)
}

func (c *conn) writeWindow(id uint32, n int32) {
	c.wmu.Lock()
	if c.fr.WriteWindowUpdate(id, uint32(n)) == nil {
		c.kick()
	}
	c.wmu.Unlock()
}

func (c *conn) goAwayWrite(code http2.ErrCode, lastID uint32, debug string) {
	c.mu.Lock()
	c.goAway = true
	c.mu.Unlock()
	c.wmu.Lock()
	if c.fr.WriteGoAway(lastID, code, []byte(debug)) == nil {
		c.flush()
	}
	c.wmu.Unlock()
}

// ---------------------------------------------------------------- state

// endLocal records END_STREAM sent on st. Callers hold wmu.
func (c *conn) endLocal(st *stream) {
	c.mu.Lock()
	st.localEnd = true
	c.maybeRemove(st)
	c.mu.Unlock()
}

// maybeRemove drops a stream both sides are done with. Callers hold mu.
func (c *conn) maybeRemove(st *stream) {
	if (st.localEnd && st.remoteEnd) || st.reset != nil {
		if c.streams[st.id] == st {
			delete(c.streams, st.id)
			// A reset stream's data is never consumed: it goes back to
			// the connection window.
			// (One reset after its END_STREAM — an upstream's NO_ERROR
			// for a body it did not read — keeps what it sent.)
			if st.reset != nil && !st.remoteEnd {
				if n := st.in.drop(); n > 0 {
					c.recvUnacked += int32(n)
				}
			}
			c.streamGone()
		}
	}
}

// streamGone arms the idle timer when the last stream ended. Callers hold mu.
func (c *conn) streamGone() {
	if len(c.streams) == 0 {
		if c.goAway && !c.closed {
			go c.close(nil)
			return
		}
		if c.idleTimer != nil {
			c.idleTimer.Reset(c.idleFor())
		}
	}
}

func (c *conn) idleFor() time.Duration {
	if c.server {
		return c.lim.IdleTimeout
	}
	return c.lim.UpstreamIdle
}

// resetStream ends st with err (sent: we sent the RST).
func (c *conn) resetStream(st *stream, err error, sent bool) {
	c.mu.Lock()
	if st.reset == nil {
		st.reset = err
		if sent {
			st.localEnd = true
		}
		close(st.done)
		c.cond.Broadcast()
	}
	c.maybeRemove(st)
	c.mu.Unlock()
	st.in.fail(err)
	if p := st.peer.Load(); p != nil {
		p.in.interrupt()
	}
}

// fail closes the connection after an I/O error.
func (c *conn) fail(err error) {
	go c.close(err)
}

// close ends the connection and every stream on it. A graceful close
// (err nil) first sends what the flusher has not yet.
func (c *conn) close(err error) {
	if err == nil {
		c.wmu.Lock()
		if c.bw.Buffered() > 0 {
			c.bw.Flush()
		}
		c.wmu.Unlock()
		err = io.EOF
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.closeErr = true, err
	sts := make([]*stream, 0, len(c.streams))
	for _, st := range c.streams {
		sts = append(sts, st)
	}
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	close(c.done)
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	for _, st := range sts {
		c.resetStream(st, err, false)
	}
	if c.onClose != nil {
		c.onClose()
	}
}

// consumed returns n bytes the stream's reader took to the sender: a
// WINDOW_UPDATE once half a window is owed, so updates stay few.
func (c *conn) consumed(st *stream, n int) {
	if n <= 0 {
		return
	}
	var sw, cw int32
	c.mu.Lock()
	c.recvUnacked += int32(n)
	if c.recvUnacked >= c.lim.ConnWindow/2 {
		cw, c.recvUnacked = c.recvUnacked, 0
		c.recvWin += cw
	}
	if st != nil && !st.remoteEnd && st.reset == nil {
		st.recvUnacked += int32(n)
		if st.recvUnacked >= c.lim.StreamWindow/2 {
			sw, st.recvUnacked = st.recvUnacked, 0
			st.recvWin += sw
		}
	}
	c.mu.Unlock()
	if sw == 0 && cw == 0 {
		return
	}
	c.wmu.Lock()
	if cw > 0 {
		c.fr.WriteWindowUpdate(0, uint32(cw))
	}
	if sw > 0 {
		c.fr.WriteWindowUpdate(st.id, uint32(sw))
	}
	c.kick()
	c.wmu.Unlock()
}

// onData accounts a DATA frame received on st; a connection error when the
// peer overran a window.
func (c *conn) onData(st *stream, f *http2.DataFrame) error {
	n := int32(f.Length)
	c.mu.Lock()
	if n > c.recvWin || (st != nil && n > st.recvWin) {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWin -= n
	if st != nil {
		st.recvWin -= n
	}
	c.mu.Unlock()
	if pad := int(n) - len(f.Data()); pad > 0 {
		c.consumed(st, pad) // padding is never read: credit it at once
	}
	return nil
}

// onWindowUpdate applies a WINDOW_UPDATE.
func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if c.sendWin+inc > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendWin += inc
		c.cond.Broadcast()
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		return nil
	}
	if st.sendWin+inc > 1<<31-1 {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	st.sendWin += inc
	c.cond.Broadcast()
	return nil
}

// onSettings applies the peer's SETTINGS, in order (a repeated setting's
// last value wins, as RFC 9113 §6.5.3 says), and acknowledges them.
//
// wmu is held from the first setting to the ACK, so the ACK is on the wire
// before any frame the new settings allow: a writer that a larger
// SETTINGS_INITIAL_WINDOW_SIZE wakes (it waits in reserve for window) can
// only write its DATA after it. Without that the DATA could go out first,
// and a peer that waits for its ACK and then for DATA (h2spec 6.9.2/1 does)
// would see the DATA before the ACK it was waiting for — seen under load in CI.
// (Lock order: wmu before mu, as everywhere.)
func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			defer c.mu.Unlock()
			delta := int64(s.Val) - int64(c.peerInitWin)
			c.peerInitWin = int32(s.Val)
			for _, st := range c.streams {
				if st.sendWin+delta > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				st.sendWin += delta
			}
			c.cond.Broadcast()
		case http2.SettingMaxConcurrentStreams:
			c.mu.Lock()
			c.peerMaxStreams = s.Val
			c.mu.Unlock()
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSize(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := c.fr.WriteSettingsAck(); err != nil {
		return err
	}
	return c.kick()
}

func (c *conn) onPing(f *http2.PingFrame) error {
	if f.IsAck() {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.fr.WritePing(true, f.Data); err != nil {
		return err
	}
	return c.kick()
}

// ---------------------------------------------------------------- inbox

// inbox is what a peer sent on one stream and nobody has taken yet:
// DATA payloads (copied out of the Framer's buffer), then trailers or the
// end. It holds at most the stream's receive window.
type inbox struct {
	mu   sync.Mutex
	cond sync.Cond
	// chunks[head:] is the queue; it restarts at the front of its array
	// whenever it empties, so a stream whose reader keeps up (every
	// unary call) appends into first and allocates nothing.
	chunks   [][]byte
	head     int
	first    [2][]byte
	n        int
	trailers []hpack.HeaderField
	end      bool
	err      error
	wake     int // bumped by interrupt
}

func (b *inbox) push(p []byte) {
	if len(p) == 0 {
		return
	}
	buf := getBuf(len(p))
	copy(buf, p)
	b.mu.Lock()
	if b.err == nil {
		if b.chunks == nil {
			b.chunks = b.first[:0]
		}
		b.chunks = append(b.chunks, buf)
		b.n += len(p)
	}
	b.mu.Unlock()
	b.cond.Signal()
}

func (b *inbox) finish(trailers []hpack.HeaderField) {
	b.mu.Lock()
	b.end, b.trailers = true, trailers
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *inbox) fail(err error) {
	b.mu.Lock()
	if b.err == nil && !b.end { // after the end, what came stays readable
		b.err = err
	}
	b.mu.Unlock()
	b.cond.Broadcast()
}

// interrupt wakes a reader waiting in next, which returns errInterrupted
// when stop says so.
func (b *inbox) interrupt() {
	b.mu.Lock()
	b.wake++
	b.mu.Unlock()
	b.cond.Broadcast()
}

var errInterrupted = errors.New("h2: interrupted")

// next returns the next chunk (the caller puts it back with putBuf), and
// end when nothing follows it; trailers come with end. stop, when set, is
// asked after each wake-up.
func (b *inbox) next(stop func() bool) (chunk []byte, end bool, trailers []hpack.HeaderField, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.head < len(b.chunks) {
			chunk = b.chunks[b.head]
			b.chunks[b.head] = nil
			b.head++
			b.n -= len(chunk)
			if b.head == len(b.chunks) {
				b.chunks, b.head = b.chunks[:0], 0
			}
			if len(b.chunks) == 0 && b.end {
				return chunk, true, b.trailers, nil
			}
			return chunk, false, nil, nil
		}
		if b.end {
			return nil, true, b.trailers, nil
		}
		if b.err != nil {
			return nil, false, nil, b.err
		}
		if stop != nil && stop() {
			return nil, false, nil, errInterrupted
		}
		b.cond.Wait()
	}
}

// drop discards what is queued, returning its size.
func (b *inbox) drop() int {
	b.mu.Lock()
	n := b.n
	for i := b.head; i < len(b.chunks); i++ {
		putBuf(b.chunks[i])
		b.chunks[i] = nil
	}
	b.chunks, b.head, b.n = b.chunks[:0], 0, 0
	b.mu.Unlock()
	return n
}

// bufPool holds frame-sized buffers as array pointers: putting a *[]byte
// made a new slice header on the heap per Put, one allocation per chunk.
var bufPool = sync.Pool{New: func() any { return new([maxFrame]byte) }}

func getBuf(n int) []byte {
	if n > maxFrame {
		return make([]byte, n)
	}
	return bufPool.Get().(*[maxFrame]byte)[:n]
}

func putBuf(b []byte) {
	if cap(b) == maxFrame {
		bufPool.Put((*[maxFrame]byte)(b[:maxFrame]))
	}
}
