package h2

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/proxy/h1"
)

// h1Router forwards every request to an HTTP/1.1 upstream at addr.
type h1Router struct {
	testRouter
	cl *h1.Client
}

func (r *h1Router) Route(req *Request, d *Decision) {
	r.testRouter.Route(req, d)
	d.HTTP1 = r.cl
}

// h1Backend serves h on HTTP/1.1 only.
func h1Backend(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestForwardToHTTP1: h2 requests through the engine to an HTTP/1.1
// upstream (Decision.HTTP1), as the caller and the upstream see them.
func TestForwardToHTTP1(t *testing.T) {
	big := make([]byte, 3<<20) // many windows' worth
	rand.Read(big)
	up := h1Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Cookie", strings.Join(r.Header.Values("Cookie"), "|"))
		w.Header().Set("X-Framing", fmt.Sprintf("%d %v", r.ContentLength, r.TransferEncoding))
		w.Header().Set("X-Source", r.Header.Get("X-Weft-Source"))
		w.Header().Set("X-Trailer", r.Trailer.Get("X-Req-Trailer"))
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Trailer", "Grpc-Status")
			w.Header().Set("Connection", "x-hop")
			w.Header().Set("X-Hop", "dropped")
			w.Write(b)
			w.(http.Flusher).Flush()
			w.Header().Set("Grpc-Status", "0")
		case "/big":
			w.Write(big)
		case "/len":
			fmt.Fprint(w, len(b))
		case "/nocontent":
			w.WriteHeader(204)
		}
	}))
	cl := h1.NewClient(h1.Limits{}, nil)
	t.Cleanup(cl.Close)
	s := &Server{Router: &h1Router{testRouter: testRouter{addr: up}, cl: cl}}
	c := client(listen(t, s))
	tests := []struct {
		name, method, path string
		body               io.Reader
		header             map[string]string
		status             int
		want               []byte
		respHeader         map[string]string
		trailer            map[string]string
		absent             []string
	}{
		{"echo: head fields, trailers, hop-by-hop dropped", "POST", "/echo", bytes.NewReader([]byte("hello")),
			map[string]string{"Cookie": "a=1", "Te": "trailers"}, 200, []byte("hello"),
			map[string]string{"X-Proto": "HTTP/1.1", "X-Host": "svc", "X-Framing": "5 []", "X-Source": "test", "X-Weft-Load": "1", "X-Cookie": "a=1"},
			map[string]string{"Grpc-Status": "0"}, []string{"X-Hop", "Connection"}},
		{"no body", "GET", "/len", nil, nil, 200, []byte("0"), map[string]string{"X-Framing": "0 []", "Content-Length": "1"}, nil, nil},
		{"unknown length goes chunked", "PUT", "/len", io.MultiReader(strings.NewReader("abc"), strings.NewReader("def")), nil, 200, []byte("6"),
			map[string]string{"X-Framing": "-1 [chunked]"}, nil, nil},
		{"large request body (flow control)", "POST", "/echo", bytes.NewReader(big), nil, 200, big, nil, nil, nil},
		{"large response body (flow control)", "GET", "/big", nil, nil, 200, big, nil, nil, nil},
		{"HEAD", "HEAD", "/big", nil, nil, 200, []byte{}, nil, nil, nil},
		{"204", "GET", "/nocontent", nil, nil, 204, []byte{}, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://svc"+tt.path, tt.body)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.ProtoMajor != 2 || resp.StatusCode != tt.status || !bytes.Equal(got, tt.want) {
				t.Fatalf("%s %d, %d bytes; want HTTP/2 %d, %d bytes", resp.Proto, resp.StatusCode, len(got), tt.status, len(tt.want))
			}
			for k, v := range tt.respHeader {
				if g := resp.Header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			for k, v := range tt.trailer {
				if g := resp.Trailer.Get(k); g != v {
					t.Errorf("trailer %s = %q, want %q", k, g, v)
				}
			}
			for _, k := range tt.absent {
				if g, ok := resp.Header[k]; ok {
					t.Errorf("hop-by-hop %s = %q reached the caller", k, g)
				}
			}
		})
	}
}

// rawH1 answers every connection with resp, then closes it.
func rawH1(t *testing.T, resp string) string {
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
			go func() {
				buf := make([]byte, 4096)
				c.Read(buf)
				io.WriteString(c, resp)
				time.Sleep(100 * time.Millisecond)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestForwardToHTTP1BodyErrors: a response body cut short or badly
// chunked after its head went out resets the caller's stream (the caller
// sees an error, never a clean short body).
func TestForwardToHTTP1BodyErrors(t *testing.T) {
	cl := h1.NewClient(h1.Limits{}, nil)
	t.Cleanup(cl.Close)
	for _, tt := range []struct{ name, resp string }{
		{"cut short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"},
		{"no chunk CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Router: &h1Router{testRouter: testRouter{addr: rawH1(t, tt.resp)}, cl: cl}}
			resp, err := client(listen(t, s)).Get("http://svc/")
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("body %q read cleanly, want the stream reset", b)
			}
		})
	}
}

// TestForwardToHTTP1Errors: an upstream that is not there is the
// Router's refused try; one that answers garbage is a reset.
func TestForwardToHTTP1Errors(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	garbage := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi")
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	refusedAddr := refused.Addr().String()
	refused.Close()
	cl := h1.NewClient(h1.Limits{}, nil)
	t.Cleanup(cl.Close)
	for _, tt := range []struct{ name, addr, want string }{
		{"refused", refusedAddr, "refused"}, {"malformed", garbage, "reset"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Router: &h1Router{testRouter: testRouter{addr: tt.addr}, cl: cl}}
			resp, err := client(listen(t, s)).Get("http://svc/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 || !strings.Contains(string(b), tt.want) {
				t.Errorf("%d %q, want the Router's 503 saying %s", resp.StatusCode, b, tt.want)
			}
		})
	}
}

// handlerRouter serves every request with h (the engine's slow path, as
// proxy.Inbound's net/http handler had HTTP/1.1 apps served).
type handlerRouter struct {
	testRouter
	h http.Handler
}

func (r *handlerRouter) Route(req *Request, d *Decision) { d.Handler = r.h }

// BenchmarkH2ToHTTP1 is one small request (100 bytes each way) from an
// h2c client through the engine to an HTTP/1.1 backend, in this process:
// natively (Decision.HTTP1) against the http.Handler path it replaces
// (httputil.ReverseProxy and an HTTP/1.1 Transport, as proxy.Inbound
// has). cpu-ns/op and allocs/op include the client and the backend, the
// same in both.
//
//	flock /work/wt/bench.lock go test -run '^$' -bench H2ToHTTP1 -benchtime 3s ./proxy/h2/
func BenchmarkH2ToHTTP1(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 100)
	up := h1Backend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(payload)
	}))
	cl := h1.NewClient(h1.Limits{}, nil)
	b.Cleanup(cl.Close)
	native := listen(b, &Server{Router: &h1Router{testRouter: testRouter{addr: up}, cl: cl}})
	u, _ := url.Parse("http://" + up)
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = pr.In.Host }, Transport: tr}
	handler := listen(b, &Server{Router: &handlerRouter{h: rp}})
	for _, p := range []struct{ name, addr string }{{"native", native}, {"handler", handler}} {
		b.Run(p.name, func(b *testing.B) {
			c := client(p.addr)
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("POST", "http://svc/x", bytes.NewReader(payload))
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || n != int64(len(payload)) {
						b.Errorf("%d, %d bytes", resp.StatusCode, n)
						return
					}
				}
			})
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// TestForwardToHTTP1CancelAndBackPressure: a caller's reset closes the
// HTTP/1.1 upstream's connection (its request context ends) and leaves no
// goroutine behind; a caller that reads nothing stops the upstream's
// writes at about the windows and socket buffers.
func TestForwardToHTTP1CancelAndBackPressure(t *testing.T) {
	before := runtime.NumGoroutine()
	var canceled atomic.Bool
	started := make(chan struct{}, 1)
	var written atomic.Int64
	chunk := make([]byte, 16<<10)
	up := h1Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/flood" {
			for i := 0; i < 64<<20/len(chunk); i++ {
				n, err := w.Write(chunk)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
			return
		}
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-r.Context().Done()
		canceled.Store(true)
	}))
	cl := h1.NewClient(h1.Limits{}, nil)
	s := &Server{Router: &h1Router{testRouter: testRouter{addr: up}, cl: cl}}
	c := client(listen(t, s))

	resp, err := c.Get("http://svc/flood")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	w1 := written.Load()
	time.Sleep(300 * time.Millisecond)
	if w2 := written.Load(); w2 != w1 || w2 > 24<<20 {
		t.Fatalf("upstream wrote %d then %d bytes to a caller that reads nothing", w1, w2)
	}
	if n, _ := io.Copy(io.Discard, resp.Body); n != 64<<20 {
		t.Fatalf("read %d bytes", n)
	}
	resp.Body.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://svc/hang", strings.NewReader("body"))
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !canceled.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !canceled.Load() {
		t.Fatal("the upstream's request was not canceled")
	}
	c.CloseIdleConnections()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := s.Shutdown(ctx2); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	cl.Close()
	for time.Now().Before(deadline) && runtime.NumGoroutine() > before+4 {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+4 { // the backend's own
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines left (%d before)\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
