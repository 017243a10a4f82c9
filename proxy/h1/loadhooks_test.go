package h1

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

// headRouter is recRouter plus ResponseHead, recording the fields it saw.
type headRouter struct {
	recRouter
	mu     sync.Mutex
	status int
	seen   string
}

func (r *headRouter) ResponseHead(d *Decision, status int, fields []Field) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = status
	for _, f := range fields {
		if EqualFold(f.Name, []byte("x-weft-load")) {
			r.seen = string(f.Value) // copied: fields are valid during the call only
		}
	}
}

// TestLoadReportHooks: RespSet adds a field to the relayed response,
// replacing the upstream's of that name, and ResponseHead sees the
// upstream's head before it is relayed. Both exist for x-weft-load.
func TestLoadReportHooks(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Weft-Load", "from-app")
		w.Header().Set("X-Other", "kept")
		w.Write([]byte("ok"))
	}))
	rt := &headRouter{recRouter: recRouter{addr: be.addr()}}
	rt.route = func(req *Request, d *Decision) {
		d.RespSet = []Field{{Name: []byte("x-weft-load"), Value: []byte("v=1;h=0.500;inflight=1")}}
	}
	addr := newEngine(t, &Server{Router: rt})
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
	resp, body := c.read("GET")
	if body != "ok" || resp.Header.Get("X-Other") != "kept" {
		t.Fatalf("response %v %q", resp.Header, body)
	}
	if got := resp.Header.Values("X-Weft-Load"); len(got) != 1 || got[0] != "v=1;h=0.500;inflight=1" {
		t.Errorf("x-weft-load downstream = %q, want only the router's", got)
	}
	rt.result(t, 1)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.status != 200 || rt.seen != "from-app" {
		t.Errorf("ResponseHead saw status %d, x-weft-load %q; want 200 and the upstream's", rt.status, rt.seen)
	}
}

// TestRespSetInvalid: a RespSet field that could split the response fails
// the request, as a bad Set does.
func TestRespSetInvalid(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	rt := &recRouter{addr: be.addr()}
	rt.route = func(req *Request, d *Decision) {
		d.RespSet = []Field{{Name: []byte("x-weft-load"), Value: []byte("a\r\nx-evil: 1")}}
	}
	addr := newEngine(t, &Server{Router: rt})
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
	resp, _ := c.read("GET")
	if resp.StatusCode < 500 || resp.Header.Get("X-Evil") != "" {
		t.Errorf("status %d, headers %v; want a 5xx without the injected field", resp.StatusCode, resp.Header)
	}
	if res := rt.result(t, 1); res.Err == nil || !strings.Contains(res.Err.Error(), "invalid") {
		t.Errorf("Finish saw err %v, want ErrInvalidField", res.Err)
	}
}
