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
