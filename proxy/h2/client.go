package h2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// pool holds the upstream connections, several per address when one's
// MAX_CONCURRENT_STREAMS is reached. A stream is opened under the
// address's lock, so a burst of new streams dials one connection, not one
// each.
type pool struct {
	lim  *Limits
	dial func(ctx context.Context, addr string) (net.Conn, error)
	mu   sync.Mutex
	m    map[string]*hostConns
}

type hostConns struct {
	mu    sync.Mutex
	conns []*conn
	ids   map[*conn]*uint32 // next stream id per connection
}

func (p *pool) init(lim *Limits, dial func(ctx context.Context, addr string) (net.Conn, error)) {
	p.lim, p.dial, p.m = lim, dial, map[string]*hostConns{}
}

func (p *pool) host(addr string) *hostConns {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.m[addr]
	if h == nil {
		h = &hostConns{ids: map[*conn]*uint32{}}
		p.m[addr] = h
	}
	return h
}

// open starts a stream to addr with the request head fields (END_STREAM
// when end). An error wrapping ErrRefused means nothing was sent.
func (p *pool) open(ctx context.Context, addr string, fields []hpack.HeaderField, end bool) (*conn, *stream, error) {
	h := p.host(addr)
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := 0; i < len(h.conns); i++ {
		c := h.conns[i]
		st, err := c.openStream(h.ids[c], fields, end)
		if err == errFull {
			continue
		}
		if err != nil {
			// Closed or going away: forget it.
			delete(h.ids, c)
			h.conns = append(h.conns[:i], h.conns[i+1:]...)
			i--
			continue
		}
		return c, st, nil
	}
	if len(h.conns) >= maxConnsPerHost {
		return nil, nil, fmt.Errorf("%w: %d connections to %s, each at its stream limit", ErrRefused, len(h.conns), addr)
	}
	c, err := p.connect(ctx, addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	id := uint32(1)
	h.ids[c] = &id
	h.conns = append(h.conns, c)
	c.onClose = func() { p.forget(addr, h, c) }
	go c.clientLoop()
	st, err := c.openStream(&id, fields, end)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return c, st, nil
}

// maxConnsPerHost bounds the connections to one upstream address.
const maxConnsPerHost = 16

var errFull = errors.New("h2: connection at its stream limit")

// openStream allocates the next id and writes the head. ids are assigned
// and HEADERS written under wmu, so they go out in order.
func (c *conn) openStream(next *uint32, fields []hpack.HeaderField, end bool) (*stream, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.closed || c.goAway || *next > 1<<31-1 {
		c.mu.Unlock()
		return nil, ErrRefused
	}
	if uint32(len(c.streams)) >= c.peerMaxStreams {
		c.mu.Unlock()
		return nil, errFull
	}
	st := c.newStream(*next)
	*next += 2
	st.head = make(chan *http2.MetaHeadersFrame, 1)
	c.streams[st.id] = st
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	if err := c.writeHeadersLocked(st.id, end, fields); err != nil {
		return nil, ErrRefused
	}
	if end {
		c.endLocal(st)
	}
	c.kick()
	return st, nil
}

// connect dials addr and starts the connection: preface, SETTINGS, the
// larger connection window; the caller starts its read loop.
func (p *pool) connect(ctx context.Context, addr string) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.lim.DialTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	if p.dial != nil {
		nc, err = p.dial(ctx, addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	c := newConn(nc, p.lim, false)
	c.wmu.Lock()
	c.bw.WriteString(http2.ClientPreface)
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(p.lim.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: p.lim.MaxHeaderListSize},
	)
	c.fr.WriteWindowUpdate(0, uint32(p.lim.ConnWindow-initialWindow))
	err = c.bw.Flush()
	c.wmu.Unlock()
	if err != nil {
		c.close(err) // ends its flusher too
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	c.recvWin = p.lim.ConnWindow
	c.idleTimer = time.AfterFunc(p.lim.UpstreamIdle, func() {
		c.mu.Lock()
		idle := len(c.streams) == 0
		c.mu.Unlock()
		if idle {
			c.goAwayWrite(http2.ErrCodeNo, 0, "idle")
			c.close(nil)
		}
	})
	return c, nil // the caller starts clientLoop
}

// errGoAway fails the streams a GOAWAY did not cover: never processed.
var errGoAway = fmt.Errorf("%w: GOAWAY", ErrRefused)

func (c *conn) clientLoop() {
	defer c.close(nil)
	for {
		f, err := c.fr.ReadFrame()
		if err == nil {
			err = c.clientFrame(f)
		}
		if err == nil {
			continue
		}
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case errors.As(err, &se):
			c.mu.Lock()
			st := c.streams[se.StreamID]
			c.mu.Unlock()
			if st != nil {
				c.writeReset(st, se.Code)
			}
			continue
		case errors.As(err, &ce):
			c.goAwayWrite(http2.ErrCode(ce), 0, "")
		}
		c.close(fmt.Errorf("%w: %w", ErrUpstreamReset, err))
		return
	}
}

func (c *conn) clientFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		c.mu.Lock()
		st := c.streams[f.StreamID]
		c.mu.Unlock()
		if st == nil {
			return nil // a stream we reset
		}
		if !st.gotHeaders {
			status := f.PseudoValue("status")
			if len(status) == 3 && status[0] == '1' && status != "101" {
				return nil // interim
			}
			st.gotHeaders = true
			st.head <- f
			if f.StreamEnded() {
				c.remoteEnded(st, nil)
			}
			return nil
		}
		if !f.StreamEnded() {
			return streamErr(f.StreamID, http2.ErrCodeProtocol)
		}
		c.remoteEnded(st, f.RegularFields())
	case *http2.DataFrame:
		c.mu.Lock()
		st := c.streams[f.StreamID]
		c.mu.Unlock()
		if st == nil || !st.gotHeaders {
			if err := c.onData(nil, f); err != nil {
				return err
			}
			c.consumed(nil, int(f.Length))
			if st != nil {
				return streamErr(f.StreamID, http2.ErrCodeProtocol)
			}
			return nil
		}
		if err := c.onData(st, f); err != nil {
			return err
		}
		st.in.push(f.Data())
		if f.StreamEnded() {
			c.remoteEnded(st, nil)
		}
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		st := c.streams[f.StreamID]
		c.mu.Unlock()
		if st != nil {
			var err error = resetError{f.ErrCode}
			if f.ErrCode == http2.ErrCodeRefusedStream {
				err = fmt.Errorf("%w: REFUSED_STREAM", ErrRefused)
			}
			c.resetStream(st, err, false)
		}
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		return c.onPing(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goAway, c.goAwayID = true, f.LastStreamID
		var gone []*stream
		for id, st := range c.streams {
			if id > f.LastStreamID {
				gone = append(gone, st)
			}
		}
		empty := len(c.streams) == 0
		c.mu.Unlock()
		for _, st := range gone {
			c.resetStream(st, errGoAway, false)
		}
		if empty {
			return errGoAway
		}
	case *http2.PushPromiseFrame:
		return connErr(http2.ErrCodeProtocol)
	}
	return nil
}

func (c *conn) remoteEnded(st *stream, trailers []hpack.HeaderField) {
	st.in.finish(trailers)
	c.mu.Lock()
	st.remoteEnd = true
	c.maybeRemove(st)
	c.mu.Unlock()
}

// forget drops a closed connection, and its address once it has none, so
// the pool holds only live connections as instances come and go.
func (p *pool) forget(addr string, h *hostConns, c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.ids, c)
	for i, x := range h.conns {
		if x == c {
			h.conns = append(h.conns[:i], h.conns[i+1:]...)
			break
		}
	}
	if len(h.conns) == 0 && p.m[addr] == h {
		delete(p.m, addr)
	}
}

func (p *pool) all() []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*conn
	for _, h := range p.m {
		h.mu.Lock()
		out = append(out, h.conns...)
		h.mu.Unlock()
	}
	return out
}

func (p *pool) closeAll() {
	if p.m == nil {
		return
	}
	for _, c := range p.all() {
		c.goAwayWrite(http2.ErrCodeNo, 0, "")
		c.close(nil)
	}
}

func (p *pool) closeIdle() {
	if p.m == nil {
		return
	}
	for _, c := range p.all() {
		c.mu.Lock()
		idle := len(c.streams) == 0
		c.mu.Unlock()
		if idle {
			c.close(nil)
		}
	}
}
