package h1

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"
)

// rawBackend is an HTTP/1.1 server that answers every bodiless request
// with the same response and allocates nothing per request, so that
// allocation counts measure the proxy in between alone.
type rawBackend struct {
	ln    net.Listener
	resp  []byte
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newRawBackend(tb testing.TB, bodySize int) *rawBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), bodySize)
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(bodySize) + "\r\n\r\n")
	b := &rawBackend{ln: ln, resp: append(resp, body...), conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.serve()
	tb.Cleanup(b.close)
	return b
}

func (b *rawBackend) addr() string { return b.ln.Addr().String() }

func (b *rawBackend) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer c.Close()
			buf := make([]byte, 16<<10)
			n := 0
			for {
				m, err := c.Read(buf[n:])
				if err != nil {
					return
				}
				n += m
				for {
					i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
					if i < 0 {
						break
					}
					if _, err := c.Write(b.resp); err != nil {
						return
					}
					n = copy(buf, buf[i+4:n])
				}
				if n == len(buf) {
					return
				}
			}
		}()
	}
}

func (b *rawBackend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// rawClient sends one fixed request at a time on a keep-alive connection
// and reads Content-Length-framed responses, allocating nothing.
type rawClient struct {
	c    net.Conn
	req  []byte
	buf  []byte
	r, w int
}

func newRawClient(tb testing.TB, addr string, req string) *rawClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &rawClient{c: c, req: []byte(req), buf: make([]byte, 64<<10)}
}

var clHeader = []byte("\r\nContent-Length: ")

// roundTrip returns the status code.
func (rc *rawClient) roundTrip() (int, error) {
	if _, err := rc.c.Write(rc.req); err != nil {
		return 0, err
	}
	for {
		if i := bytes.Index(rc.buf[rc.r:rc.w], []byte("\r\n\r\n")); i >= 0 {
			head := rc.buf[rc.r : rc.r+i+2]
			j := bytes.Index(head, clHeader)
			if j < 0 || len(head) < 12 {
				return 0, errors.New("response without Content-Length")
			}
			v := head[j+len(clHeader):]
			v = v[:bytes.IndexByte(v, '\r')]
			n, err := strconv.Atoi(string(v))
			if err != nil {
				return 0, err
			}
			status, _ := strconv.Atoi(string(head[9:12]))
			end := rc.r + i + 4 + n
			for rc.w < end {
				if err := rc.read(); err != nil {
					return 0, err
				}
			}
			rc.r = end
			if rc.r == rc.w {
				rc.r, rc.w = 0, 0
			}
			return status, nil
		}
		if err := rc.read(); err != nil {
			return 0, err
		}
	}
}

func (rc *rawClient) read() error {
	if rc.w == len(rc.buf) {
		rc.w = copy(rc.buf, rc.buf[rc.r:rc.w])
		rc.r = 0
	}
	n, err := rc.c.Read(rc.buf[rc.w:])
	rc.w += n
	if n > 0 {
		return nil
	}
	return err
}

// fixedRouter sends everything to one address and adds x-weft-source, as
// the outbound does; it allocates nothing.
type fixedRouter struct {
	addr string
	set  []Field
}

func (r *fixedRouter) Route(req *Request, d *Decision) {
	d.Addr = r.addr
	d.Set = r.set
}
func (r *fixedRouter) Next(*Request, *Decision, error) bool { return false }
func (r *fixedRouter) Finish(*Request, *Decision, *Result)  {}

const benchRequest = "GET /orders/42?x=1 HTTP/1.1\r\nHost: orders\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"

func startEngine(tb testing.TB, s *Server) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ln)
	}()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

func benchClient(b *testing.B, addr string) {
	rc := newRawClient(b, addr, benchRequest)
	if st, err := rc.roundTrip(); err != nil || st != 200 {
		b.Fatalf("warm-up: %d %v", st, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if st, err := rc.roundTrip(); err != nil || st != 200 {
			b.Fatalf("%d %v", st, err)
		}
	}
}

// BenchmarkForward: client → h1.Server → backend, 1 KiB response, one
// keep-alive connection each way.
func BenchmarkForward(b *testing.B) {
	be := newRawBackend(b, 1024)
	s := &Server{Router: &fixedRouter{addr: be.addr(), set: []Field{{Name: []byte("X-Weft-Source"), Value: []byte("bench")}}}}
	benchClient(b, startEngine(b, s))
}

// BenchmarkForwardReverseProxy is the same through net/http's server,
// httputil.ReverseProxy and http.Transport, configured as the sidecar's
// outbound is today.
func BenchmarkForwardReverseProxy(b *testing.B) {
	be := newRawBackend(b, 1024)
	target, _ := url.Parse("http://" + be.addr())
	tr := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	defer tr.CloseIdleConnections()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("X-Weft-Source", "bench")
		},
		Transport: tr,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: rp}
	go hs.Serve(ln)
	defer hs.Close()
	benchClient(b, ln.Addr().String())
}
