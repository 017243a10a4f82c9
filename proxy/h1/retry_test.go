package h1

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// retryRouter is a recRouter that is also a Retrier: it retries on the
// status or failure given, on the next of its addresses.
type retryRouter struct {
	*recRouter
	addrs    []string
	tries    atomic.Int64
	retryOn  int // status; -1: any failure before a head
	answered atomic.Int64
}

func (r *retryRouter) Answered(req *Request, d *Decision, resp *Response, err error) bool {
	r.answered.Add(1)
	n := int(r.tries.Add(1))
	if n >= len(r.addrs) {
		return false
	}
	if (resp != nil && resp.Status == r.retryOn) || (resp == nil && r.retryOn == -1) {
		d.Addr = r.addrs[n]
		return true
	}
	return false
}

// TestRetrierResendsHeldBody: a request whose body the engine holds
// (ReplayLimit) is sent again, body and all, to the next address when the
// Retrier asks after a 503 head; the 503 never reaches the client.
func TestRetrierResendsHeldBody(t *testing.T) {
	var first atomic.Int64
	failing := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first.Add(1)
		io.Copy(io.Discard, r.Body)
		http.Error(w, "busy", 503)
	}))
	good := newBackend(t, http.HandlerFunc(echoHandler))
	rr := &retryRouter{addrs: []string{failing.addr(), good.addr()}, retryOn: 503}
	rr.recRouter = &recRouter{addr: failing.addr(), route: func(req *Request, d *Decision) {
		rr.tries.Store(0)
		d.ReplayLimit = 1 << 10
		d.RespSet = []Field{{Name: []byte("X-Weft-Load"), Value: []byte("0.5")}}
	}}
	addr := newEngine(t, &Server{Router: rr})
	c := dial(t, addr)
	c.send("POST /a HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\n\r\nhello")
	resp, body := c.read("POST")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d (%s), want the second try's 200", resp.StatusCode, body)
	}
	if e := decodeEcho(t, body); e.Body != "hello" || e.ContentLength != 5 {
		t.Fatalf("second try's upstream saw %+v, want the held body", e)
	}
	if first.Load() != 1 || rr.answered.Load() != 2 {
		t.Errorf("first upstream saw %d requests, Answered called %d times; want 1 and 2", first.Load(), rr.answered.Load())
	}
	if got := resp.Header.Get("X-Weft-Load"); got != "0.5" {
		t.Errorf("response X-Weft-Load %q, want the RespSet value", got)
	}
	// The connection carries on: the next request works too.
	c.send("GET /b HTTP/1.1\r\nHost: orders\r\n\r\n")
	if resp, _ := c.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("next request on the connection: %d", resp.StatusCode)
	}
}

// TestRetrierNeverResendsStreamedBody: a body larger than ReplayLimit is
// streamed, so the engine relays the first answer whatever the Retrier
// says.
func TestRetrierNeverResendsStreamedBody(t *testing.T) {
	failing := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, "busy", 503)
	}))
	good := newBackend(t, http.HandlerFunc(echoHandler))
	rr := &retryRouter{addrs: []string{failing.addr(), good.addr()}, retryOn: 503}
	rr.recRouter = &recRouter{addr: failing.addr(), route: func(req *Request, d *Decision) {
		rr.tries.Store(0)
		d.ReplayLimit = 4
	}}
	addr := newEngine(t, &Server{Router: rr})
	c := dial(t, addr)
	c.send("POST /a HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\n\r\nhello")
	if resp, _ := c.read("POST"); resp.StatusCode != 503 {
		t.Fatalf("status %d, want the relayed 503 (body not held)", resp.StatusCode)
	}
}

// TestRetrierAfterTimeout: a try whose head does not come within
// HeaderTimeout goes to the Retrier as an ErrUpstreamTimeout failure.
func TestRetrierAfterTimeout(t *testing.T) {
	slow := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Second)
	}))
	good := newBackend(t, http.HandlerFunc(echoHandler))
	rr := &retryRouter{addrs: []string{slow.addr(), good.addr()}, retryOn: -1}
	rr.recRouter = &recRouter{addr: slow.addr(), route: func(req *Request, d *Decision) {
		rr.tries.Store(0)
		d.HeaderTimeout = 100 * time.Millisecond
	}}
	addr := newEngine(t, &Server{Router: rr})
	c := dial(t, addr)
	start := time.Now()
	c.send("GET /a HTTP/1.1\r\nHost: orders\r\n\r\n")
	resp, body := c.read("GET")
	if resp.StatusCode != 200 || time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("status %d after %s (%s), want the second try's 200 soon after 100ms", resp.StatusCode, time.Since(start), body)
	}
}

// TestIdleTimeout: a response body that stalls longer than IdleTimeout is
// cut.
func TestIdleTimeout(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.Write([]byte("hello"))
		w.(http.Flusher).Flush()
		time.Sleep(2 * time.Second)
		w.Write([]byte("world"))
	}))
	r := &recRouter{addr: be.addr(), route: func(req *Request, d *Decision) { d.IdleTimeout = 100 * time.Millisecond }}
	addr := newEngine(t, &Server{Router: r})
	c := dial(t, addr)
	start := time.Now()
	c.send("GET /a HTTP/1.1\r\nHost: orders\r\n\r\n")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err == nil || !strings.HasPrefix(string(b), "hello") || time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("read %q, %v after %s; want the body cut after 100ms idle", b, err, time.Since(start))
	}
	if res := r.result(t, 1); res.Err == nil {
		t.Errorf("Finish saw no error for a cut body")
	}
}
