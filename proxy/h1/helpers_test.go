package h1

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recRouter is a scriptable Router that records what Finish sees.
type recRouter struct {
	addr   string
	route  func(req *Request, d *Decision)
	next   func(req *Request, d *Decision, err error) bool
	finish func(req *Request, d *Decision, res *Result)

	mu      sync.Mutex
	results []Result
	methods []string
	hosts   []string
}

func (r *recRouter) Route(req *Request, d *Decision) {
	d.Addr = r.addr
	if r.route != nil {
		r.route(req, d)
	}
}

func (r *recRouter) Next(req *Request, d *Decision, err error) bool {
	if r.next != nil {
		return r.next(req, d, err)
	}
	return false
}

func (r *recRouter) Finish(req *Request, d *Decision, res *Result) {
	r.mu.Lock()
	r.results = append(r.results, *res)
	r.methods = append(r.methods, string(req.Method))
	r.hosts = append(r.hosts, string(req.Host))
	r.mu.Unlock()
	if r.finish != nil {
		r.finish(req, d, res)
	}
}

// last waits briefly for the n-th Finish and returns its Result.
func (r *recRouter) result(t *testing.T, n int) Result {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		r.mu.Lock()
		if len(r.results) >= n {
			res := r.results[n-1]
			r.mu.Unlock()
			return res
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no Finish #%d", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// backend is a net/http server counting the connections it accepts.
type backend struct {
	*httptest.Server
	accepted atomic.Int64
}

func newBackend(t testing.TB, h http.Handler) *backend {
	be := &backend{}
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			be.accepted.Add(1)
		}
	}
	s.Config.ErrorLog = nil
	s.Start()
	be.Server = s
	t.Cleanup(s.Close)
	return be
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

// echo is what echoHandler answers.
type echo struct {
	Method, URI, Host, Proto string
	Header                   http.Header
	Trailer                  http.Header
	Body                     string
	ContentLength            int64
	TransferEncoding         []string
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(echo{Method: r.Method, URI: r.RequestURI, Host: r.Host, Proto: r.Proto, Header: r.Header,
		Trailer: r.Trailer, Body: string(body), ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding})
}

// newEngine serves s on a loopback port until the test ends.
func newEngine(t testing.TB, s *Server) string { return startEngine(t, s) }

// client is a raw downstream connection.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

// read reads one response to a request with method, body included.
func (c *client) read(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

// head reads raw bytes up to the end of the next head.
func (c *client) head() string {
	c.t.Helper()
	var sb strings.Builder
	for {
		line, err := c.br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			c.t.Fatalf("reading head: %v (got %q)", err, sb.String())
		}
		if line == "\r\n" {
			return sb.String()
		}
	}
}

// closed reports whether the peer closed the connection (nothing more
// arrives but EOF or a reset).
func (c *client) closed() bool {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c.br)
	if len(b) > 0 {
		c.t.Errorf("unexpected bytes before close: %q", b)
	}
	return err == nil || errors.Is(err, syscall.ECONNRESET)
}

func decodeEcho(t testing.TB, body string) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("decoding echo %q: %v", body, err)
	}
	return e
}

// rawUpstream serves each connection with fn, for upstreams net/http will
// not impersonate (malformed, close-delimited, resetting).
func rawUpstream(t testing.TB, fn func(c net.Conn, br *bufio.Reader)) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var n atomic.Int64
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), &n
}

// readRequestHead reads a request head off a raw upstream connection.
func readRequestHead(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			return sb.String(), err
		}
		if line == "\r\n" {
			return sb.String(), nil
		}
	}
}

// refusedAddr is a loopback address nothing listens on.
func refusedAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
