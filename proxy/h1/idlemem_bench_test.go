package h1

import (
	"net"
	"runtime"
	"testing"
	"time"
)

// BenchmarkIdleConnMemory opens 1,000 kept-alive connections to the
// engine (one request each, then idle past parkAfter) and reports the Go
// heap and stacks in use per connection, both ends of each connection
// included (the client end here costs its net.TCPConn and netFD, no
// goroutine). It measures memory, not time: run it with -benchtime 1x.
//
//	go test -run XXX -bench IdleConnMemory -benchtime 1x ./proxy/h1/
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 1000
	be := newRawBackend(b, 1024)
	s := &Server{Router: &fixedRouter{addr: be.addr()}}
	addr := newEngine(b, s)
	conns := make([]*rawClient, 0, n)
	var before, after runtime.MemStats
	read := func(m *runtime.MemStats) {
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(m)
	}
	for range b.N {
		rc := newRawClient(b, addr, benchRequest) // warm the pools
		rc.roundTrip()
		time.Sleep(parkAfter + 500*time.Millisecond)
		read(&before)
		shared := make([]byte, 64<<10) // one read buffer for every client end
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			rc := &rawClient{c: c, req: []byte(benchRequest), buf: shared}
			if st, err := rc.roundTrip(); st != 200 || err != nil {
				b.Fatal(st, err)
			}
			rc.r, rc.w = 0, 0
			conns = append(conns, rc)
		}
		time.Sleep(parkAfter + 500*time.Millisecond)
		read(&after)
		for _, c := range conns {
			c.c.Close()
		}
		conns = conns[:0]
	}
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/n, "heap-B/conn")
	b.ReportMetric(float64(int64(after.StackInuse)-int64(before.StackInuse))/n, "stack-B/conn")
}
