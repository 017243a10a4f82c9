package h2

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// Server serves downstream HTTP/2 connections (ServeConn), forwarding each
// stream where its Router says. Limits, Logger and Dial are read on the
// first ServeConn.
type Server struct {
	Router Router
	Limits Limits
	Logger *slog.Logger
	// Dial opens upstream connections (the sidecar's mTLS with ALPN h2 to
	// other sidecars, h2c to the app); nil: TCP. Its errors should be
	// *net.OpError with Op "dial" when nothing was sent.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Context, when set, is the base context of the requests a
	// Decision.Handler serves (the caller's verified identity).
	Context func(remote net.Addr) context.Context

	initOnce sync.Once
	lim      Limits
	log      *slog.Logger
	pool     pool
	closing  atomic.Bool
	mu       sync.Mutex
	conns    map[*conn]*serverConn
	wg       sync.WaitGroup
	workers  workers
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.lim = s.Limits.withDefaults()
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		s.conns = map[*conn]*serverConn{}
		s.workers.init()
		s.pool.init(&s.lim, s.Dial)
	})
}

// serverConn is a downstream connection's read-loop state.
type serverConn struct {
	s     *Server
	c     *conn
	maxID uint32 // highest stream id the client opened
}

// ServeConn serves nc, which starts with the client connection preface,
// on a goroutine of its own; it returns at once. After Shutdown it closes
// nc.
func (s *Server) ServeConn(nc net.Conn) {
	s.init()
	if s.closing.Load() {
		nc.Close()
		return
	}
	c := newConn(nc, &s.lim, true)
	sc := &serverConn{s: s, c: c}
	s.mu.Lock()
	s.conns[c] = sc
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		sc.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

const prefaceTimeout = 10 * time.Second

func (sc *serverConn) serve() {
	c, lim := sc.c, sc.s.lim
	defer c.close(nil)
	var pre [len(http2.ClientPreface)]byte
	c.nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != http2.ClientPreface {
		return
	}
	c.wmu.Lock()
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: lim.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(lim.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: lim.MaxHeaderListSize},
		http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1}, // RFC 8441 (extconnect.go)
	)
	c.fr.WriteWindowUpdate(0, uint32(lim.ConnWindow-initialWindow))
	err := c.flush()
	c.wmu.Unlock()
	if err != nil {
		return
	}
	c.mu.Lock()
	c.recvWin = lim.ConnWindow
	c.idleTimer = time.AfterFunc(lim.IdleTimeout, sc.idle)
	c.mu.Unlock()
	first := true
	for {
		f, err := c.fr.ReadFrame()
		if first && err == nil {
			c.nc.SetReadDeadline(time.Time{})
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				err = http2.ConnectionError(http2.ErrCodeProtocol)
			}
			first = false
		}
		if err == nil {
			err = sc.frame(f)
		}
		if err != nil && !sc.handleErr(err) {
			return
		}
	}
}

// handleErr answers a frame error; false ends the connection.
func (sc *serverConn) handleErr(err error) bool {
	c := sc.c
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		c.mu.Lock()
		st := c.streams[se.StreamID]
		if se.StreamID > sc.maxID && se.StreamID%2 == 1 {
			sc.maxID = se.StreamID // a malformed HEADERS still opened (and closed) it
		}
		c.mu.Unlock()
		if st != nil {
			c.writeReset(st, se.Code)
			return true
		}
		c.wmu.Lock()
		if c.fr.WriteRSTStream(se.StreamID, se.Code) == nil {
			c.kick()
		}
		c.wmu.Unlock()
		return true
	case errors.As(err, &ce):
		c.goAwayWrite(http2.ErrCode(ce), sc.lastID(), "")
		sc.linger()
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.goAwayWrite(http2.ErrCodeFrameSize, sc.lastID(), "")
		sc.linger()
	}
	return false
}

// linger half-closes after a GOAWAY and reads what the client still
// sends, for a moment: closing a socket with unread input makes the
// kernel answer with a TCP reset, which can destroy the GOAWAY before the
// client reads it.
func (sc *serverConn) linger() {
	nc := sc.c.nc
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	nc.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
}

func (sc *serverConn) lastID() uint32 {
	sc.c.mu.Lock()
	defer sc.c.mu.Unlock()
	return sc.maxID
}

// idle closes a connection that has had no stream for IdleTimeout.
func (sc *serverConn) idle() {
	c := sc.c
	c.mu.Lock()
	busy := len(c.streams) > 0
	c.mu.Unlock()
	if busy {
		return
	}
	c.goAwayWrite(http2.ErrCodeNo, sc.lastID(), "idle")
	c.close(nil)
}

// shutdown starts a graceful drain: GOAWAY with the last stream id, new
// streams refused, the connection closed once its streams end.
func (sc *serverConn) shutdown() {
	c := sc.c
	c.goAwayWrite(http2.ErrCodeNo, sc.lastID(), "shutting down")
	c.mu.Lock()
	empty := len(c.streams) == 0
	c.mu.Unlock()
	if empty {
		c.close(nil)
	}
}

func connErr(code http2.ErrCode) error { return http2.ConnectionError(code) }

func streamErr(id uint32, code http2.ErrCode) error {
	return http2.StreamError{StreamID: id, Code: code}
}

func (sc *serverConn) frame(f http2.Frame) error {
	c := sc.c
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return sc.onHeaders(f)
	case *http2.DataFrame:
		return sc.onData(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		st := c.streams[f.StreamID]
		idle := f.StreamID > sc.maxID
		c.mu.Unlock()
		if idle {
			return connErr(http2.ErrCodeProtocol)
		}
		if st != nil {
			c.resetStream(st, resetError{f.ErrCode}, false)
		}
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		return c.onPing(f)
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		idle := f.StreamID > sc.maxID
		c.mu.Unlock()
		if f.StreamID != 0 && idle {
			return connErr(http2.ErrCodeProtocol)
		}
		return c.onWindowUpdate(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return streamErr(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.PushPromiseFrame:
		return connErr(http2.ErrCodeProtocol)
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goAway = true
		c.mu.Unlock()
	}
	return nil
}

func (sc *serverConn) onHeaders(f *http2.MetaHeadersFrame) error {
	c := sc.c
	id := f.StreamID
	if id%2 == 0 {
		return connErr(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	st := c.streams[id]
	if st != nil {
		// A second block: trailers, which end the stream.
		defer c.mu.Unlock()
		switch {
		case st.remoteEnd:
			return streamErr(id, http2.ErrCodeStreamClosed)
		case !f.StreamEnded() || len(f.PseudoFields()) > 0:
			return streamErr(id, http2.ErrCodeProtocol)
		case st.contentLen >= 0 && st.got != st.contentLen:
			return streamErr(id, http2.ErrCodeProtocol)
		}
		st.remoteEnd = true
		st.in.finish(f.RegularFields())
		c.maybeRemove(st)
		return nil
	}
	if id <= sc.maxID {
		c.mu.Unlock()
		return connErr(http2.ErrCodeProtocol)
	}
	sc.maxID = id
	if c.goAway {
		c.mu.Unlock()
		return nil // after GOAWAY new streams are ignored
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.mu.Unlock()
		return streamErr(id, http2.ErrCodeProtocol)
	}
	// Handlers still running count too: a stream the client reset at once
	// leaves the map, but its handler may not have noticed yet (rapid
	// reset, CVE-2023-44487, would otherwise start unbounded work).
	if uint32(max(len(c.streams), int(c.handlers))) >= c.lim.MaxConcurrentStreams {
		c.mu.Unlock()
		return streamErr(id, http2.ErrCodeRefusedStream)
	}
	c.mu.Unlock()
	ss := &serverStream{}
	req := &ss.req
	if err := requestInto(req, f); err != nil {
		return streamErr(id, http2.ErrCodeProtocol)
	}
	req.RemoteAddr = c.nc.RemoteAddr()
	c.mu.Lock()
	st = &ss.st
	c.initStream(st, id)
	st.contentLen = req.ContentLength
	st.remoteEnd = f.StreamEnded()
	if st.remoteEnd {
		st.in.finish(nil)
	}
	c.streams[id] = st
	c.handlers++
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	sc.s.wg.Add(1)
	sc.s.workers.start(sc, ss)
	return nil
}

// serverStream is a downstream stream with everything its handler needs,
// in one allocation where there were seven (the stream, the Request, the
// Decision, the Result, the forwarder, the held body, the inline pump,
// the Response).
type serverStream struct {
	st   stream
	req  Request
	d    Decision
	res  Result
	fw   forwarder
	body heldBody
	pump pump
	resp Response
	// timer is the worker's, for the response head timeout: a timer
	// made and stopped per call was an allocation and two timer-heap
	// operations more.
	timer *time.Timer
}

// run serves a stream on a worker.
func (sc *serverConn) run(ss *serverStream) {
	defer sc.s.wg.Done()
	c := sc.c
	sc.s.handle(c, ss)
	c.mu.Lock()
	c.handlers--
	c.mu.Unlock()
}

func (sc *serverConn) onData(f *http2.DataFrame) error {
	c := sc.c
	id := f.StreamID
	c.mu.Lock()
	st := c.streams[id]
	idle := id > sc.maxID
	closed := st == nil || st.remoteEnd
	draining := st != nil && st.draining
	c.mu.Unlock()
	if st == nil && idle {
		return connErr(http2.ErrCodeProtocol)
	}
	if draining && !closed {
		return sc.drainData(st, f)
	}
	if closed {
		// Flow control still counts it; it is never read.
		if err := c.onData(nil, f); err != nil {
			return err
		}
		c.consumed(nil, int(f.Length))
		return streamErr(id, http2.ErrCodeStreamClosed)
	}
	if err := c.onData(st, f); err != nil {
		return err
	}
	data := f.Data()
	st.got += int64(len(data))
	if st.contentLen >= 0 && (st.got > st.contentLen || (f.StreamEnded() && st.got != st.contentLen)) {
		return streamErr(id, http2.ErrCodeProtocol)
	}
	st.in.push(data)
	if f.StreamEnded() {
		c.mu.Lock()
		st.remoteEnd = true
		c.mu.Unlock()
		st.in.finish(nil)
		c.mu.Lock()
		c.maybeRemove(st)
		c.mu.Unlock()
	}
	return nil
}

// drainData takes DATA for a stream already answered: still checked
// against its content-length (a malformed request is a PROTOCOL_ERROR
// whenever it shows), credited at once, and cut off with RST_STREAM
// NO_ERROR past maxDrain.
func (sc *serverConn) drainData(st *stream, f *http2.DataFrame) error {
	c := sc.c
	if err := c.onData(st, f); err != nil {
		return err
	}
	c.consumed(nil, int(f.Length))
	st.got += int64(len(f.Data()))
	if st.contentLen >= 0 && (st.got > st.contentLen || (f.StreamEnded() && st.got != st.contentLen)) {
		return streamErr(st.id, http2.ErrCodeProtocol)
	}
	if f.StreamEnded() {
		c.mu.Lock()
		st.remoteEnd = true
		c.maybeRemove(st)
		c.mu.Unlock()
		return nil
	}
	if st.drained += int64(f.Length); st.drained > maxDrain {
		c.writeReset(st, http2.ErrCodeNo)
	}
	return nil
}

// maxDrain is how much of a request body is read and dropped after the
// answer before the caller is told to stop.
const maxDrain = 256 << 10

// requestOf checks a request head (RFC 9113 §8.3) and adapts it.
func requestOf(f *http2.MetaHeadersFrame) (*Request, error) {
	r := &Request{}
	if err := requestInto(r, f); err != nil {
		return nil, err
	}
	return r, nil
}

// requestInto is requestOf filling r.
func requestInto(r *Request, f *http2.MetaHeadersFrame) error {
	*r = Request{ContentLength: -1, EndStream: f.StreamEnded()}
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			r.Method = hf.Value
		case ":scheme":
			r.Scheme = hf.Value
		case ":authority":
			r.Authority = hf.Value
		case ":path":
			r.Path = hf.Value
		case ":protocol":
			r.Protocol = hf.Value
		default:
			return errMalformed // :status
		}
	}
	if r.Method == "" {
		return errMalformed
	}
	if r.Protocol != "" {
		if !extendedConnectOK(r) { // extconnect.go
			return errMalformed
		}
	} else if r.Method == "CONNECT" {
		if r.Scheme != "" || r.Path != "" || r.Authority == "" {
			return errMalformed
		}
	} else if r.Scheme == "" || r.Path == "" {
		return errMalformed
	}
	r.Fields = f.RegularFields()
	ctype := false
	for _, hf := range r.Fields {
		switch hf.Name {
		case "content-type":
			if !ctype {
				ctype, r.grpc = true, isGRPC(hf.Value)
			}
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return errMalformed
		case "te":
			if hf.Value != "trailers" {
				return errMalformed
			}
		case "content-length":
			n, err := strconv.ParseInt(hf.Value, 10, 64)
			if err != nil || n < 0 || (r.ContentLength >= 0 && n != r.ContentLength) {
				return errMalformed
			}
			r.ContentLength = n
		case "host":
			if r.Authority == "" {
				r.Authority = hf.Value
			}
		}
	}
	if r.EndStream && r.ContentLength > 0 {
		return errMalformed
	}
	r.known = true
	return nil
}

var errMalformed = errors.New("h2: malformed request")

// Shutdown sends GOAWAY on every connection, lets their streams finish,
// and closes them; bounded by ctx (then they are closed at once).
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.closing.Store(true)
	s.mu.Lock()
	scs := make([]*serverConn, 0, len(s.conns))
	for _, sc := range s.conns {
		scs = append(scs, sc)
	}
	s.mu.Unlock()
	for _, sc := range scs {
		sc.shutdown()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.pool.closeAll()
		s.workers.stop()
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		s.workers.stop()
		return ctx.Err()
	}
}

// Close closes every connection at once.
func (s *Server) Close() {
	s.init()
	s.closing.Store(true)
	s.mu.Lock()
	for c := range s.conns {
		go c.close(ErrServerClosed)
	}
	s.mu.Unlock()
	s.pool.closeAll()
	s.workers.quit()
}

// CloseIdleUpstreams closes pooled upstream connections with no stream.
func (s *Server) CloseIdleUpstreams() {
	s.init()
	s.pool.closeIdle()
}

// workers are the goroutines streams run on. A stream's goroutine grows
// its stack in the Router (the pipeline, telemetry) and a new goroutine
// per stream paid for that growth every time (copystack, newproc: 9-11%
// of a sidecar's CPU at max on grpc-weft); a worker that finished a
// stream waits a while for the next one, keeping its stack. At most
// maxIdleWorkers wait, each for at most workerIdle; quit ends them.
type workers struct {
	jobs     chan job // unbuffered: a send succeeds only into a waiting worker
	idle     atomic.Int32
	done     chan struct{}
	quitOnce sync.Once
	wg       sync.WaitGroup
}

type job struct {
	sc *serverConn
	ss *serverStream
}

const (
	maxIdleWorkers = 64
	workerIdle     = 10 * time.Second
)

func (w *workers) init() {
	w.jobs, w.done = make(chan job), make(chan struct{})
}

// start runs ss on a waiting worker, or a new one.
func (w *workers) start(sc *serverConn, ss *serverStream) {
	select {
	case w.jobs <- job{sc, ss}:
	default:
		w.wg.Add(1)
		go w.work(sc, ss)
	}
}

func (w *workers) work(sc *serverConn, ss *serverStream) {
	defer w.wg.Done()
	var t *time.Timer
	head := time.NewTimer(time.Hour)
	head.Stop()
	for {
		ss.timer = head
		sc.run(ss)
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		if t == nil {
			t = time.NewTimer(workerIdle)
			defer t.Stop()
		} else {
			t.Reset(workerIdle)
		}
		select {
		case j := <-w.jobs:
			w.idle.Add(-1)
			sc, ss = j.sc, j.ss
		case <-t.C:
			w.idle.Add(-1)
			return
		case <-w.done:
			w.idle.Add(-1)
			return
		}
	}
}

// quit ends the waiting workers; those running a stream end after it.
func (w *workers) quit() { w.quitOnce.Do(func() { close(w.done) }) }

// stop quits and waits for every worker.
func (w *workers) stop() {
	w.quit()
	w.wg.Wait()
}
