package h1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// roundTripHTTP forwards the request through d.Transport instead of an
// upstream connection of the engine's own: the way to an upstream that
// speaks another protocol (an h2c-only app behind the inbound). The
// request becomes an *http.Request (its body streamed through a pipe from
// the connection's buffer), the *http.Response is written back as
// HTTP/1.1 with the engine's framing rules (Content-Length when known,
// else chunked with the trailers, or close-delimited to HTTP/1.0). This
// path allocates per request — it is net/http's transport — and has no
// retries (Retrier) or response idle timeout; it is there for protocol
// conversion, not speed.
func (c *conn) roundTripHTTP() {
	req, d, res, m := &c.req, &c.d, &c.res, &c.m
	if _, err := checkFields(d.Set, true); err != nil {
		res.Err = err
		return
	}
	if _, err := checkFields(d.RespSet, false); err != nil {
		res.Err = err
		return
	}
	u, err := url.ParseRequestURI(string(req.path))
	if err != nil {
		res.Err = fmt.Errorf("%w: %w", ErrBadRequest, err)
		return
	}
	u.Scheme, u.Host = "http", d.Addr
	hr := &http.Request{Method: string(req.Method), URL: u, Host: string(req.Host), Header: make(http.Header, len(req.Fields)+len(d.Set)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, ContentLength: 0, Body: http.NoBody}
	for i := range req.Fields {
		if f := &req.Fields[i]; !m.hop[i] && !inSet(d.Set, f.Name) {
			hr.Header.Add(string(f.Name), string(f.Value))
		}
	}
	for i := range d.Set {
		if f := &d.Set[i]; fieldKind(f.Name) == kHost {
			hr.Host = string(f.Value)
		} else {
			hr.Header.Set(string(f.Name), string(f.Value))
		}
	}
	if m.teTrailers {
		hr.Header.Set("Te", "trailers")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hr = hr.WithContext(ctx)

	type bodySent struct{ rerr, werr error }
	var sent chan bodySent
	var pr *io.PipeReader
	if c.body == bodyUnread {
		if m.expect100 && c.in.r == c.in.w && req.ProtoMinor == 1 {
			// The client holds the body back for a 100; the transport
			// would wait for the body: the engine answers the Expect.
			if _, err := io.WriteString(c.downW, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
				c.closeAfter = true
				return
			}
			hr.Header.Del("Expect")
		}
		var pw *io.PipeWriter
		pr, pw = io.Pipe()
		hr.Body, hr.ContentLength = pr, req.ContentLength
		c.body = bodyPartial
		sent = make(chan bodySent, 1)
		blk := blockPool.Get().(*block)
		go func() {
			// Only this goroutine reads c.in until sent is received.
			o := outbuf{buf: blk[:0], dst: pw}
			var bd bodySent
			if req.Chunked {
				bd.rerr, bd.werr = copyChunked(&c.in, &o, true, c.chunkLimits())
			} else {
				bd.rerr, bd.werr = copyN(&c.in, &o, req.ContentLength)
			}
			if bd.rerr == nil && bd.werr == nil {
				bd.werr = o.flush()
			}
			pw.CloseWithError(bd.rerr)
			blockPool.Put(blk)
			sent <- bd
		}()
	}
	// waitBody ends the request body's goroutine (an upstream may answer
	// before reading it all) and records where the body stands.
	waitBody := func() {
		if sent == nil {
			return
		}
		pr.CloseWithError(errAnswered)
		bd := <-sent
		sent = nil
		switch {
		case bd.rerr != nil:
			c.closeAfter = true
			if pe, ok := bd.rerr.(*protoError); ok && res.Err == nil {
				res.Err = fmt.Errorf("%w: %w", ErrBadRequest, pe)
			}
		case bd.werr != nil:
			c.closeAfter = true // the rest of the body is still on the connection
		default:
			c.body = bodyDone
		}
	}
	defer waitBody()

	res.Attempts++
	res.UpstreamStart = time.Now()
	resp, err := d.Transport.RoundTrip(hr)
	if err != nil {
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			err = fmt.Errorf("%w: %w", ErrUpstreamClosed, err)
		}
		waitBody()
		if res.Err == nil {
			res.Err = err
		}
		return
	}
	defer resp.Body.Close()
	res.UpstreamHeaders = time.Now()
	res.Status = resp.StatusCode
	res.GRPCStatus = resp.Header.Get("Grpc-Status")
	c.writeHTTPResponse(resp, waitBody)
	if v := resp.Trailer.Get("Grpc-Status"); v != "" {
		res.GRPCStatus = v
	}
}

var errAnswered = errors.New("h1: the upstream answered; the rest of the request body is not sent")

// writeHTTPResponse writes resp downstream as HTTP/1.1 (c.out points
// downstream), then its body and trailers.
func (c *conn) writeHTTPResponse(resp *http.Response, waitBody func()) {
	req, res, r, o := &c.req, &c.res, &c.resp, &c.out
	code := strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
	r.code = []byte(code)
	r.status, r.minor = resp.StatusCode, 1
	r.framing = framing{contentLength: -1}
	r.fields, r.hop = r.fields[:0], r.hop[:0]
	for k, vs := range resp.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Te", "Trailer", "Content-Length":
			continue
		case "Date":
			r.hasDate = true
		}
		for _, v := range vs {
			if allIn([]byte(v), &valueByte) && allIn([]byte(k), &tchar) {
				r.fields = append(r.fields, Field{Name: []byte(k), Value: []byte(v)})
				r.hop = append(r.hop, false)
			}
		}
	}
	mode := modeNone
	switch {
	case bodyless(req.Method, resp.StatusCode):
		if resp.ContentLength >= 0 {
			r.contentLength = resp.ContentLength
		}
	case resp.ContentLength >= 0 && len(resp.Trailer) == 0:
		mode, r.contentLength = modeCL, resp.ContentLength
	default:
		mode = modeChunked
	}
	c.writeResponseHead(mode)
	res.HeadWritten = true
	if mode == modeNone {
		waitBody()
		if err := o.flush(); err != nil {
			res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
			c.closeAfter = true
		}
		return
	}
	chunked := mode == modeChunked && req.ProtoMinor == 1
	blk := blockPool.Get().(*block)
	defer blockPool.Put(blk)
	var n int64
	for {
		k, rerr := resp.Body.Read(blk[:])
		if k > 0 {
			if chunked {
				o.writeHex(int64(k))
				o.writeString("\r\n")
			}
			o.write(blk[:k])
			if chunked {
				o.writeString("\r\n")
			}
			n += int64(k)
			if err := o.flush(); err != nil {
				res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
				c.closeAfter = true
				return
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			res.Err = upstreamError(rerr, nil)
			c.closeAfter = true // the downstream cannot be told otherwise
			o.flush()
			return
		}
	}
	if mode == modeCL && n != resp.ContentLength {
		res.Err = upstreamError(io.ErrUnexpectedEOF, nil)
		c.closeAfter = true
		o.flush()
		return
	}
	if chunked {
		o.writeString("0\r\n")
		for k, vs := range resp.Trailer {
			for _, v := range vs {
				if fieldKind([]byte(k)) == kOther && allIn([]byte(v), &valueByte) && allIn([]byte(k), &tchar) {
					o.writeString(k)
					o.writeString(": ")
					o.writeString(v)
					o.writeString("\r\n")
				}
			}
		}
		o.writeString("\r\n")
	}
	waitBody()
	if err := o.flush(); err != nil {
		res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
		c.closeAfter = true
	}
}
