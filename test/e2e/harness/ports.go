package harness

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
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
	next int
	used map[int]bool
}{used: map[int]bool{}}

// FreePort returns a loopback port that is free now and was never handed
// out before in this run, so a port a test has let go of is not reused by
// another test running in parallel.
func FreePort(t testing.TB) int {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	if ports.next == 0 {
		// A random start: the suites run as parallel processes, each
		// with its own sequence.
		ports.next = portLow + rand.IntN(10000)
	}
	for range portHigh - portLow {
		p := ports.next
		ports.next++
		if ports.next >= portHigh {
			ports.next = portLow
		}
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
	t.Fatal("no free loopback port")
	return 0
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
