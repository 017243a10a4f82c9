package h2

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// BenchmarkH2Unary is one small gRPC-shaped call (100-byte request and
// response, grpc-status in trailers) from an h2c client through a proxy to
// an h2c backend, all on loopback in this process: the native engine
// against the net/http path it replaces (an h2c http.Server with
// httputil.ReverseProxy and an h2c Transport, as proxy.Outbound has).
// cpu-ns/op (the process's CPU time per call) and allocs/op include the
// client and the backend, the same in both; "direct" (no proxy) is that
// baseline, to subtract.
//
//	flock /work/wt/bench.lock go test -run '^$' -bench H2Unary -benchtime 3s ./proxy/h2/
func BenchmarkH2Unary(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 100)
	up := backend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.Write(payload)
		w.Header().Set("Grpc-Status", "0")
	}))
	native := listen(b, &Server{Router: &testRouter{addr: up}})
	u, _ := url.Parse("http://" + up)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = pr.In.Host }, Transport: tr}
	nethttp := backend(b, rp)
	for _, p := range []struct{ name, addr string }{{"direct", up}, {"native", native}, {"nethttp", nethttp}} {
		b.Run(p.name, func(b *testing.B) {
			c := client(p.addr)
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("POST", "http://svc/grpc.testing.TestService/UnaryCall", bytes.NewReader(payload))
					req.Header.Set("Content-Type", "application/grpc")
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.Trailer.Get("Grpc-Status") != "0" {
						b.Error("no grpc-status trailer")
						return
					}
				}
			})
			// CPU time, unlike ns/op, holds on a busy machine.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
