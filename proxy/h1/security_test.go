package h1

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRejected covers the request-smuggling and limit rules: each request
// is answered 400, 431, 501 or 505 and its connection closed, and none of
// them reaches the upstream.
func TestRejected(t *testing.T) {
	var reached atomic.Int64
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		echoHandler(w, r)
	}))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()}, Limits: Limits{MaxHeaderBytes: 4096, MaxHeaders: 20}})
	many := strings.Repeat("X-A: 1\r\n", 21)
	tests := []struct {
		name, req string
		status    int
	}{
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400},
		{"TE chunked, gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
		{"TE chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400},
		{"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400},
		{"TE chunked with junk", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400},
		{"TE vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", 400},
		{"TE space before colon with CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400},
		{"obs-fold hiding TE with CL", "POST / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		{"target NUL", "GET /a\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"CL differing", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400},
		{"CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"CL plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400},
		{"CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", 400},
		{"CL inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400},
		{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400},
		{"CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n", 400},
		{"tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400},
		{"obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tTransfer-Encoding: chunked\r\n\r\n", 400},
		{"field name not tchar", "GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", 400},
		{"field name NUL", "GET / HTTP/1.1\r\nHost: a\r\nX\x00A: 1\r\n\r\n", 400},
		{"empty field name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", 400},
		{"value CTL", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x01\r\n\r\n", 400},
		{"value NUL", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400},
		{"value bare CR", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n", 400},
		{"value DEL", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x7f\r\n\r\n", 400},
		{"method not tchar", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"empty method", " / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"target with space", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"target CTL", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"target fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"target bad escape", "GET /a%2 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"target bad escape absolute", "GET http://a/%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"target relative", "GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"target other scheme", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"target userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"target empty authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"star not OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"no Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400},
		{"no Host absolute", "GET http://a/ HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
		{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"bare LF request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
		{"bare LF field", "GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n", 400},
		{"bare LF end", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400},
		{"bare LF only", "GET / HTTP/1.1\nHost: a\n\n", 400},
		{"leading bare LF", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"version junk", "GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400},
		{"version missing", "GET /\r\nHost: a\r\n\r\n", 400},
		{"HTTP/0.9-style", "GET /\r\n\r\n", 400},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
		{"HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505},
		{"HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505},
		{"preface without fallback", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
		{"CONNECT without fallback", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501},
		{"request line too long", "GET /" + strings.Repeat("a", 5000) + " HTTP/1.1\r\nHost: a\r\n\r\n", 431},
		{"head too large", "GET / HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", 4000) + "\r\nX-B: " + strings.Repeat("b", 100) + "\r\n\r\n", 431},
		{"too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + many + "\r\n", 431},
		{"leading CRLFs too many", strings.Repeat("\r\n", 2100) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := reached.Load()
			c := dial(t, addr)
			c.send(tt.req)
			resp, body := c.read("GET")
			if resp.StatusCode != tt.status || !resp.Close {
				t.Fatalf("status %d close %v, want %d and close: %s", resp.StatusCode, resp.Close, tt.status, body)
			}
			if !strings.Contains(body, `"error":"`) {
				t.Errorf("body %q", body)
			}
			if !c.closed() {
				t.Fatal("connection not closed")
			}
			if reached.Load() != before {
				t.Fatal("the request reached the upstream")
			}
		})
	}
}

// TestNotHTTPClosed: a request line whose version is no HTTP version at
// all (h2spec's invalid connection preface) is no HTTP/1.x request: the
// connection is closed without an answer, nothing is forwarded and nothing
// handed to the Fallback. Lines that look like HTTP keep their answer
// (TestRejected).
func TestNotHTTPClosed(t *testing.T) {
	var reached, handedOff atomic.Int64
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		echoHandler(w, r)
	}))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()}, Fallback: func(c net.Conn) {
		handedOff.Add(1)
		c.Close()
	}})
	for _, tt := range []struct{ name, req string }{
		{"h2spec invalid preface", "INVALID CONNECTION PREFACE\r\n\r\n"},
		{"RTSP", "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"},
		{"word version", "GET / PREFACE\r\nHost: a\r\n\r\n"},
		{"bad method too", "G(T / SIP/2.0\r\nHost: a\r\n\r\n"},
		{"after a request", "GET /first HTTP/1.1\r\nHost: a\r\n\r\nINVALID CONNECTION PREFACE\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := reached.Load()
			c := dial(t, addr)
			c.send(tt.req)
			if strings.HasPrefix(tt.req, "GET /first ") {
				if _, body := c.read("GET"); decodeEcho(t, body).URI != "/first" {
					t.Fatal(body)
				}
				before++
			}
			if !c.closed() {
				t.Fatal("connection not closed")
			}
			if reached.Load() != before || handedOff.Load() != 0 {
				t.Fatalf("reached the upstream %d times, handed off %d", reached.Load()-before, handedOff.Load())
			}
		})
	}
}

// TestAccepted pins the lenient side of the same rules.
func TestAccepted(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoHandler))
	addr := newEngine(t, &Server{Router: &recRouter{addr: be.addr()}})
	tests := []struct{ name, req, wantBody string }{
		{"escapes", "POST /a%2F%e2%82%ac?q=100% HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx", "x"},
		{"identical CLs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "abc"},
		{"CL leading zeros", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc", "abc"},
		{"TE with OWS and case", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  ChUnKeD \r\n\r\n3\r\nabc\r\n0\r\n\r\n", "abc"},
		{"value with tab and obs-text", "POST / HTTP/1.1\r\nHost: a\r\nX-A: a\tb\xff\r\nContent-Length: 1\r\n\r\nx", "x"},
		{"empty Host", "POST / HTTP/1.1\r\nHost:\r\nContent-Length: 1\r\n\r\nx", "x"},
		{"leading CRLF", "\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx", "x"},
		{"chunk ext and trailer", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b;c=\"d\"\r\nx\r\n0\r\nX-T: 1\r\n\r\n", "x"},
		{"chunk size padded", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0001 \r\nx\r\n0\r\n\r\n", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			c.send(tt.req)
			resp, body := c.read("POST")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if e := decodeEcho(t, body); e.Body != tt.wantBody {
				t.Fatalf("body %q", e.Body)
			}
		})
	}
}

// TestBadChunkedBody: the head was fine and forwarded, the body is not.
// The client gets a 400 and the connection closes; so does the upstream's.
func TestBadChunkedBody(t *testing.T) {
	tests := []struct{ name, body string }{
		{"size not hex", "zz\r\nab\r\n0\r\n\r\n"},
		{"size empty", "\r\nab\r\n0\r\n\r\n"},
		{"size overflow", "1000000000000000\r\n"},
		{"size negative", "-1\r\n"},
		{"size with 0x", "0x2\r\nab\r\n0\r\n\r\n"},
		{"ext bare LF", "2;a\nab\r\n0\r\n\r\n"},
		{"ext with CTL", "2;a\x01\r\nab\r\n0\r\n\r\n"},
		{"ext without semicolon", "2 a\r\nab\r\n0\r\n\r\n"},
		{"space before semicolon", "2 ;a\r\nab\r\n0\r\n\r\n"},
		{"data longer than size", "2\r\nabc\r\n0\r\n\r\n"},
		{"bare LF size line", "2\nab\r\n0\r\n\r\n"},
		{"bare LF after data", "2\r\nab\n0\r\n\r\n"},
		{"size line too long", "2;" + strings.Repeat("a", 5000) + "\r\nab\r\n0\r\n\r\n"},
		{"bad trailer", "0\r\nX A: 1\r\n\r\n"},
		{"trailer obs-fold", "0\r\nX-A: 1\r\n 2\r\n\r\n"},
	}
	var upstreamClosed atomic.Int64
	up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		readRequestHead(br)
		io.Copy(io.Discard, br)
		upstreamClosed.Add(1)
	})
	r := &recRouter{addr: up}
	addr := newEngine(t, &Server{Router: r})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			c.send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + tt.body)
			resp, _ := c.read("POST")
			if resp.StatusCode != 400 || !resp.Close {
				t.Fatalf("status %d close %v", resp.StatusCode, resp.Close)
			}
			if !c.closed() {
				t.Fatal("not closed")
			}
			if res := r.result(t, i+1); !errors.Is(res.Err, ErrBadRequest) {
				t.Fatalf("Err = %v", res.Err)
			}
		})
	}
}

// TestMalformedUpstreamResponse: the engine holds upstreams to the same
// rules and answers 502 for them.
func TestMalformedUpstreamResponse(t *testing.T) {
	tests := []struct{ name, resp string }{
		{"garbage", "garbage\r\n\r\n"},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n"},
		{"TE and CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"two CLs", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"},
		{"bad CL", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"},
		{"gzip TE", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n"},
		{"status not digits", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"},
		{"status 99", "HTTP/1.1 099 OK\r\nContent-Length: 0\r\n\r\n"},
		{"version", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"101 unasked", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"},
		{"head too large", "HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", 70000) + "\r\n\r\n"},
		{"too many fields", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: 1\r\n", 101) + "\r\n"},
		{"closed before answering", ""},
		{"closed mid-head", "HTTP/1.1 200 OK\r\nContent-"},
		{"endless interims", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 40)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
				readRequestHead(br)
				io.WriteString(c, tt.resp)
			})
			r := &recRouter{addr: up}
			addr := newEngine(t, &Server{Router: r})
			c := dial(t, addr)
			c.send("GET / HTTP/1.0\r\n\r\n") // HTTP/1.0: interims are not relayed
			resp, body := c.read("GET")
			if resp.StatusCode != 502 || resp.Header.Get("X-Weft-Error") != "upstream_reset" || !strings.Contains(body, `"error":"upstream_reset","message":"h1: `) {
				t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
			}
			res := r.result(t, 1)
			if !errors.Is(res.Err, ErrMalformedResponse) && !errors.Is(res.Err, ErrUpstreamClosed) || res.HeadWritten || res.Status != 502 {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

func TestUpstreamFailsMidBody(t *testing.T) {
	// The engine sends what it has before waiting for more, so once the
	// upstream stalls the head is out and the downstream can only be cut
	// off; a response that fails within what one read brought is replaced
	// by a 502 instead.
	tests := []struct {
		name, resp string
		sent       bool
	}{
		{"content-length short", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this", true},
		{"chunked unterminated", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", true},
		{"chunked malformed", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
				readRequestHead(br)
				io.WriteString(c, tt.resp)
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0) // a reset, not a clean close
				}
			})
			r := &recRouter{addr: up}
			addr := newEngine(t, &Server{Router: r})
			c := dial(t, addr)
			c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.sent {
				b, _ := io.ReadAll(resp.Body)
				if res := r.result(t, 1); resp.StatusCode != 502 || res.HeadWritten || !errors.Is(res.Err, ErrMalformedResponse) {
					t.Fatalf("status %d %q, result %+v", resp.StatusCode, b, res)
				}
				return
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Fatal("truncated body read without error")
			}
			if !c.closed() {
				t.Fatal("downstream left open")
			}
			res := r.result(t, 1)
			if res.Err == nil || !res.HeadWritten {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// TestBadBodyAnswerIgnoresFinishStatus: the engine's 400 for a malformed
// body after the head went upstream does not depend on what the Router's
// Finish leaves in Result.Status (the outbound router copied its
// Decision.Status, 0, there and the client got a 500).
func TestBadBodyAnswerIgnoresFinishStatus(t *testing.T) {
	up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		readRequestHead(br)
		io.Copy(io.Discard, br)
	})
	r := &recRouter{addr: up, finish: func(_ *Request, d *Decision, res *Result) { res.Status = d.Status }}
	addr := newEngine(t, &Server{Router: r})
	c := dial(t, addr)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
	resp, body := c.read("POST")
	if resp.StatusCode != 400 || resp.Header.Get("X-Weft-Error") != "bad_request" {
		t.Fatalf("status %d %q: %s", resp.StatusCode, resp.Header.Get("X-Weft-Error"), body)
	}
}
