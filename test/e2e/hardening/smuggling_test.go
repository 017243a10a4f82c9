package hardening_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// smuggle is one HTTP/1.1 hygiene case: raw bytes a client sends, the
// statuses it must get back, and the requests the backend must receive —
// by target, each complete and well framed. A request target "/smuggled"
// is what a desync would make the backend see; it never may.
type smuggle struct {
	name   string
	send   string
	status []int    // the responses, in order (1xx included)
	alt    int      // also accepted in place of the last status
	close  bool     // the connection must be closed after them
	want   []string // targets the backend receives, complete
	// partial: the backend may also see one request cut short (a head
	// forwarded before its chunked body turned out bad) and then the close.
	partial bool
	check   func(rs []received) error
}

const smuggled = "GET /smuggled HTTP/1.1\r\nHost: back\r\n\r\n"

// smuggleCases: RFC 9112 §6, §7 and §11 cases, and the framing ones
// proxies have got wrong (CL.TE, TE.CL, TE.TE obfuscations).
var smuggleCases = []smuggle{
	{name: "CL and TE", send: "POST /ok HTTP/1.1\r\nHost: back\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true},
	{name: "TE then CL (TE.CL)", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1\r\nx\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true},
	{name: "CL conflicting", send: "POST /ok HTTP/1.1\r\nHost: back\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc" + smuggled, status: []int{400}, close: true},
	{name: "CL list", send: "POST /ok HTTP/1.1\r\nHost: back\r\nContent-Length: 3, 40\r\n\r\nabc" + smuggled, status: []int{400}, close: true},
	{name: "CL duplicate identical", send: "POST /ok HTTP/1.1\r\nHost: back\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", status: []int{200}, want: []string{"/ok"}, check: body("abc")},
	{name: "CL signed", send: "POST /ok HTTP/1.1\r\nHost: back\r\nContent-Length: +3\r\n\r\nabc", status: []int{400}, close: true},
	{name: "CL negative", send: "POST /ok HTTP/1.1\r\nHost: back\r\nContent-Length: -1\r\n\r\n" + smuggled, status: []int{400}, close: true},
	{name: "TE chunked, identity", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled, status: []int{400}, alt: 501, close: true},
	{name: "TE identity, chunked", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n" + smuggled, status: []int{400}, alt: 501, close: true},
	{name: "TE xchunked", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled, status: []int{400}, alt: 501, close: true},
	{name: "TE chunked twice", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true},
	{name: "TE space before colon", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true},
	{name: "TE vertical tab", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true},
	{name: "TE tab OWS and case", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding:\tChunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status: []int{200}, want: []string{"/ok"}, check: body("abc")},
	{name: "TE in HTTP/1.0", send: "POST /ok HTTP/1.0\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true},
	{name: "obs-fold", send: "GET /ok HTTP/1.1\r\nHost: back\r\nX-A: 1\r\n 2\r\n\r\n", status: []int{400}, close: true},
	{name: "obs-fold hiding TE", send: "POST /ok HTTP/1.1\r\nHost: back\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", status: []int{400}, close: true},
	{name: "bare LF between fields", send: "POST /ok HTTP/1.1\r\nHost: back\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", status: []int{400}, close: true},
	{name: "bare LF request line", send: "GET /ok HTTP/1.1\nHost: back\r\n\r\n", status: []int{400}, close: true},
	{name: "NUL in value", send: "GET /ok HTTP/1.1\r\nHost: back\r\nX-A: a\x00b\r\n\r\n", status: []int{400}, close: true},
	{name: "bare CR in value", send: "GET /ok HTTP/1.1\r\nHost: back\r\nX-A: a\rTransfer-Encoding: chunked\r\n\r\n", status: []int{400}, close: true},
	{name: "NUL in target", send: "GET /ok\x00 HTTP/1.1\r\nHost: back\r\n\r\n", status: []int{400}, close: true},
	{name: "chunk size not hex", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true, partial: true},
	{name: "chunk size overflow", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nab\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true, partial: true},
	{name: "chunk size with 0x", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true, partial: true},
	{name: "chunk data longer than size", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true, partial: true},
	{name: "chunk ext with CTL", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\n2;a\x01\r\nab\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true, partial: true},
	{name: "chunk ext bare LF", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nab\r\n0\r\n\r\n" + smuggled, status: []int{400}, close: true, partial: true},
	{name: "chunk ext dropped", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\n2;name=\"v\";x\r\nab\r\n0\r\n\r\n", status: []int{200}, want: []string{"/ok"}, check: body("ab")},
	{name: "chunk line oversized", send: "POST /ok HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\n2;" + strings.Repeat("e", 70<<10) + "\r\nab\r\n0\r\n\r\n", status: []int{400}, alt: 413, close: true, partial: true},
	{name: "request line oversized", send: "GET /" + strings.Repeat("a", 70<<10) + " HTTP/1.1\r\nHost: back\r\n\r\n", status: []int{431}, alt: 414, close: true},
	{name: "head oversized", send: "GET /ok HTTP/1.1\r\nHost: back\r\nX-A: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", status: []int{431}, close: true},
	{name: "too many fields", send: "GET /ok HTTP/1.1\r\nHost: back\r\n" + strings.Repeat("X-A: 1\r\n", 101) + "\r\n", status: []int{431}, close: true},
	{name: "two Hosts", send: "GET /ok HTTP/1.1\r\nHost: back\r\nHost: evil\r\n\r\n", status: []int{400}, close: true},
	{name: "no Host", send: "GET /ok HTTP/1.1\r\n\r\n", status: []int{400}, close: true},
	{name: "absolute-form wins over Host", send: "GET http://back/abs?q=1 HTTP/1.1\r\nHost: evil\r\n\r\n", status: []int{200}, want: []string{"/abs?q=1"}, check: func(rs []received) error {
		if h := rs[0].header.Get("Host"); h == "evil" {
			return fmt.Errorf("backend got Host %q", h)
		}
		return nil
	}},
	{name: "absolute-form other scheme", send: "GET ftp://back/x HTTP/1.1\r\nHost: back\r\n\r\n", status: []int{400}, close: true},
	{name: "HTTP/1.0 keep-alive", send: "GET /a HTTP/1.0\r\nHost: back\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: back\r\n\r\n", status: []int{200, 200}, close: true, want: []string{"/a", "/b"}},
	{name: "HTTP/1.0 closes", send: "GET /a HTTP/1.0\r\nHost: back\r\n\r\n" + smuggled, status: []int{200}, close: true, want: []string{"/a"}},
	{name: "pipelined", send: "GET /p1 HTTP/1.1\r\nHost: back\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: back\r\nContent-Length: 2\r\n\r\nabPOST /p3 HTTP/1.1\r\nHost: back\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nc\r\n0\r\n\r\n", status: []int{200, 200, 200}, want: []string{"/p1", "/p2", "/p3"}},
	{name: "pipelined then malformed", send: "GET /p1 HTTP/1.1\r\nHost: back\r\n\r\nGET /p2 HTTP/1.1\r\nHost: back\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab" + smuggled, status: []int{200, 400}, close: true, want: []string{"/p1"}},
	{name: "Expect 100-continue", send: "POST /exp HTTP/1.1\r\nHost: back\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", status: []int{100, 200}, want: []string{"/exp"}, check: body("abc")},
	{name: "hop-by-hop named in Connection", send: "GET /hop HTTP/1.1\r\nHost: back\r\nConnection: X-Secret, Keep-Alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nX-Kept: 1\r\n\r\n", status: []int{200}, want: []string{"/hop"}, check: func(rs []received) error {
		for _, h := range []string{"X-Secret", "Keep-Alive", "Proxy-Connection", "Te"} {
			if v := rs[0].header.Get(h); v != "" {
				return fmt.Errorf("hop-by-hop %s: %q forwarded", h, v)
			}
		}
		if rs[0].header.Get("X-Kept") != "1" {
			return fmt.Errorf("X-Kept dropped: %v", rs[0].header)
		}
		return nil
	}},
	{name: "Upgrade the app does not take", send: "GET /up HTTP/1.1\r\nHost: back\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", status: []int{200}, want: []string{"/up"}},
	{name: "h2c Upgrade", send: "GET /h2c HTTP/1.1\r\nHost: back\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", status: []int{200}, want: []string{"/h2c"}},
	{name: "version 1.2", send: "GET /ok HTTP/1.2\r\nHost: back\r\n\r\n", status: []int{505}, close: true},
}

func body(want string) func([]received) error {
	return func(rs []received) error {
		if rs[0].body != want {
			return fmt.Errorf("backend got body %q, want %q", rs[0].body, want)
		}
		return nil
	}
}

// TestSmuggling runs the table through the client and server sidecar pair
// (outbound → inbound → app) and straight against the server sidecar's
// inbound listener, and reads the backend's recorded bytes after each.
func TestSmuggling(t *testing.T) {
	if len(smuggleCases) < 30 {
		t.Fatalf("%d cases", len(smuggleCases))
	}
	be := newRawBackend(t)
	m := startMesh(t, be.port(), "")
	m.waitRoutable(t)
	for _, path := range []struct{ name, addr string }{{"pair", m.outbound}, {"inbound", m.inbound}} {
		t.Run(path.name, func(t *testing.T) {
			for _, tc := range smuggleCases {
				t.Run(tc.name, func(t *testing.T) { runSmuggle(t, be, path.addr, tc) })
			}
		})
	}
}

func runSmuggle(t *testing.T, be *rawBackend, addr string, tc smuggle) {
	mk := be.mark()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		// A rejected head may be answered and the connection closed before
		// the rest is written: that write error is not the test's.
		io.WriteString(c, tc.send)
	}()
	br := bufio.NewReader(c)
	var got []int
	for len(got) < len(tc.status) {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("after statuses %v (want %v): %v", got, tc.status, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 400 && !strings.Contains(string(b), `"error"`) {
			t.Errorf("status %d without a reason: %q", resp.StatusCode, b)
		}
		got = append(got, resp.StatusCode)
	}
	if !statusesMatch(got, tc.status, tc.alt) {
		t.Errorf("statuses %v, want %v", got, tc.status)
	}
	if tc.close {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := br.Read(make([]byte, 1))
		if !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("connection not closed after the answer: read %d, %v", n, err)
		}
	} else {
		// Still usable: one more request on it is answered.
		io.WriteString(c, "GET /after HTTP/1.1\r\nHost: back\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("keep-alive after the case: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
	}
	// What the backend received. The sidecars forward synchronously, so
	// everything it got arrived before the answer; a short wait catches a
	// late smuggled write.
	time.Sleep(100 * time.Millisecond)
	var rs []received
	partials := 0
	for _, raw := range be.since(mk) {
		fr, err := frame(raw)
		if err != nil {
			t.Fatalf("backend received bytes that are not well framed: %v\n%q", err, truncate(raw))
		}
		for _, r := range fr {
			if !r.complete {
				partials++
				continue
			}
			if r.target == "/after" {
				continue
			}
			rs = append(rs, r)
		}
	}
	var targets []string
	for _, r := range rs {
		targets = append(targets, r.target)
	}
	if !slices.Equal(targets, tc.want) {
		t.Fatalf("backend received %q, want %q", targets, tc.want)
	}
	if partials > 0 && !tc.partial || partials > 1 {
		t.Fatalf("backend received %d requests cut short", partials)
	}
	if tc.check != nil && len(rs) > 0 {
		if err := tc.check(rs); err != nil {
			t.Error(err)
		}
	}
}

// statusesMatch: got is want, or want with its last status replaced by alt.
func statusesMatch(got, want []int, alt int) bool {
	if slices.Equal(got, want) {
		return true
	}
	if alt == 0 || len(want) == 0 {
		return false
	}
	w := slices.Clone(want)
	w[len(w)-1] = alt
	return slices.Equal(got, w)
}

func truncate(b []byte) []byte {
	if len(b) > 600 {
		return append(b[:600:600], "…"...)
	}
	return b
}
