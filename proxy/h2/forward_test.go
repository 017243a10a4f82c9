package h2

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestForward: requests through the engine to an h2c backend, as a
// caller sees them.
func TestForward(t *testing.T) {
	big := make([]byte, 3<<20) // many windows' worth
	rand.Read(big)
	up := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Trailer", "Grpc-Status")
			w.Header().Set("X-Source", r.Header.Get("X-Weft-Source"))
			w.Header().Set("X-Host", r.Host)
			io.Copy(w, r.Body)
			w.Header().Set("Grpc-Status", "0")
		case "/trailers-only":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "14")
			w.WriteHeader(200)
		case "/big":
			w.Write(big)
		}
	}))
	s := &Server{Router: &testRouter{addr: up}}
	c := client(listen(t, s))
	tests := []struct {
		name, method, path string
		body               []byte
		status             int
		want               []byte
		header, trailer    map[string]string
	}{
		{"echo with trailers", "POST", "/echo", []byte("hello"), 200, []byte("hello"),
			map[string]string{"X-Source": "test", "X-Host": "svc", "X-Weft-Load": "1"}, map[string]string{"Grpc-Status": "0"}},
		{"no body", "GET", "/echo", nil, 200, []byte{}, map[string]string{"X-Source": "test"}, nil},
		{"large request body (flow control)", "POST", "/echo", big, 200, big, nil, nil},
		{"large response body (flow control)", "GET", "/big", nil, 200, big, nil, nil},
		{"trailers-only answer", "POST", "/trailers-only", []byte("x"), 200, []byte{}, map[string]string{"Grpc-Status": "14"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != nil {
				body = bytes.NewReader(tt.body)
			}
			req, _ := http.NewRequest(tt.method, "http://svc"+tt.path, body)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || !bytes.Equal(got, tt.want) {
				t.Fatalf("status %d, %d bytes; want %d, %d bytes", resp.StatusCode, len(got), tt.status, len(tt.want))
			}
			for k, v := range tt.header {
				if g := resp.Header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			for k, v := range tt.trailer {
				if g := resp.Trailer.Get(k); g != v {
					t.Errorf("trailer %s = %q, want %q", k, g, v)
				}
			}
		})
	}
}

// TestLocalAnswerAndRetry: the Router's own answer, and a refused
// upstream tried again elsewhere.
func TestLocalAnswerAndRetry(t *testing.T) {
	up := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	for _, tt := range []struct {
		name   string
		r      *testRouter
		status int
		body   string
	}{
		{"local answer", &testRouter{status: 503}, 503, "local answer\n"},
		{"refused, then another instance", &testRouter{addr: "127.0.0.1:1", retries: 1, next: up}, 200, "ok"},
		{"refused, no retry left", &testRouter{addr: "127.0.0.1:1"}, 503, "failed: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := client(listen(t, &Server{Router: tt.r}))
			resp, err := c.Post("http://svc/", "text/plain", strings.NewReader("payload"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.HasPrefix(string(b), tt.body) {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, b, tt.status, tt.body)
			}
		})
	}
}

// TestCancelPropagates: a caller's RST_STREAM reaches the upstream (its
// request context ends), and the engine's goroutines end with the
// server.
func TestCancelPropagates(t *testing.T) {
	before := runtime.NumGoroutine()
	var canceled atomic.Bool
	started := make(chan struct{}, 1)
	up := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-r.Context().Done()
		canceled.Store(true)
	}))
	s := &Server{Router: &testRouter{addr: up}}
	c := client(listen(t, s))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/hang", nil)
	resp, err := c.Do(req)
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
	for time.Now().Before(deadline) && runtime.NumGoroutine() > before+4 {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+4 { // the backend's own
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines left (%d before)\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestSlowReaderBackPressure: a caller that reads nothing holds at most
// about the windows in the sidecar, whatever the upstream offers.
func TestSlowReaderBackPressure(t *testing.T) {
	var written atomic.Int64
	chunk := make([]byte, 16<<10)
	up := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 64<<20/len(chunk); i++ {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	s := &Server{Router: &testRouter{addr: up}}
	c := client(listen(t, s))
	resp, err := c.Get("http://svc/flood")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(500 * time.Millisecond) // the upstream writes what windows allow
	w1 := written.Load()
	time.Sleep(300 * time.Millisecond)
	w2 := written.Load()
	// Windows: the caller's stream (64 KiB default plus the transport's
	// own buffer, 4 MiB for x/net's client), the engine's upstream stream
	// (256 KiB), the backend's buffers.
	if w2 != w1 || w2 > 16<<20 {
		t.Fatalf("upstream wrote %d then %d bytes to a caller that reads nothing", w1, w2)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	if n != 64<<20 {
		t.Fatalf("read %d bytes", n)
	}
}
