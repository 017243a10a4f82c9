package h2

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// testRouter forwards every request to addr, or answers with the status
// when addr is "".
type testRouter struct {
	addr   string
	status int
	// retries is how many refused tries go again.
	retries int
	mu      sync.Mutex
	results []Result
	tries   int
	next    string // the address of tries after the first
}

func (r *testRouter) Route(req *Request, d *Decision) {
	r.mu.Lock()
	r.tries = 1
	r.mu.Unlock()
	if r.addr == "" {
		d.Status = r.status
		d.Header = append(d.Header, hf("x-weft-error", "test"))
		d.Body = []byte("local answer\n")
		return
	}
	d.Addr, d.HeaderTimeout = r.addr, 5*time.Second
	d.ReplayLimit = 1 << 20
	d.Set = append(d.Set, hf("x-weft-source", "test"))
	d.RespSet = append(d.RespSet, hf("x-weft-load", "1"))
}

func (r *testRouter) Answered(req *Request, d *Decision, resp *Response, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil && errors.Is(err, ErrRefused) && r.tries <= r.retries {
		r.tries++
		d.Addr = r.next
		return true
	}
	if err != nil {
		d.Addr, d.Status, d.Body = "", 503, []byte("failed: "+err.Error()+"\n")
	}
	return false
}

func (r *testRouter) Finish(req *Request, d *Decision, res *Result) {
	r.mu.Lock()
	r.results = append(r.results, *res)
	r.mu.Unlock()
}

// listen serves s on a loopback listener, handing it each connection as
// the fast path would (the preface still unread).
func listen(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.ServeConn(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// backend is an h2c server (net/http) running h.
func backend(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// client is an h2c client of addr.
func client(addr string) *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
}

func hf(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }
