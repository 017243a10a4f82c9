package h1

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReplyAwaitedUpstream: a request's last write waits for the reply
// (await.go) on fresh and reused upstream connections: a slow reply, a
// reply in two pieces, and an upstream that closes its end of a pooled
// connection after a response without saying so (the request's write is
// answered with a reset, which ends the wait; the GET goes again on a new
// connection). Every request gets its own reply.
func TestReplyAwaitedUpstream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body := req.URL.Path
					head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
					time.Sleep(20 * time.Millisecond) // the engine is waiting by now
					if i%2 == 1 {
						c.Write([]byte(head[:10])) // in two pieces
						time.Sleep(5 * time.Millisecond)
						head = head[10:]
					}
					c.Write([]byte(head + body))
					if i == 2 {
						return // closes a connection the engine pooled
					}
				}
			}()
		}
	}()
	addr := newEngine(t, &Server{Router: &recRouter{addr: ln.Addr().String()}})
	c := dial(t, addr)
	for i := range 8 {
		path := fmt.Sprintf("/r%d", i)
		c.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := c.read("GET")
		if resp.StatusCode != 200 || body != path {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, body, path)
		}
		if i == 2 {
			time.Sleep(50 * time.Millisecond) // the upstream's close has arrived
		}
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("upstream accepted %d connections, want 3 (each closed after its third request)", n)
	}
}

// TestDeadlinesLeftArmed: the head deadlines the engine leaves set after a
// request that reads nothing more (conn.rdArmed downstream, upConn.rdArmed
// upstream) never cut what follows: a pipelined POST whose body comes
// after the earlier, slow GET outlived the idle deadline; a request
// without a header timeout on the pooled connection that carried one
// whose deadline has passed meanwhile.
func TestDeadlinesLeftArmed(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(150 * time.Millisecond)
		}
		echoHandler(w, r)
	}))
	var headerTimeout atomic.Int64
	r := &recRouter{addr: be.addr(), route: func(req *Request, d *Decision) {
		d.HeaderTimeout = time.Duration(headerTimeout.Load())
	}}
	addr := newEngine(t, &Server{Router: r, Limits: Limits{IdleTimeout: 50 * time.Millisecond, ReadHeaderTimeout: 50 * time.Millisecond}})

	c := dial(t, addr)
	c.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\nPOST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
	if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != "/slow" {
		t.Fatalf("GET: %d %s", resp.StatusCode, body)
	}
	time.Sleep(60 * time.Millisecond)
	c.send("cd")
	if resp, body := c.read("POST"); resp.StatusCode != 200 || decodeEcho(t, body).URI != "/body" {
		t.Fatalf("pipelined POST after the idle deadline: %d %s", resp.StatusCode, body)
	}

	c = dial(t, newEngine(t, &Server{Router: r}))
	headerTimeout.Store(int64(100 * time.Millisecond))
	c.send("GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("GET with a header timeout: %d %s", resp.StatusCode, body)
	}
	time.Sleep(120 * time.Millisecond) // the pooled connection's deadline passes
	headerTimeout.Store(0)
	c.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 200 || decodeEcho(t, body).URI != "/slow" {
		t.Fatalf("GET without a header timeout on the same upstream: %d %s", resp.StatusCode, body)
	}
	if n := be.accepted.Load(); n != 2 {
		t.Fatalf("backend accepted %d connections, want 2 (one per engine)", n)
	}
}
