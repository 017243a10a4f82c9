package h1

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/weftmesh/weft/proxy/awaitreply"
)

// upConn is one upstream connection. It holds a read buffer only while in
// use: an idle pooled connection costs its socket and this struct.
type upConn struct {
	nc     net.Conn
	raw    syscall.RawConn // for the liveness peek; nil when nc has no fd
	peekFn func(fd uintptr) bool
	alive  bool // result of the last peek
	one    [1]byte

	in        inbuf
	blk       *block
	hp        *hostPool
	idleSince time.Time
	reused    bool // served an earlier request
	// fresh: dialled, or idle less than awaitFresh when taken: the
	// request's last write may wait for the reply (await.go).
	fresh bool
	// rdArmed: a header deadline is still set on nc (conn.roundTrip
	// leaves it when the response needed no read after its head).
	rdArmed bool

	aw awaitreply.Writer // a request's last write, waiting for the reply (await.go)
}

func (uc *upConn) acquire() {
	uc.blk = blockPool.Get().(*block)
	uc.in.buf, uc.in.r, uc.in.w, uc.in.n = uc.blk[:], 0, 0, 0
}

func (uc *upConn) release() {
	if uc.blk != nil {
		blockPool.Put(uc.blk)
	}
	uc.blk, uc.in.buf, uc.in.r, uc.in.w = nil, nil, 0, 0
}

func (uc *upConn) close() {
	uc.release()
	uc.nc.Close()
}

// live reports whether a pooled connection is still open and quiet. A peer
// that closed it while it sat idle (a restarted instance, an app's idle
// timeout, a draining sidecar) has left an EOF to read; one non-blocking
// read finds it, so the request goes on a fresh connection instead of
// failing. It costs one read syscall per reuse and no allocation (a read
// through net.Conn with an expired deadline would allocate its error).
func (uc *upConn) live() bool {
	if uc.raw == nil {
		return true
	}
	if err := uc.raw.Read(uc.peekFn); err != nil {
		return false
	}
	return uc.alive
}

// hostPool is one address's idle stack (LIFO: the most recently used
// connection is the one most likely still open, and the oldest ones age
// out at the bottom).
type hostPool struct {
	mu       sync.Mutex
	idle     []*upConn
	waiting  []chan dialed // requests that found no idle connection, oldest first
	dead     bool          // removed from the map by sweep
	lastUsed time.Time

	// dialing counts dialFor's under way: at least one per waiting request.
	// freed is closed by a put that served a waiting request, which leaves
	// one dial more than waiters: a dial still waiting for its turn (the
	// mTLS dialer's handshake slots, Server.DialWait) then gives way when
	// the others cover the waiters, and no handshake is spent on a
	// connection nobody asked for.
	dialing int
	freed   chan struct{}
}

// dialed is what a waiting request is handed: a connection another
// request gave back, a fresh one, or the dial's error.
type dialed struct {
	uc  *upConn
	err error
}

// upstreams is the engine's connection pool. The address map is an
// immutable snapshot swapped on change, so the per-request lookup takes no
// lock; a host's stack is locked only to push or pop.
type upstreams struct {
	lim    *Limits
	dialer net.Dialer
	dial   func(addr string) (net.Conn, error) // Server.Dial; nil: dialer
	m      atomic.Pointer[map[string]*hostPool]
	mu     sync.Mutex  // writers of m and armed; timer
	armed  atomic.Bool // the sweep timer is set or running
	timer  *time.Timer
	sweeps sync.Mutex     // held by a running sweep
	dials  sync.WaitGroup // dials under way (dialFor)
	closed atomic.Bool

	// dialWait is Server.DialWait (see hostPool.freed); nil: dial.
	dialWait func(addr string, freed <-chan struct{}) (net.Conn, error)
}

func (u *upstreams) init(lim *Limits) {
	u.lim = lim
	u.dialer = net.Dialer{Timeout: lim.DialTimeout}
	m := map[string]*hostPool{}
	u.m.Store(&m)
}

func (u *upstreams) host(addr string) *hostPool {
	if hp := (*u.m.Load())[addr]; hp != nil {
		return hp
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	old := *u.m.Load()
	if hp := old[addr]; hp != nil {
		return hp
	}
	m := make(map[string]*hostPool, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	hp := &hostPool{lastUsed: time.Now()}
	m[addr] = hp
	u.m.Store(&m)
	return hp
}

// get returns a pooled connection to addr or dials one. Its error is the
// dialer's (*net.OpError, Op "dial"). With check, a pooled connection is
// first found live (see live); without, a dead one is found by the request
// itself, which the caller then sends again on a checked connection: the
// check is one read syscall per reused connection, and a request that can
// be replayed does not need it (see conn.forward).
//
// A request that finds no idle connection starts a dial and takes whichever
// comes first: a connection another request gives back (put) or a dialed
// one; a dial that loses goes to the next waiting request or into the pool.
// In a burst (a client opening connections after a stall) the connections
// in use come back within a request's time, while a dial to a sidecar
// costs a TLS handshake (about 1 ms of CPU on the sidecars' one core, and
// the mTLS dialer runs at most max(2, CPUs) at a time per destination), so
// every request of the burst waited for its own handshake in that queue:
// 32 new client connections at once through a fresh weft pair, the last
// answer after 15-17 ms (HAProxy's pair: 3.5 ms), 64 after 29-32 ms (6.7).
// net/http's Transport races dials the same way.
func (u *upstreams) get(addr string, check bool) (*upConn, error) {
	uc, _, err := u.getAt(addr, check, time.Now())
	return uc, err
}

// getAt is get at now, the caller's clock reading; pooled reports that the
// connection came from the idle stack at once (no dial, no wait), so now
// is still the time it was in hand.
func (u *upstreams) getAt(addr string, check bool, now time.Time) (uc *upConn, pooled bool, err error) {
	hp := u.host(addr)
	for {
		hp.mu.Lock()
		hp.lastUsed = now
		n := len(hp.idle)
		if n == 0 {
			break // with hp.mu held: a put now hands its connection to us
		}
		uc = hp.idle[n-1]
		hp.idle[n-1] = nil
		hp.idle = hp.idle[:n-1]
		hp.mu.Unlock()
		if check && uc.rdArmed {
			// The liveness read must not fail on a past deadline.
			uc.nc.SetReadDeadline(time.Time{})
			uc.rdArmed = false
		}
		if now.Sub(uc.idleSince) >= u.lim.UpstreamIdle || (check && !uc.live()) {
			uc.close()
			continue
		}
		uc.reused = true
		uc.fresh = now.Sub(uc.idleSince) < awaitFresh
		uc.acquire()
		return uc, true, nil
	}
	w := make(chan dialed, 1)
	hp.waiting = append(hp.waiting, w)
	hp.dialing++
	hp.mu.Unlock()
	u.dials.Add(1)
	go u.dialFor(addr, hp)
	r := <-w
	if r.err != nil {
		return nil, false, r.err
	}
	// Dialled, or given back by a request that has just used it.
	r.uc.fresh = true
	r.uc.acquire()
	return r.uc, false, nil
}

// dialFor dials addr for hp's oldest waiting request, or for the pool when
// put has served them all meanwhile. Every waiting request has a dial of
// its own under way, so none waits on a put that may never come.
func (u *upstreams) dialFor(addr string, hp *hostPool) {
	defer u.dials.Done()
	var uc *upConn
	var err error
	for tries := 0; ; tries++ {
		var freed chan struct{}
		if u.dialWait != nil && tries < maxFreedTries {
			hp.mu.Lock()
			if hp.freed == nil {
				hp.freed = make(chan struct{})
			}
			freed = hp.freed
			hp.mu.Unlock()
		}
		uc, err = u.dialNew(addr, hp, freed)
		if err == nil || freed == nil || !isClosed(freed) {
			break
		}
		// It gave way (or failed) after a put served a waiter: done if
		// the other dials cover the requests still waiting.
		hp.mu.Lock()
		if hp.dialing-1 >= len(hp.waiting) {
			hp.dialing--
			hp.mu.Unlock()
			return
		}
		hp.mu.Unlock()
	}
	hp.mu.Lock()
	hp.dialing--
	w := hp.takeWaiter()
	hp.mu.Unlock()
	switch {
	case w != nil:
		w <- dialed{uc: uc, err: err}
	case err == nil:
		u.put(uc)
	}
}

// takeWaiter removes and returns the oldest waiting request's channel, or
// nil. hp.mu is held.
func (hp *hostPool) takeWaiter() chan dialed {
	if len(hp.waiting) == 0 {
		return nil
	}
	w := hp.waiting[0]
	n := copy(hp.waiting, hp.waiting[1:])
	hp.waiting[n] = nil
	hp.waiting = hp.waiting[:n]
	return w
}

// maxFreedTries bounds how often one dial gives way and starts again
// (each time a put served a waiter while more were waiting); then it dials
// without giving way.
const maxFreedTries = 8

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// dialNew opens a connection to addr for hp, without a buffer. With
// DialWait and freed, a dial still waiting for its turn may give up with
// an error once freed is closed.
func (u *upstreams) dialNew(addr string, hp *hostPool, freed chan struct{}) (*upConn, error) {
	var nc net.Conn
	var err error
	switch {
	case u.dialWait != nil && freed != nil:
		nc, err = u.dialWait(addr, freed)
	default:
		nc, err = u.dialRaw(addr)
	}
	if err != nil {
		return nil, err
	}
	uc := &upConn{nc: nc, hp: hp}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			uc.raw = raw
			uc.peekFn = uc.peek
		}
	}
	uc.aw.Init(nc)
	uc.in.src = nc
	return uc, nil
}

// put pools a connection whose exchange ended cleanly, or closes it.
func (u *upstreams) put(uc *upConn) {
	uc.release()
	hp := uc.hp
	now := time.Now()
	uc.idleSince = now
	hp.mu.Lock()
	if !u.closed.Load() {
		if w := hp.takeWaiter(); w != nil {
			hp.lastUsed = now
			if hp.freed != nil {
				close(hp.freed) // one dial more than waiters now
				hp.freed = nil
			}
			hp.mu.Unlock()
			// It has just served a request: as good as a checked one.
			uc.reused = true
			w <- dialed{uc: uc}
			return
		}
	}
	if hp.dead || u.closed.Load() || len(hp.idle) >= u.lim.MaxIdlePerUpstream {
		hp.mu.Unlock()
		uc.nc.Close()
		return
	}
	hp.idle = append(hp.idle, uc)
	hp.lastUsed = now
	hp.mu.Unlock()
	u.arm()
}

func (u *upstreams) sweepEvery() time.Duration {
	return max(u.lim.UpstreamIdle/2, 10*time.Millisecond)
}

// arm makes sure a sweep is coming. The lock-free check is enough: armed
// only turns false in sweep, under mu, when no address is left, and a
// connection is only pooled under an address still in the map.
func (u *upstreams) arm() {
	if u.armed.Load() {
		return
	}
	u.mu.Lock()
	if !u.armed.Load() && !u.closed.Load() {
		u.armed.Store(true)
		if u.timer == nil {
			u.timer = time.AfterFunc(u.sweepEvery(), u.sweep)
		} else {
			u.timer.Reset(u.sweepEvery())
		}
	}
	u.mu.Unlock()
}

// sweep closes connections idle for UpstreamIdle (which a busy address
// would never pop from the bottom of its stack) and forgets addresses
// unused that long, so endpoints that come and go do not pile up.
func (u *upstreams) sweep() {
	u.sweeps.Lock()
	defer u.sweeps.Unlock()
	now := time.Now()
	var expired []*upConn
	var gone []string
	for addr, hp := range *u.m.Load() {
		hp.mu.Lock()
		k := 0
		for k < len(hp.idle) && now.Sub(hp.idle[k].idleSince) >= u.lim.UpstreamIdle {
			k++
		}
		expired = append(expired, hp.idle[:k]...)
		n := copy(hp.idle, hp.idle[k:])
		clear(hp.idle[n:])
		hp.idle = hp.idle[:n]
		if n == 0 && now.Sub(hp.lastUsed) >= u.lim.UpstreamIdle {
			hp.dead = true
			gone = append(gone, addr)
		}
		hp.mu.Unlock()
	}
	for _, uc := range expired {
		uc.nc.Close()
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(gone) > 0 {
		old := *u.m.Load()
		m := make(map[string]*hostPool, len(old))
		for k, v := range old {
			m[k] = v
		}
		for _, k := range gone {
			delete(m, k)
		}
		u.m.Store(&m)
	}
	// Deciding under mu, where host adds addresses, means an address added
	// after this look is pooled into by a put that arms the timer again.
	if len(*u.m.Load()) > 0 && !u.closed.Load() {
		u.timer.Reset(u.sweepEvery())
	} else {
		u.armed.Store(false)
	}
}

// closeIdle closes every pooled connection; connections in use are pooled
// again when their exchange ends.
func (u *upstreams) closeIdle() {
	for _, hp := range *u.m.Load() {
		hp.mu.Lock()
		for i, uc := range hp.idle {
			uc.nc.Close()
			hp.idle[i] = nil
		}
		hp.idle = hp.idle[:0]
		hp.mu.Unlock()
	}
}

// shutdown stops pooling for good: connections in use are closed when
// their exchange ends.
func (u *upstreams) shutdown() {
	u.closed.Store(true)
	u.mu.Lock()
	if u.timer != nil {
		u.timer.Stop()
	}
	u.mu.Unlock()
	u.sweeps.Lock() // wait for a running sweep
	u.sweeps.Unlock()
	u.dials.Wait() // a dial that lost its race pools (here: closes) its connection
	u.closeIdle()
}
