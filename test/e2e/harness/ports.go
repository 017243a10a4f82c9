package harness

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Ports come from [portLow, portHigh), below Linux's ephemeral range
// (32768+), so outgoing connections' source ports never take them.
const (
	portLow  = 20000
	portHigh = 32000
)

var ports = struct {
	sync.Mutex
	next, end int // the current block: [next, end)
	used      map[int]bool
	locks     []*os.File // held until the process exits
}{used: map[int]bool{}}

// blockSize ports make one block. The suites run as parallel processes;
// each takes blocks of its own, locked with flock on a file per block, so
// two processes never probe and hand out the same port (a probe only says
// the port is free at that instant, for every process alike).
const blockSize = 250

// takeBlockLocked claims a block no other running process holds, starting
// the search at a random one; false when all are taken.
func takeBlockLocked() bool {
	dir := filepath.Join(os.TempDir(), "weft-e2e-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false
	}
	n := (portHigh - portLow) / blockSize
	start := rand.IntN(n)
	for i := range n {
		b := (start + i) % n
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("block-%d", b)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		ports.locks = append(ports.locks, f)
		ports.next, ports.end = portLow+b*blockSize, portLow+(b+1)*blockSize
		return true
	}
	return false
}

// FreePort returns a loopback port that is free now, was never handed out
// before in this run, and is in a block no other test process uses, so a
// port a test has let go of is not reused by another test running in
// parallel.
func FreePort(t testing.TB) int {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	for {
		for ports.next < ports.end {
			p := ports.next
			ports.next++
			if ports.used[p] {
				continue
			}
			ln, err := net.Listen("tcp", Addr(p))
			if err != nil {
				continue
			}
			ln.Close()
			ports.used[p] = true
			return p
		}
		if !takeBlockLocked() {
			t.Fatal("no free loopback port: every port block is held by another test process")
			return 0
		}
	}
}

// FreeAddr is the loopback address of a FreePort.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return Addr(FreePort(t))
}

// Addr is the loopback address of port.
func Addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// Dialable reports whether something accepts TCP connections at addr.
func Dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
