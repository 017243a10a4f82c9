package h1

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHeldBodyKeepsHead: a held body (ReplayLimit) that arrives after its
// head, and is larger than what the read buffer holds, must not overwrite
// the head still to be forwarded — request after request on one
// connection. The body is also handed to the Router (Request.Held).
func TestHeldBodyKeepsHead(t *testing.T) {
	good := newBackend(t, http.HandlerFunc(echoHandler))
	var mu sync.Mutex
	var held []string
	rr := &recRouter{addr: good.addr(), route: func(req *Request, d *Decision) { d.ReplayLimit = 64 << 10 },
		finish: func(req *Request, d *Decision, res *Result) {
			mu.Lock()
			held = append(held, string(req.Held))
			mu.Unlock()
		}}
	addr := newEngine(t, &Server{Router: rr})
	c := dial(t, addr)
	for i := range 4 {
		body := strings.Repeat(string(rune('a'+i)), 10_000*(i+1))
		c.send(fmt.Sprintf("POST /up/%d HTTP/1.1\r\nHost: orders\r\nContent-Length: %d\r\n\r\n", i, len(body)))
		time.Sleep(20 * time.Millisecond) // the body comes later than its head
		c.send(body)
		resp, got := c.read("POST")
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, got)
		}
		if e := decodeEcho(t, got); e.URI != fmt.Sprintf("/up/%d", i) || e.Body != body {
			t.Fatalf("request %d: upstream saw %s with a %d-byte body, want /up/%d with %d bytes", i, e.URI, len(e.Body), i, len(body))
		}
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(held) != 4 {
		t.Fatalf("%d Finish calls, want 4", len(held))
	}
	for i, h := range held {
		if len(h) != 10_000*(i+1) {
			t.Errorf("request %d: Held %d bytes at Finish, want %d", i, len(h), 10_000*(i+1))
		}
	}
}

func TestHeldBodyGoClient(t *testing.T) {
	good := newBackend(t, http.HandlerFunc(echoHandler))
	rr := &recRouter{addr: good.addr(), route: func(req *Request, d *Decision) { d.ReplayLimit = 64 << 10 }}
	addr := newEngine(t, &Server{Router: rr})
	u, _ := url.Parse("http://" + addr)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}}
	t.Cleanup(c.CloseIdleConnections)
	for i := range 6 {
		body := strings.Repeat("b", 10_000)
		resp, err := c.Post("http://orders/upload", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
}

// TestRespSetEmptyRemoves: a RespSet field with an empty value removes the
// upstream's same-named field and writes nothing.
func TestRespSetEmptyRemoves(t *testing.T) {
	up := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Weft-Load", "v=1;h=0.5")
		w.Header().Set("X-Other", "kept")
		io.WriteString(w, "ok")
	}))
	rr := &recRouter{addr: up.addr(), route: func(req *Request, d *Decision) {
		d.RespSet = []Field{{Name: []byte("x-weft-load")}}
	}}
	c := dial(t, newEngine(t, &Server{Router: rr}))
	c.send("GET /x HTTP/1.1\r\nHost: orders\r\n\r\n")
	resp, body := c.read("GET")
	if _, ok := resp.Header["X-Weft-Load"]; ok || resp.Header.Get("X-Other") != "kept" || body != "ok" {
		t.Errorf("header %v body %q, want X-Weft-Load gone, X-Other kept", resp.Header, body)
	}
}
