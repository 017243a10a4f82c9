package h1

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestForwardMethods(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	r := &recRouter{addr: be.addr()}
	addr := newEngine(t, &Server{Router: r})
	tests := []struct {
		name, req, method string
		wantMethod        string
		wantBody          string
		wantCL            int64
		wantChunked       bool
	}{
		{name: "GET", req: "GET /a?b=1 HTTP/1.1\r\nHost: orders\r\n\r\n", wantMethod: "GET", wantCL: 0},
		{name: "HEAD", req: "HEAD /a HTTP/1.1\r\nHost: orders\r\n\r\n", method: "HEAD", wantMethod: "HEAD"},
		{name: "DELETE", req: "DELETE /a HTTP/1.1\r\nHost: orders\r\n\r\n", wantMethod: "DELETE"},
		{name: "OPTIONS", req: "OPTIONS /a HTTP/1.1\r\nHost: orders\r\n\r\n", wantMethod: "OPTIONS"},
		{name: "POST content-length", req: "POST /a HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\n\r\nhello", wantMethod: "POST", wantBody: "hello", wantCL: 5},
		{name: "POST empty", req: "POST /a HTTP/1.1\r\nHost: orders\r\nContent-Length: 0\r\n\r\n", wantMethod: "POST", wantCL: 0},
		{name: "PUT chunked", req: "PUT /a HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", wantMethod: "PUT", wantBody: "hello world", wantCL: -1, wantChunked: true},
		{name: "PATCH chunked upper hex", req: "PATCH /a HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", wantMethod: "PATCH", wantBody: "0123456789", wantCL: -1, wantChunked: true},
		{name: "custom method", req: "PURGE /a HTTP/1.1\r\nHost: orders\r\n\r\n", wantMethod: "PURGE"},
		{name: "HTTP/1.0", req: "GET /a HTTP/1.0\r\n\r\n", wantMethod: "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			c.send(tt.req)
			method := tt.method
			if method == "" {
				method = "GET"
			}
			resp, body := c.read(method)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if method == "HEAD" {
				if body != "" {
					t.Fatalf("HEAD response with a body: %q", body)
				}
				return
			}
			e := decodeEcho(t, body)
			if e.Method != tt.wantMethod || e.Body != tt.wantBody || e.ContentLength != tt.wantCL || (len(e.TransferEncoding) > 0) != tt.wantChunked {
				t.Fatalf("upstream saw %+v", e)
			}
			if e.Proto != "HTTP/1.1" {
				t.Errorf("upstream request is %s, want HTTP/1.1", e.Proto)
			}
		})
	}
}

func TestLargeBodiesStreamed(t *testing.T) {
	const size = 5 << 20
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" {
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			w.Header().Set("Content-Length", strconv.Itoa(n))
			chunk := make([]byte, 32<<10)
			for n > 0 {
				k := min(n, len(chunk))
				w.Write(chunk[:k])
				n -= k
			}
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()}})
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	want := sha256.New()
	for i := 0; i < size/len(data); i++ {
		want.Write(data)
	}
	wantSum := fmt.Sprintf("%d %x", size, want.Sum(nil))

	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("request chunked=%v", chunked), func(t *testing.T) {
			c := dial(t, addr)
			before := totalAlloc()
			if chunked {
				c.send("POST /up HTTP/1.1\r\nHost: files\r\nTransfer-Encoding: chunked\r\n\r\n")
			} else {
				c.send(fmt.Sprintf("POST /up HTTP/1.1\r\nHost: files\r\nContent-Length: %d\r\n\r\n", size))
			}
			for i := 0; i < size/len(data); i++ {
				if chunked {
					c.send(fmt.Sprintf("%x\r\n", len(data)))
				}
				if _, err := c.c.Write(data); err != nil {
					t.Fatal(err)
				}
				if chunked {
					c.send("\r\n")
				}
			}
			if chunked {
				c.send("0\r\n\r\n")
			}
			resp, body := c.read("POST")
			if resp.StatusCode != 200 || body != wantSum {
				t.Fatalf("%d %q, want %q", resp.StatusCode, body, wantSum)
			}
			// The engine streams: a 5 MiB body must not show up as 5 MiB
			// allocated (what the whole process allocated bounds it).
			if got := totalAlloc() - before; got > 2<<20 {
				t.Errorf("allocated %d bytes while streaming %d", got, size)
			}
		})
	}
	t.Run("response", func(t *testing.T) {
		c := dial(t, addr)
		before := totalAlloc()
		c.send(fmt.Sprintf("GET /down?n=%d HTTP/1.1\r\nHost: files\r\n\r\n", size))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || n != size {
			t.Fatalf("read %d bytes: %v", n, err)
		}
		if got := totalAlloc() - before; got > 2<<20 {
			t.Errorf("allocated %d bytes while streaming %d", got, size)
		}
	})
}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

func TestUpstreamKeepAlive(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	r := &recRouter{addr: be.addr()}
	addr := newEngine(t, &Server{Router: r})
	for i := 0; i < 3; i++ { // connections downstream, one after the other
		c := dial(t, addr)
		for j := 0; j < 5; j++ {
			c.send("POST /x HTTP/1.1\r\nHost: orders\r\nContent-Length: 2\r\n\r\nhi")
			if resp, body := c.read("POST"); resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
		}
		c.c.Close()
	}
	if n := be.accepted.Load(); n != 1 {
		t.Fatalf("backend accepted %d connections for 15 sequential requests, want 1", n)
	}
	res := r.result(t, 15)
	if res.Attempts != 1 || res.Err != nil || res.Status != 200 || res.ReqBytes == 0 || res.RespBytes == 0 ||
		res.Start.IsZero() || res.UpstreamStart.Before(res.Start) || res.UpstreamHeaders.Before(res.UpstreamStart) || res.End.Before(res.UpstreamHeaders) {
		t.Fatalf("result %+v", res)
	}
	if r.methods[14] != "POST" || r.hosts[14] != "orders" {
		t.Fatalf("Finish saw method %q host %q", r.methods[14], r.hosts[14])
	}
}

func TestPipelining(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()}})
	c := dial(t, addr)
	c.send("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" +
		"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n" +
		"\r\nGET /4 HTTP/1.1\r\nHost: a\r\n\r\n") // a stray CRLF between requests is ignored
	for i, want := range []string{"/1", "/2", "/3", "/4"} {
		_, body := c.read("GET")
		if e := decodeEcho(t, body); e.URI != want {
			t.Fatalf("response %d is for %s, want %s", i, e.URI, want)
		}
	}
}

func TestBodylessResponses(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(304)
		default:
			w.Header().Set("Content-Length", "1234")
			if r.Method != "HEAD" {
				w.Write(make([]byte, 1234))
			}
		}
	}))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()}})
	c := dial(t, addr)
	for _, tt := range []struct{ method, path, wantCL string }{
		{"HEAD", "/x", "1234"}, {"GET", "/204", ""}, {"GET", "/304", ""}, {"GET", "/x", "1234"},
	} {
		c.send(tt.method + " " + tt.path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		head := c.head()
		if tt.wantCL != "" && !strings.Contains(head, "Content-Length: "+tt.wantCL+"\r\n") {
			t.Fatalf("%s %s: head %q", tt.method, tt.path, head)
		}
		if strings.Contains(head, "Transfer-Encoding") {
			t.Fatalf("%s %s: head %q", tt.method, tt.path, head)
		}
		if tt.method == "GET" && tt.path == "/x" {
			if _, err := io.ReadFull(c.br, make([]byte, 1234)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The connection is still in step: one more exchange works.
	c.send("GET /204 HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := c.read("GET"); resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestExpectContinue(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			w.WriteHeader(http.StatusExpectationFailed) // without reading the body
			return
		}
		w.Header().Add("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		echoHandler(w, r) // reading the body makes net/http send 100 Continue
	}))
	r := &recRouter{addr: be.addr()}
	addr := newEngine(t, &Server{Router: r})

	t.Run("continue", func(t *testing.T) {
		c := dial(t, addr)
		c.send("POST /ok HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		if h := c.head(); !strings.HasPrefix(h, "HTTP/1.1 103 ") || !strings.Contains(h, "Link: </style.css>") {
			t.Fatalf("first interim: %q", h)
		}
		if h := c.head(); !strings.HasPrefix(h, "HTTP/1.1 100 Continue\r\n") {
			t.Fatalf("second interim: %q", h)
		}
		c.send("hello")
		resp, body := c.read("POST")
		if e := decodeEcho(t, body); resp.StatusCode != 200 || e.Body != "hello" || e.Header.Get("Expect") != "100-continue" {
			t.Fatalf("%d %+v", resp.StatusCode, e)
		}
		// Still usable.
		c.send("GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
		c.head() // 103
		if resp, _ := c.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("final instead", func(t *testing.T) {
		c := dial(t, addr)
		c.send("POST /reject HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		resp, _ := c.read("POST")
		if resp.StatusCode != 417 || !resp.Close {
			t.Fatalf("status %d close %v", resp.StatusCode, resp.Close)
		}
		if !c.closed() {
			t.Fatal("connection left open with an unread body")
		}
	})
	t.Run("upstream ignores expect", func(t *testing.T) {
		up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
			readRequestHead(br)
			b := make([]byte, 5)
			io.ReadFull(br, b) // waits for the body without sending 100
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"+string(b))
		})
		addr := newEngine(t, &Server{Router: &recRouter{addr: up}, Limits: Limits{ExpectContinueTimeout: 50 * time.Millisecond}})
		c := dial(t, addr)
		c.send("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		time.Sleep(100 * time.Millisecond) // the engine gives up waiting and reads the body
		c.send("howdy")
		if resp, body := c.read("POST"); resp.StatusCode != 200 || body != "howdy" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})
}

func TestTrailers(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("X-Request-Trailer", r.Trailer.Get("X-Sum"))
		w.WriteHeader(200)
		w.Write(b)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Checksum", "abc123")
	}))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()}})
	c := dial(t, addr)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"4\r\ndata\r\n0\r\nX-Sum: 42\r\n\r\n")
	resp, body := c.read("POST")
	if body != "data" || resp.Header.Get("X-Request-Trailer") != "42" || resp.Trailer.Get("X-Checksum") != "abc123" {
		t.Fatalf("body %q header %v trailer %v", body, resp.Header, resp.Trailer)
	}
	if len(resp.TransferEncoding) == 0 {
		t.Fatal("chunked response not passed on as chunked")
	}
}

func TestCloseDelimitedResponse(t *testing.T) {
	up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		readRequestHead(br)
		io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
	})
	addr := newEngine(t, &Server{Router: &recRouter{addr: up}})
	t.Run("HTTP/1.1 client gets it re-chunked", func(t *testing.T) {
		c := dial(t, addr)
		c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := c.read("GET")
		if body != "until the end" || len(resp.TransferEncoding) == 0 || resp.Close {
			t.Fatalf("%q te=%v close=%v", body, resp.TransferEncoding, resp.Close)
		}
		c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := c.read("GET"); body != "until the end" {
			t.Fatalf("second: %q", body)
		}
	})
	t.Run("HTTP/1.0 client gets it close-delimited", func(t *testing.T) {
		c := dial(t, addr)
		c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp, body := c.read("GET")
		if body != "until the end" || !resp.Close {
			t.Fatalf("%q close=%v", body, resp.Close)
		}
	})
}

func TestHTTP10Client(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.Write([]byte("part1"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
			return
		}
		echoHandler(w, r)
	}))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()}})
	c := dial(t, addr)
	c.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	head := c.head()
	if !strings.HasPrefix(head, "HTTP/1.1 200") || !strings.Contains(head, "Connection: keep-alive\r\n") {
		t.Fatalf("head %q", head)
	}
	cl, _ := strconv.Atoi(between(head, "Content-Length: ", "\r\n"))
	io.ReadFull(c.br, make([]byte, cl))
	c.send("GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	resp, body := c.read("GET")
	if body != "part1part2" || !resp.Close || len(resp.TransferEncoding) != 0 {
		t.Fatalf("%q close=%v te=%v", body, resp.Close, resp.TransferEncoding)
	}
	if !c.closed() {
		t.Fatal("not closed")
	}
	// Without keep-alive an HTTP/1.0 connection ends after one response.
	c = dial(t, addr)
	c.send("GET /a HTTP/1.0\r\n\r\n")
	if resp, _ := c.read("GET"); !resp.Close {
		t.Fatal("no Connection: close")
	}
	if !c.closed() {
		t.Fatal("not closed")
	}
}

func between(s, a, b string) string {
	i := strings.Index(s, a)
	if i < 0 {
		return ""
	}
	s = s[i+len(a):]
	return s[:strings.Index(s, b)]
}

func TestAbsoluteForm(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	var routedHost, routedPath string
	r := &recRouter{addr: be.addr(), route: func(req *Request, d *Decision) {
		routedHost, routedPath = string(req.Host), string(req.Path())
	}}
	addr := newEngine(t, &Server{Router: r})
	for _, tt := range []struct{ target, hostHdr, wantURI, wantHost string }{
		{"http://orders/x?y=1", "orders", "/x?y=1", "orders"},
		{"HTTP://orders:8080", "orders:8080", "/", "orders:8080"},
		{"http://orders/", "something-else", "/", "orders"}, // RFC 9112 §3.2.2: the authority wins
	} {
		t.Run(tt.target, func(t *testing.T) {
			c := dial(t, addr)
			c.send("GET " + tt.target + " HTTP/1.1\r\nHost: " + tt.hostHdr + "\r\n\r\n")
			_, body := c.read("GET")
			e := decodeEcho(t, body)
			if e.URI != tt.wantURI || e.Host != tt.wantHost || routedHost != tt.wantHost || routedPath != tt.wantURI {
				t.Fatalf("upstream saw %s host %s; router saw %s %s", e.URI, e.Host, routedPath, routedHost)
			}
		})
	}
}

func TestHopByHopRemoved(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()}})
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Private, keep-alive\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n" +
		"Proxy-Connection: keep-alive\r\nTE: trailers, deflate;q=0.5\r\nUpgrade: websocket\r\nProxy-Authorization: Basic Zm9v\r\n" +
		"X-Kept: yes\r\nx-kept: twice\r\n\r\n")
	_, body := c.read("GET")
	e := decodeEcho(t, body)
	for _, h := range []string{"Connection", "X-Private", "Keep-Alive", "Proxy-Connection", "Upgrade", "Proxy-Authorization"} {
		if v, ok := e.Header[h]; ok {
			t.Errorf("%s forwarded: %q", h, v)
		}
	}
	if got := e.Header.Get("Te"); got != "trailers" {
		t.Errorf("TE = %q, want trailers", got)
	}
	if got := e.Header.Values("X-Kept"); len(got) != 2 || got[0] != "yes" || got[1] != "twice" {
		t.Errorf("X-Kept = %q", got)
	}

	// And on the way back.
	up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		readRequestHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\nProxy-Authenticate: Basic\r\nX-End: 2\r\nContent-Length: 2\r\n\r\nok")
	})
	addr = newEngine(t, &Server{Router: &recRouter{addr: up}})
	c = dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	head := c.head()
	for _, h := range []string{"X-Hop", "Keep-Alive", "Proxy-Authenticate", "Connection"} {
		if strings.Contains(head, h+":") {
			t.Errorf("%s relayed: %q", h, head)
		}
	}
	if !strings.Contains(head, "X-End: 2\r\n") {
		t.Errorf("X-End dropped: %q", head)
	}
	if !strings.Contains(head, "\r\nDate: ") {
		t.Errorf("no Date added: %q", head)
	}
}

func TestDecisionSet(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	set := []Field{
		{Name: []byte("x-weft-source"), Value: []byte("checkout")},
		{Name: []byte("Traceparent"), Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
	}
	r := &recRouter{addr: be.addr(), route: func(req *Request, d *Decision) {
		d.Set = set
		if string(req.Path()) == "/host" {
			d.Set = append(set[:2:2], Field{Name: []byte("Host"), Value: []byte("orders.internal")})
		}
	}}
	addr := newEngine(t, &Server{Router: r})
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: orders\r\nX-Weft-Source: spoofed\r\nX-Other: 1\r\nX-WEFT-SOURCE: spoofed-again\r\n\r\n")
	_, body := c.read("GET")
	e := decodeEcho(t, body)
	if got := e.Header.Values("X-Weft-Source"); len(got) != 1 || got[0] != "checkout" {
		t.Errorf("X-Weft-Source = %q", got)
	}
	if e.Header.Get("Traceparent") == "" || e.Header.Get("X-Other") != "1" || e.Host != "orders" {
		t.Errorf("upstream saw %+v", e)
	}
	c.send("GET /host HTTP/1.1\r\nHost: orders\r\n\r\n")
	_, body = c.read("GET")
	if e := decodeEcho(t, body); e.Host != "orders.internal" {
		t.Errorf("Host = %q", e.Host)
	}

	// A Set that would split the request is refused, not sent.
	r.route = func(req *Request, d *Decision) {
		d.Set = []Field{{Name: []byte("X-Evil"), Value: []byte("a\r\nContent-Length: 5")}}
	}
	c.send("GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
	resp, _ := c.read("GET")
	if resp.StatusCode != 500 || resp.Header.Get("X-Weft-Error") != "invalid_route" {
		t.Fatalf("status %d %v", resp.StatusCode, resp.Header)
	}
	if res := r.result(t, 3); !errors.Is(res.Err, ErrInvalidField) {
		t.Fatalf("Err = %v", res.Err)
	}
}

func TestLocalAnswer(t *testing.T) {
	r := &recRouter{route: func(req *Request, d *Decision) {
		switch string(req.Path()) {
		case "/none":
		default:
			d.Status = 503
			d.Header = []Field{{Name: []byte("X-Weft-Error"), Value: []byte("unknown_service")}, {Name: []byte("Content-Type"), Value: []byte("application/json")}}
			d.Body = []byte(`{"error":"unknown_service"}`)
		}
	}}
	addr := newEngine(t, &Server{Router: r})
	c := dial(t, addr)
	c.send("GET /x HTTP/1.1\r\nHost: nowhere\r\n\r\n")
	resp, body := c.read("GET")
	if resp.StatusCode != 503 || resp.Header.Get("X-Weft-Error") != "unknown_service" || body != `{"error":"unknown_service"}` || resp.Header.Get("Date") == "" {
		t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
	}
	// A body sent with a request answered locally is read and dropped, so
	// the connection carries on.
	c.send("POST /x HTTP/1.1\r\nHost: nowhere\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	if resp, _ := c.read("POST"); resp.StatusCode != 503 || resp.Close {
		t.Fatalf("%d close=%v", resp.StatusCode, resp.Close)
	}
	c.send("HEAD /x HTTP/1.1\r\nHost: nowhere\r\n\r\n")
	if h := c.head(); !strings.Contains(h, "Content-Length: 27\r\n") {
		t.Fatalf("HEAD: %q", h)
	}
	c.send("GET /none HTTP/1.1\r\nHost: nowhere\r\n\r\n")
	if resp, _ := c.read("GET"); resp.StatusCode != 500 || resp.Header.Get("X-Weft-Error") != "no_route" {
		t.Fatalf("no decision: %d %v", resp.StatusCode, resp.Header)
	}
	if res := r.result(t, 1); res.Status != 503 || !res.HeadWritten || res.Attempts != 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestNextAfterRefusedDial(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	refused := refusedAddr(t)
	var nextErr error
	r := &recRouter{addr: refused, next: func(req *Request, d *Decision, err error) bool {
		nextErr = err
		if d.Addr == refused && string(req.Path()) == "/retry" {
			d.Addr = be.addr()
			return true
		}
		return false
	}}
	addr := newEngine(t, &Server{Router: r})
	c := dial(t, addr)
	c.send("POST /retry HTTP/1.1\r\nHost: orders\r\nContent-Length: 4\r\n\r\nbody")
	resp, body := c.read("POST")
	if resp.StatusCode != 200 || decodeEcho(t, body).Body != "body" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var op *net.OpError
	if !errors.As(nextErr, &op) || op.Op != "dial" {
		t.Fatalf("Next got %v", nextErr)
	}
	if res := r.result(t, 1); res.Attempts != 2 || res.Err != nil {
		t.Fatalf("result %+v", res)
	}

	// Next says no: the engine's 503, and the connection carries on.
	c.send("GET /fail HTTP/1.1\r\nHost: orders\r\n\r\n")
	resp, body = c.read("GET")
	if resp.StatusCode != 503 || resp.Header.Get("X-Weft-Error") != "connect_failed" || !strings.Contains(body, `"error":"connect_failed"`) || resp.Close {
		t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
	}
	res := r.result(t, 2)
	if !errors.As(res.Err, &op) || op.Op != "dial" || res.Status != 503 || res.HeadWritten {
		t.Fatalf("result %+v", res)
	}

	// The Router's own answer, set in Finish, wins.
	r.finish = func(req *Request, d *Decision, res *Result) {
		if res.Err != nil {
			d.Status, d.Body = 503, []byte("mesh says no")
			d.Header = []Field{{Name: []byte("X-Weft-Error"), Value: []byte("app_unavailable")}}
		}
	}
	c.send("GET /fail HTTP/1.1\r\nHost: orders\r\n\r\n")
	resp, body = c.read("GET")
	if resp.StatusCode != 503 || resp.Header.Get("X-Weft-Error") != "app_unavailable" || body != "mesh says no" {
		t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
	}
}
