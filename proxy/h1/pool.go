package h1

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
	dead     bool // removed from the map by sweep
	lastUsed time.Time

	// freed, made by a get that found no idle connection and dials with a
	// DialWait, is closed by the next put: a dial still waiting for its
	// turn then gives up and the request takes the returned connection.
	freed chan struct{}
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
	sweeps sync.Mutex // held by a running sweep
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
func (u *upstreams) get(addr string, check bool) (*upConn, error) {
	hp := u.host(addr)
	now := time.Now()
	var nc net.Conn
	var err error
	for tries := 0; ; tries++ {
		hp.mu.Lock()
		hp.lastUsed = now
		n := len(hp.idle)
		if n == 0 {
			var freed chan struct{}
			if u.dialWait != nil && tries < maxFreedTries {
				if hp.freed == nil {
					hp.freed = make(chan struct{})
				}
				freed = hp.freed
			}
			hp.mu.Unlock()
			if freed == nil {
				nc, err = u.dialRaw(addr)
				break
			}
			nc, err = u.dialWait(addr, freed)
			if err != nil && isClosed(freed) {
				continue // a connection came back while the dial waited (or failed): take it
			}
			break
		}
		uc := hp.idle[n-1]
		hp.idle[n-1] = nil
		hp.idle = hp.idle[:n-1]
		hp.mu.Unlock()
		if now.Sub(uc.idleSince) >= u.lim.UpstreamIdle || (check && !uc.live()) {
			uc.close()
			continue
		}
		uc.reused = true
		uc.acquire()
		return uc, nil
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
	uc.in.src = nc
	uc.acquire()
	return uc, nil
}

// put pools a connection whose exchange ended cleanly, or closes it.
func (u *upstreams) put(uc *upConn) {
	uc.release()
	hp := uc.hp
	now := time.Now()
	uc.idleSince = now
	hp.mu.Lock()
	if hp.dead || u.closed.Load() || len(hp.idle) >= u.lim.MaxIdlePerUpstream {
		hp.mu.Unlock()
		uc.nc.Close()
		return
	}
	hp.idle = append(hp.idle, uc)
	hp.lastUsed = now
	if hp.freed != nil {
		close(hp.freed)
		hp.freed = nil
	}
	hp.mu.Unlock()
	u.arm()
}

// maxFreedTries bounds how often one get goes back to the idle stack after
// a freed dial (each time another request took the connection first);
// then it dials without giving way.
const maxFreedTries = 8

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
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
	u.closeIdle()
}
