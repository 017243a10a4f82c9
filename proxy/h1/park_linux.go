//go:build linux

package h1

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parking idle connections without a goroutine.
//
// A kept-alive connection idle for parkAfter (its read buffer already given
// back, see awaitRequest) has its goroutine end: the connection is
// registered with one epoll instance per Server (EPOLLIN|EPOLLRDHUP|
// EPOLLONESHOT on the socket's fd, beside the Go netpoller's own
// registration, which epoll allows) and one watcher goroutine waits on it
// for all of them. When a parked connection becomes readable the watcher
// starts a goroutine that serves it through the normal net.Conn again;
// when the peer closed it with nothing sent it is closed and freed on the
// watcher; its idle timeout is enforced by the watcher's sweep (a wait
// bounded by the earliest deadline, batched by parkTick), not a timer per
// connection. What a parked connection still holds is its socket, netFD and
// a 64-byte slot: no goroutine, no stack, no conn (it goes back to
// connPool and is taken again when the connection is used). With 2,000
// idle client connections (go run ./bench/idleconns, against the binary
// before this in the same run) the client sidecar's stacks in use grew by
// 0.2 MiB instead of 4.1, its Go heap by 5.1 instead of 8.4 MiB (2.7
// instead of 8.5 after two forced GCs), its RSS by 17.6 instead of 23.1
// MiB (9.8 instead of 24.8 after the GCs: most of what is left is garbage
// from opening them that no collection was due to take back yet). The
// cost is one epoll_ctl per idle period longer than parkAfter and one
// goroutine start (and a conn from connPool) when the connection is used
// again; a connection busier than one request a second never parks.
//
// Only connections with an fd whose every byte read so far is in c.in are
// parked (c.raw is set, from the net.Conn's own SyscallConn): a tls.Conn
// offers none and may hold decrypted or undecrypted bytes the fd no
// longer shows, so TLS connections are never parked (nor are ones behind
// a wrapper that hides SyscallConn, as the sidecar's inbound listener's
// does). Connections handed to the Fallback (Upgrade, CONNECT, h2c) leave
// the engine before any idle wait, so a tunnel is never parked either.

// parkTick batches idle-timeout closes: the watcher wakes at the earliest
// deadline plus parkTick, closing everything due by then in one sweep, so
// a connection closes at most parkTick after its idle timeout.
const parkTick = 100 * time.Millisecond

// epollPark says parked connections wait without a goroutine, so a
// connection may park again without serving a request in between.
const epollPark = true

// evWake is the eventfd's epoll data: it wakes the watcher for a shorter
// deadline or to stop.
const evWake = -1

// parker is a Server's parked connections and the watcher that serves
// them. Its zero value is ready; the epoll instance and the watcher start
// at the first park and stop at Shutdown (closeParked).
type parker struct {
	mu                      sync.Mutex
	started, closed, failed bool
	epfd, evfd              int
	// epf holds epfd for the runtime's netpoller (an epoll fd is itself
	// readable when it has events): the watcher waits there, never in a
	// blocking epoll_wait, which would hold the only P (GOMAXPROCS=1) in
	// a syscall until sysmon took it back — up to 10 ms of every other
	// request's time (make bench saw a +6–13 ms p99 from it).
	epf   *os.File
	epraw syscall.RawConn
	done  chan struct{} // closed when the watcher returns

	slots []parkSlot
	free  []int32
	n     int       // parked connections
	next  time.Time // no parked deadline is earlier (it may be stale: earlier)
	// waiting: the watcher is in (or about to enter) EpollWait, until
	// wakeAt (zero: no timeout).
	waiting bool
	wakeAt  time.Time
	due     []parkSlot // the sweep's, reused
}

// parkSlot is one parked connection: what of its conn outlives the park
// (the conn itself goes back to connPool, 1.4 KiB and its field arrays,
// and comes from it again when the connection is used). gen tells an
// event for it from one for an earlier occupant of the slot.
type parkSlot struct {
	nc     net.Conn // nil: the slot is free
	raw    syscall.RawConn
	served int
	until  time.Time
	gen    uint32
}

// parkArmHook, set by tests only, runs just before a connection is armed.
var parkArmHook atomic.Pointer[func(c *conn)]

// parkState is a conn's part in parking: whether its fd is in the epoll
// set (then a new park is an EPOLL_CTL_MOD re-arming the one-shot entry).
type parkState struct{ added bool }

// unpark makes a conn for a connection taken from its slot, tracked again,
// to be served by a new goroutine.
func (s *Server) unpark(sl parkSlot) *conn {
	c := newConn(s, sl.nc)
	// The idle wait goes on to the same end (IdleTimeout or, before the
	// first request, ReadHeaderTimeout).
	c.served, c.idleUntil, c.parked = sl.served, sl.until, true
	c.pk.added = true
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return c
}

// parkConn parks c, which waits for a request with nothing buffered, and
// reports whether it did: then the connection belongs to the watcher, c
// is back in connPool and the calling goroutine must not touch it again. It declines (and c stays the
// caller's) after Shutdown, for a connection without an fd, or when epoll
// cannot be used.
func (s *Server) parkConn(c *conn) bool {
	p := &s.park
	if c.raw == nil {
		return false
	}
	p.mu.Lock()
	if p.closed || p.failed || s.inShutdown.Load() || !p.started && !p.start(s) {
		p.mu.Unlock()
		return false
	}
	var i int32
	if k := len(p.free); k > 0 {
		i, p.free = p.free[k-1], p.free[:k-1]
	} else {
		i = int32(len(p.slots))
		p.slots = append(p.slots, parkSlot{})
	}
	sl := &p.slots[i]
	sl.gen++
	// p.mu is held across the epoll_ctl: an event that fires at once (bytes
	// that came while parking) waits for the lock, so the watcher finds
	// the slot filled.
	if h := parkArmHook.Load(); h != nil {
		(*h)(c)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: i, Pad: int32(sl.gen)}
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		op := unix.EPOLL_CTL_ADD
		if c.pk.added {
			op = unix.EPOLL_CTL_MOD
		}
		err = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		if err == unix.ENOENT && op == unix.EPOLL_CTL_MOD {
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if cerr != nil || err != nil {
		p.free = append(p.free, i)
		p.mu.Unlock()
		return false
	}
	sl.nc, sl.raw, sl.served, sl.until = c.nc, c.raw, c.served, c.idleUntil
	p.n++
	if p.n == 1 || sl.until.Before(p.next) {
		p.next = sl.until
	}
	if p.waiting && (p.wakeAt.IsZero() || sl.until.Before(p.wakeAt)) {
		p.waiting = false
		p.wake()
	}
	p.mu.Unlock()
	// The slot holds the connection now (an event may already be serving
	// it on a conn of its own): c goes back to the pool, untracked.
	s.untrack(c)
	c.free()
	return true
}

// start creates the epoll instance and starts the watcher; p.mu is held.
func (p *parker) start(s *Server) bool {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		p.failed = true
		s.log.Warn("idle connections keep their goroutine: epoll unavailable", "err", err)
		return false
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err == nil {
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: evWake})
		if err != nil {
			unix.Close(evfd)
		}
	}
	if err != nil {
		unix.Close(epfd)
		p.failed = true
		s.log.Warn("idle connections keep their goroutine: eventfd unavailable", "err", err)
		return false
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		p.failed = true
		s.log.Warn("idle connections keep their goroutine: epoll fd not pollable", "err", err)
		return false
	}
	epf := os.NewFile(uintptr(epfd), "weft-park-epoll")
	raw, err := epf.SyscallConn()
	if err != nil {
		epf.Close()
		unix.Close(evfd)
		p.failed = true
		s.log.Warn("idle connections keep their goroutine: epoll fd not pollable", "err", err)
		return false
	}
	p.epfd, p.evfd, p.epf, p.epraw, p.started = epfd, evfd, epf, raw, true
	p.done = make(chan struct{})
	go p.watch(s)
	return true
}

// wake makes the watcher's EpollWait return.
func (p *parker) wake() {
	one := [8]byte{1}
	unix.Write(p.evfd, one[:])
}

// watch serves parked connections' events and idle timeouts until
// closeParked.
func (p *parker) watch(s *Server) {
	defer close(p.done)
	events := make([]unix.EpollEvent, 64)
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		p.wakeAt = time.Time{}
		if p.n > 0 {
			p.wakeAt = p.next.Add(parkTick)
		}
		p.waiting = true
		wakeAt := p.wakeAt
		p.mu.Unlock()
		n, err := p.wait(events, wakeAt)
		p.mu.Lock()
		p.waiting = false
		p.mu.Unlock()
		if err != nil {
			// Not expected on a valid epoll fd; parked connections are still
			// closed by closeParked, and none parks from now on.
			s.log.Error("idle connection watcher failed; closing parked connections", "err", err)
			p.mu.Lock()
			p.failed = true
			p.mu.Unlock()
			p.closeAll(s)
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == evWake {
				var b [8]byte
				unix.Read(p.evfd, b[:])
				continue
			}
			p.event(s, ev)
		}
		p.sweep(s)
	}
}

// wait returns the ready events, waiting in the netpoller until the epoll
// fd is readable or until wakeAt (zero: no limit; then n is 0).
func (p *parker) wait(events []unix.EpollEvent, wakeAt time.Time) (n int, err error) {
	_ = p.epf.SetReadDeadline(wakeAt)
	var werr error
	rerr := p.epraw.Read(func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), events, 0) // never blocks
		if werr == unix.EINTR || (werr == nil && n == 0) {
			n, werr = 0, nil
			return false // nothing yet: wait for readability
		}
		return true
	})
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		return 0, nil
	}
	if rerr != nil {
		return 0, rerr
	}
	return n, werr
}

// event takes the parked connection an event is for and serves it again,
// or closes it when the peer closed it without sending anything.
func (p *parker) event(s *Server, ev unix.EpollEvent) {
	p.mu.Lock()
	sl, ok := p.take(ev.Fd, uint32(ev.Pad))
	p.mu.Unlock()
	if !ok {
		return
	}
	if ev.Events&unix.EPOLLERR != 0 || ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 && !hasData(sl.raw) {
		s.closeParkedConn(sl)
		return
	}
	go s.serveConn(s.unpark(sl))
}

// hasData reports whether bytes wait on c's socket (a request sent just
// before a half-close is still served).
func hasData(raw syscall.RawConn) bool {
	var one [1]byte
	n := 0
	raw.Control(func(fd uintptr) {
		n, _, _ = unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	})
	return n > 0
}

// take empties slot i if the slot's generation is gen, returning what it
// held; p.mu is held.
func (p *parker) take(i int32, gen uint32) (parkSlot, bool) {
	if i < 0 || int(i) >= len(p.slots) {
		return parkSlot{}, false
	}
	sl := &p.slots[i]
	if sl.nc == nil || sl.gen != gen {
		return parkSlot{}, false
	}
	out := *sl
	*sl = parkSlot{gen: sl.gen}
	p.free = append(p.free, i)
	p.n--
	return out, true
}

// sweep closes the parked connections whose idle timeout has passed.
func (p *parker) sweep(s *Server) {
	now := time.Now()
	p.mu.Lock()
	if p.n == 0 || now.Before(p.next) {
		p.mu.Unlock()
		return
	}
	due := p.due[:0]
	next := time.Time{}
	for i := range p.slots {
		sl := &p.slots[i]
		if sl.nc == nil {
			continue
		}
		if !now.Before(sl.until) {
			out, _ := p.take(int32(i), sl.gen)
			due = append(due, out)
		} else if next.IsZero() || sl.until.Before(next) {
			next = sl.until
		}
	}
	p.next = next
	p.mu.Unlock()
	for i, sl := range due {
		s.closeParkedConn(sl)
		due[i] = parkSlot{}
	}
	p.due = due[:0]
}

// closeParked stops parking, stops the watcher and closes every parked
// connection; Shutdown calls it.
func (s *Server) closeParked() {
	p := &s.park
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	started := p.started
	if started {
		p.wake()
	}
	p.mu.Unlock()
	if !started {
		return
	}
	<-p.done
	p.closeAll(s)
	p.epf.Close() // closes epfd
	unix.Close(p.evfd)
}

// closeAll closes every parked connection.
func (p *parker) closeAll(s *Server) {
	p.mu.Lock()
	var all []parkSlot
	for i := range p.slots {
		if sl, ok := p.take(int32(i), p.slots[i].gen); ok {
			all = append(all, sl)
		}
	}
	p.mu.Unlock()
	for _, sl := range all {
		s.closeParkedConn(sl)
	}
}

// closeParkedConn closes a connection taken from its slot; it was the last
// thing a connection goroutine's s.wg count stood for.
func (s *Server) closeParkedConn(sl parkSlot) {
	sl.nc.Close()
	s.wg.Done()
}
