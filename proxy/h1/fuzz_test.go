package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
	"testing/iotest"
)

var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET http://orders/x?y HTTP/1.1\r\nHost: orders\r\nConnection: X-A, close\r\nX-A: 1\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\n",
	"INVALID CONNECTION PREFACE\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nExpect: 100-continue\r\n\r\n",
}

// FuzzParseRequest checks the request head parser: it must not panic or
// loop; what it accepts must satisfy its invariants; and the head the
// engine forwards for it must parse — by the engine and by net/http — to
// the same method, target, Host and body framing, so no request can mean
// one thing to the engine and another to the upstream.
func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkRequestHead(t, data)
		// Random bytes rarely make a valid request line; behind one, the
		// same input exercises the field rules.
		checkRequestHead(t, append([]byte("POST /p HTTP/1.1\r\n"), data...))
	})
}

func checkRequestHead(t *testing.T, data []byte) {
	{
		var hs headScan
		n, err := hs.scan(data, 8<<10, 50)
		if err != nil || n == 0 {
			return
		}
		var req Request
		var m reqMeta
		if err := parseRequest(data[:n], 50, &req, &m); err != nil || m.connect {
			return
		}
		if len(req.Fields) != len(m.hop) || req.Chunked && req.ContentLength != -1 || req.ContentLength < -1 {
			t.Fatalf("inconsistent: %+v", req)
		}
		for _, f := range req.Fields {
			if bytes.ContainsAny(f.Name, "\r\n: \t") || bytes.ContainsAny(f.Value, "\r\n\x00") {
				t.Fatalf("bad field %q: %q", f.Name, f.Value)
			}
		}
		if p := req.Path(); len(p) == 0 || p[0] != '/' && string(p) != "*" {
			t.Fatalf("path %q", p)
		}

		// What the engine sends upstream.
		var buf bytes.Buffer
		c := &conn{req: req, m: m}
		c.out = outbuf{buf: make([]byte, 0, 1024), dst: &buf}
		c.writeRequestHead(false)
		c.out.flush()
		fwd := buf.Bytes()

		var req2 Request
		var m2 reqMeta
		var hs2 headScan
		if n2, err := hs2.scan(fwd, 1<<20, 1000); err != nil || n2 != len(fwd) {
			t.Fatalf("forwarded head does not scan: %v\n%q", err, fwd)
		}
		if err := parseRequest(fwd, 1000, &req2, &m2); err != nil {
			t.Fatalf("forwarded head does not parse: %v\n%q", err, fwd)
		}
		if !bytes.Equal(req2.Method, req.Method) || !bytes.Equal(req2.Path(), req.Path()) || !bytes.Equal(req2.Host, req.Host) ||
			req2.Chunked != req.Chunked || req2.ContentLength != req.ContentLength {
			t.Fatalf("forwarded head reads differently:\n%q\n%q", data[:n], fwd)
		}

		hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(fwd)))
		if err != nil {
			t.Fatalf("net/http rejects the forwarded head: %v\n%q", err, fwd)
		}
		wantCL := max(req.ContentLength, 0)
		if req.Chunked {
			wantCL = -1
		}
		if hr.Method != string(req.Method) || hr.RequestURI != string(req.Path()) || hr.Host != string(req.Host) ||
			hr.ContentLength != wantCL || (len(hr.TransferEncoding) > 0) != req.Chunked {
			t.Fatalf("net/http reads the forwarded head differently: %s %s %s %d %v\n%q",
				hr.Method, hr.RequestURI, hr.Host, hr.ContentLength, hr.TransferEncoding, fwd)
		}
		// And where net/http accepts the original too, it agrees on framing.
		if or, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data[:n]))); err == nil && or.Method != "CONNECT" {
			if or.ContentLength != wantCL || (len(or.TransferEncoding) > 0) != req.Chunked {
				t.Fatalf("framing differs from net/http's: %d %v\n%q", or.ContentLength, or.TransferEncoding, data[:n])
			}
		}
	}
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: X-A\r\nX-A: 1\r\nKeep-Alive: 5\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 3\n\n",
}

// FuzzParseResponse does the same for response heads and the head the
// engine sends downstream.
func FuzzParseResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		var hs headScan
		n, err := hs.scan(data, 8<<10, 50)
		if err != nil || n == 0 {
			return
		}
		c := &conn{s: &Server{}}
		c.req.ProtoMinor, c.req.Method = 1, []byte("GET")
		if head {
			c.req.Method = []byte("HEAD")
		}
		if err := parseResponse(data[:n], 50, &c.resp); err != nil {
			return
		}
		r := &c.resp
		if r.status < 100 || r.status > 999 || len(r.fields) != len(r.hop) || r.chunked && r.contentLength >= 0 {
			t.Fatalf("inconsistent: %+v", r)
		}
		if r.status < 200 {
			return // relayed by relayInterim, without framing fields
		}
		mode := modeNone
		switch {
		case bodyless(c.req.Method, r.status):
		case r.chunked:
			mode = modeChunked
		case r.contentLength >= 0:
			mode = modeCL
		default:
			mode = modeEOF
		}
		var buf bytes.Buffer
		c.out = outbuf{buf: make([]byte, 0, 1024), dst: &buf}
		c.writeResponseHead(mode)
		c.out.flush()
		fwd := buf.Bytes()

		var r2 respMeta
		if err := parseResponse(fwd, 1000, &r2); err != nil {
			t.Fatalf("relayed head does not parse: %v\n%q", err, fwd)
		}
		if r2.status != r.status || r2.contentLength != r.contentLength && mode != modeEOF ||
			mode != modeNone && r2.chunked != (r.chunked || mode == modeEOF) {
			t.Fatalf("relayed head reads differently:\n%q\n%q", data[:n], fwd)
		}
		hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(fwd)), &http.Request{Method: string(c.req.Method)})
		if err != nil {
			t.Fatalf("net/http rejects the relayed head: %v\n%q", err, fwd)
		}
		if hr.StatusCode != r.status {
			t.Fatalf("net/http reads status %d\n%q", hr.StatusCode, fwd)
		}
		if mode == modeCL && hr.ContentLength != r.contentLength || (mode == modeChunked || mode == modeEOF) && len(hr.TransferEncoding) == 0 {
			t.Fatalf("net/http reads framing %d %v\n%q", hr.ContentLength, hr.TransferEncoding, fwd)
		}
	})
}

var chunkedSeeds = []string{
	"0\r\n\r\n",
	"5\r\nhello\r\n0\r\n\r\n",
	"5;ext=\"q\"\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n",
	"000001 \r\nx\r\n0\r\n\r\n",
	"5\r\nhello\n0\r\n\r\n",
	"fffffffffffffff\r\n",
	"1\r\nx\r\n0\r\nbad trailer\r\n\r\n",
}

// FuzzChunked checks the chunked decoder: no panic or hang on any input
// through short reads; what it accepts, net/http's decoder reads as the
// same data; and its canonical re-encoding decodes to the same data and
// re-encodes to itself.
func FuzzChunked(f *testing.F) {
	for _, s := range chunkedSeeds {
		f.Add([]byte(s))
	}
	lim := chunkLimits{maxTrailerBytes: 1024, maxTrailers: 10}
	decode := func(src []byte, dechunk bool) ([]byte, int64, error) {
		in := inbuf{buf: make([]byte, 512), src: iotest.HalfReader(bytes.NewReader(src))}
		var dst bytes.Buffer
		o := outbuf{buf: make([]byte, 0, 64), dst: &dst}
		rerr, werr := copyChunked(&in, &o, dechunk, lim)
		if rerr == nil && werr == nil {
			werr = o.flush()
		}
		if werr != nil {
			panic(werr)
		}
		return dst.Bytes(), in.consumed(), rerr
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, used, err := decode(data, false)
		if err != nil {
			return
		}
		payload, _, err := decode(data, true)
		if err != nil {
			t.Fatalf("dechunk fails where passing on did not: %v", err)
		}
		// net/http stops at the last chunk and leaves the trailer section
		// to its caller.
		got, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(data[:used])))
		if err != nil {
			t.Fatalf("net/http rejects what was accepted: %v\n%q", err, data[:used])
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("net/http decodes %q, the engine %q", got, payload)
		}
		again, used2, err := decode(out, false)
		if err != nil || used2 != int64(len(out)) || !bytes.Equal(again, out) {
			t.Fatalf("canonical form not stable: %v\n%q\n%q", err, out, again)
		}
		if !canonicalChunked(out) {
			t.Fatalf("not canonical: %q", out)
		}
	})
}

// canonicalChunked reports whether every chunk-size line of b is bare
// lowercase hex without leading zeros (no extensions).
func canonicalChunked(b []byte) bool {
	for {
		i := bytes.Index(b, []byte("\r\n"))
		if i <= 0 {
			return false
		}
		line := string(b[:i])
		if strings.Trim(line, "0123456789abcdef") != "" || len(line) > 1 && line[0] == '0' {
			return false
		}
		var n int
		for _, c := range line {
			n = n*16 + strings.IndexRune("0123456789abcdef", c)
		}
		if n == 0 {
			return true
		}
		b = b[i+2+n+2:]
	}
}
