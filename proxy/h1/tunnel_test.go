package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// tunRouter is a recRouter that carries tunnels itself (Tunneler).
type tunRouter struct {
	recRouter
	opened chan [2]int64 // the bytes each tunnel carried, when it ends
}

func (r *tunRouter) Tunnel(req *Request, d *Decision) func(sent, received int64) {
	return func(s, rc int64) { r.opened <- [2]int64{s, rc} }
}

func newTunRouter(addr string) *tunRouter {
	return &tunRouter{recRouter: recRouter{addr: addr}, opened: make(chan [2]int64, 8)}
}

// echoAfter answers the first request head with answer and, when echo,
// echoes every byte after it until EOF, then closes; it sends the head it
// got on heads.
func echoAfter(t *testing.T, answer string, echo bool, heads chan<- string) string {
	addr, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		h, err := readRequestHead(br)
		heads <- h
		if err != nil {
			return
		}
		io.WriteString(c, answer)
		if echo {
			io.Copy(c, br)
		}
	})
	return addr
}

func TestTunnels(t *testing.T) {
	tests := []struct {
		name     string
		request  string
		answer   string // the upstream's
		direct   bool
		wantHead []string // in the head the upstream got
		wantResp string   // status line prefix downstream
	}{
		{name: "websocket", request: "GET /ws HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n\r\n",
			answer:   "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: y\r\n\r\nfirst",
			wantHead: []string{"GET /ws HTTP/1.1\r\n", "Connection: Upgrade\r\n", "Upgrade: websocket\r\n", "Sec-WebSocket-Key: x\r\n"},
			wantResp: "HTTP/1.1 101 Switching Protocols"},
		{name: "connect forwarded", request: "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
			answer:   "HTTP/1.1 200 OK\r\n\r\nfirst",
			wantHead: []string{"CONNECT db:5432 HTTP/1.1\r\n", "Host: db:5432\r\n"},
			wantResp: "HTTP/1.1 200 OK"},
		{name: "connect direct", request: "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n", direct: true,
			wantResp: "HTTP/1.1 200 OK"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			heads := make(chan string, 1)
			var addr string
			if tc.direct {
				addr, _ = rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
					io.WriteString(c, "first")
					io.Copy(c, br)
				})
			} else {
				addr = echoAfter(t, tc.answer, true, heads)
			}
			r := newTunRouter(addr)
			r.route = func(req *Request, d *Decision) { d.Direct = tc.direct }
			s := &Server{Router: r}
			c := dial(t, newEngine(t, s))
			// Tunnel bytes right behind the request: they must not be lost.
			c.send(tc.request + "hello")
			head := c.head()
			if !strings.HasPrefix(head, tc.wantResp) {
				t.Fatalf("answer %q, want %s", head, tc.wantResp)
			}
			got := make([]byte, len("firsthello"))
			if _, err := io.ReadFull(c.br, got); err != nil || string(got) != "firsthello" {
				t.Fatalf("tunnel read %q, %v; want firsthello", got, err)
			}
			c.send(" world")
			got = make([]byte, len(" world"))
			if _, err := io.ReadFull(c.br, got); err != nil || string(got) != " world" {
				t.Fatalf("second read %q, %v", got, err)
			}
			// Half-close: the upstream sees EOF, ends its echo and closes;
			// the client then sees EOF.
			c.c.(*net.TCPConn).CloseWrite()
			if rest, err := io.ReadAll(c.br); err != nil || len(rest) != 0 {
				t.Fatalf("after half-close: %q, %v; want EOF", rest, err)
			}
			select {
			case n := <-r.opened:
				if n[0] != int64(len("hello world")) || n[1] != int64(len("firsthello world")) {
					t.Errorf("tunnel bytes sent %d, received %d; want %d, %d", n[0], n[1], len("hello world"), len("firsthello world"))
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Tunnel's done func not called")
			}
			if !tc.direct {
				h := <-heads
				for _, w := range tc.wantHead {
					if !strings.Contains(h, w) {
						t.Errorf("upstream head %q lacks %q", h, w)
					}
				}
			}
			if st := s.TunnelStats(); st.Upgrades+st.Connects != 1 {
				t.Errorf("TunnelStats %+v, want one tunnel", st)
			}
		})
	}
}

// TestUpgradeRefused: an upstream that answers an Upgrade with a normal
// response gets it relayed, and the connection stays HTTP.
func TestUpgradeRefused(t *testing.T) {
	heads := make(chan string, 2)
	addr, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			h, err := readRequestHead(br)
			if err != nil {
				return
			}
			heads <- h
			io.WriteString(c, "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno")
		}
	})
	r := newTunRouter(addr)
	c := dial(t, newEngine(t, &Server{Router: r}))
	c.send("GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 426 || body != "no" {
		t.Fatalf("got %d %q, want the upstream's 426", resp.StatusCode, body)
	}
	<-heads
	c.send("GET /next HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, _ := c.read("GET"); resp.StatusCode != 426 {
		t.Fatalf("second request on the connection: %d", resp.StatusCode)
	}
	if h := <-heads; strings.Contains(h, "Upgrade") {
		t.Errorf("plain request carried an Upgrade: %q", h)
	}
}

// TestTunnelIdle: a tunnel quiet both ways for TunnelIdle is closed.
func TestTunnelIdle(t *testing.T) {
	heads := make(chan string, 1)
	addr := echoAfter(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", true, heads)
	r := newTunRouter(addr)
	c := dial(t, newEngine(t, &Server{Router: r, Limits: Limits{TunnelIdle: 300 * time.Millisecond}}))
	c.send("GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
	c.head()
	// Activity keeps it open past the idle timeout...
	for range 4 {
		time.Sleep(150 * time.Millisecond)
		c.send("a")
		b := make([]byte, 1)
		if _, err := io.ReadFull(c.br, b); err != nil {
			t.Fatalf("tunnel closed while active: %v", err)
		}
	}
	// ...and quiet closes it.
	start := time.Now()
	if !c.closed() {
		t.Fatal("idle tunnel not closed")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("closed after %s, before the idle timeout", d)
	}
}

// TestBodyTimeout: a request body that stalls, or trickles under the
// floor, is answered 408 and the connection closed.
func TestBodyTimeout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trickle time.Duration // between bytes; 0: stall after the first 2
	}{{"stall", 0}, {"below the rate floor", 100 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, nil)
			r := &recRouter{addr: b.addr()}
			c := dial(t, newEngine(t, &Server{Router: r, Limits: Limits{BodyTimeout: 500 * time.Millisecond, MinBodyRate: 50}}))
			c.send("POST /up HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\nab")
			if tc.trickle > 0 {
				go func() {
					for range 100 {
						time.Sleep(tc.trickle)
						if _, err := io.WriteString(c.c, "x"); err != nil {
							return
						}
					}
				}()
			}
			resp, body := c.read("POST")
			if resp.StatusCode != 408 || resp.Header.Get("X-Weft-Error") != "request_timeout" {
				t.Fatalf("got %d %q %q, want 408 request_timeout", resp.StatusCode, resp.Header.Get("X-Weft-Error"), body)
			}
			if !c.closed() {
				t.Error("connection not closed after the 408")
			}
		})
	}
}

// TestTransportH2C: with Decision.Transport the request reaches an h2c-only
// upstream and its answer comes back as HTTP/1.1 — a chunked body both
// ways, trailers, keep-alive, and an Expect: 100-continue answered by the
// engine.
func TestTransportH2C(t *testing.T) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Proto", r.Proto)
		io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" "+string(b))
		w.Header().Set("X-Sum", "42")
	}))
	srv.Config.Protocols = &protos
	srv.Start()
	defer srv.Close()
	tr := &http.Transport{Protocols: &protos}
	defer tr.CloseIdleConnections()
	r := &recRouter{addr: srv.Listener.Addr().String(), route: func(req *Request, d *Decision) { d.Transport = tr }}
	c := dial(t, newEngine(t, &Server{Router: r}))
	c.send("POST /p?q=1 HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	resp, body := c.read("POST")
	if resp.StatusCode != 200 || body != "POST /p?q=1 hello" || resp.Header.Get("X-Proto") != "HTTP/2.0" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("got %d %q proto %q trailer %v", resp.StatusCode, body, resp.Header.Get("X-Proto"), resp.Trailer)
	}
	c.send("PUT /e HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
	if h := c.head(); !strings.HasPrefix(h, "HTTP/1.1 100 Continue") {
		t.Fatalf("no 100 Continue: %q", h)
	}
	c.send("abc")
	if resp, body := c.read("PUT"); resp.StatusCode != 200 || body != "PUT /e abc" {
		t.Fatalf("after 100-continue: %d %q", resp.StatusCode, body)
	}
	c.send("GET /g HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "GET /g " {
		t.Fatalf("third request on the connection: %d %q", resp.StatusCode, body)
	}
	if res := r.result(t, 3); res.Err != nil || res.Status != 200 || res.UpstreamHeaders.IsZero() {
		t.Errorf("Result %+v", res)
	}
}
