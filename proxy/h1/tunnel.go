package h1

import (
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tunnelStats counts a Server's tunnels, by kind (0 Upgrade, 1 CONNECT).
type tunnelStats struct {
	opened [2]atomic.Int64
	open   atomic.Int64
}

// TunnelStats are a Server's tunnel counts.
type TunnelStats struct {
	Upgrades, Connects int64 // opened since the start
	Open               int64
}

// TunnelStats returns the tunnels opened so far and those open now.
func (s *Server) TunnelStats() TunnelStats {
	t := &s.tunnels
	return TunnelStats{Upgrades: t.opened[0].Load(), Connects: t.opened[1].Load(), Open: t.open.Load()}
}

// dialRaw opens a connection that will carry a tunnel: never a pooled one
// (those carry HTTP), never pooled after. get uses it too when there is no
// DialWait.
func (u *upstreams) dialRaw(addr string) (net.Conn, error) {
	if u.dialWait != nil {
		return u.dialWait(addr, nil)
	}
	if u.dial != nil {
		return u.dial(addr)
	}
	return u.dialer.Dial("tcp", addr)
}

// tunnelHalf is one direction of a tunnel.
type tunnelHalf struct {
	src, dst net.Conn
	buf      []byte
	n        int64
	last     atomic.Int64 // UnixNano of the last read that brought bytes
}

// tunnel joins two connections. Each direction is a plain read/write loop
// in user space through a 16 KiB buffer the exchange already holds, not
// splice(2) (net.TCPConn.ReadFrom): the mesh's tunnels run over mTLS or
// over connections wrapped for the listener's limits and the caller's
// identity, where the kernel cannot splice anyway, and a loop of our own
// gives exact write timeouts and byte counts as they pass.
//
// Timeouts: nothing moved either way for Limits.TunnelIdle closes both
// (one timer per tunnel, re-armed from the last read, not a deadline per
// read: Shutdown's wake-up deadlines must not be overwritten); a write
// that makes no progress for Limits.WriteTimeout closes both (a peer that
// stops reading).
type tunnel struct {
	a, b    net.Conn
	ab, ba  tunnelHalf
	idle    time.Duration
	write   time.Duration
	aborted atomic.Bool
	timer   *time.Timer
	start   time.Time
}

// runTunnel carries bytes between the downstream connection and up until
// both directions end (each half-closes its destination when its source
// ends) or the tunnel is cut. It returns the bytes carried each way.
func (c *conn) runTunnel(up net.Conn, bufDown, bufUp []byte) (sent, received int64) {
	lim := &c.s.lim
	t := &tunnel{a: c.nc, b: up, idle: lim.TunnelIdle, write: lim.WriteTimeout, start: time.Now()}
	t.ab = tunnelHalf{src: c.nc, dst: up, buf: bufDown}
	t.ba = tunnelHalf{src: up, dst: c.nc, buf: bufUp}
	now := t.start.UnixNano()
	t.ab.last.Store(now)
	t.ba.last.Store(now)
	// Deadlines left from the exchange (a response idle timeout) go.
	c.nc.SetDeadline(time.Time{})
	up.SetDeadline(time.Time{})
	t.timer = time.AfterFunc(math.MaxInt64, t.checkIdle) // armed once t.timer is set
	t.timer.Reset(t.idle)
	defer t.timer.Stop()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t.copy(&t.ba)
	}()
	t.copy(&t.ab)
	wg.Wait()
	return t.ab.n, t.ba.n
}

// checkIdle runs when the idle timer fires: it cuts a tunnel quiet both
// ways for the idle timeout, or re-arms for the rest of it.
func (t *tunnel) checkIdle() {
	last := time.Unix(0, max(t.ab.last.Load(), t.ba.last.Load()))
	if left := t.idle - time.Since(last); left > 0 {
		t.timer.Reset(left)
		return
	}
	t.abort()
}

// abort wakes both directions with a past deadline; they see aborted and
// end. The connections are closed by their owners.
func (t *tunnel) abort() {
	if t.aborted.Swap(true) {
		return
	}
	t.a.SetDeadline(aLongTimeAgo)
	t.b.SetDeadline(aLongTimeAgo)
}

func (t *tunnel) copy(h *tunnelHalf) {
	for {
		n, err := h.src.Read(h.buf)
		if n > 0 {
			now := time.Now()
			h.last.Store(now.UnixNano())
			if t.aborted.Load() {
				return
			}
			h.dst.SetWriteDeadline(now.Add(t.write))
			w, werr := h.dst.Write(h.buf[:n])
			h.n += int64(w)
			if werr != nil {
				t.abort()
				return
			}
		}
		switch {
		case err == nil:
		case err == io.EOF && !t.aborted.Load():
			// A half-close: the other direction goes on.
			closeWrite(h.dst)
			return
		default:
			t.abort()
			return
		}
	}
}

// closeWrite half-closes c when it can (TCP, TLS), else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
