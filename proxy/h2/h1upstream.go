package h2

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/proxy/h1"
)

// HTTP/2 to an HTTP/1.1 upstream (Decision.HTTP1): the stream goes as an
// HTTP/1.1 request on a connection of proxy/h1's pool, written and read
// with that engine's framing and response parser, instead of through an
// http.Handler (an http.Request, header maps, httputil.ReverseProxy and
// net/http's transport with its two goroutines per connection). What the
// conversion does (RFC 9113 §8.2.3, RFC 9112):
//   - :authority becomes Host, :path the origin-form target; cookie
//     fields are joined with "; "; hop-by-hop fields are dropped both ways.
//   - A body of known length (content-length) goes with Content-Length,
//     one of unknown length chunked, with the caller's trailers; a
//     request without a body has none (Content-Length: 0 for POST, PUT,
//     PATCH).
//   - The response's chunked trailers become the stream's trailing
//     HEADERS; a Content-Length is passed on as content-length.
//
// Flow control stays end to end: the caller's window is credited only
// once a chunk has been written to the upstream's socket, and the
// upstream is read only as fast as the caller's window takes DATA.

// forwardH1 runs one downstream stream against HTTP/1.1 upstreams, with
// the Router's tries as the h2 forwarder has them.
func forwardH1(s *Server, c *conn, st *stream, req *Request, d *Decision, res *Result) {
	fw := &forwarder{s: s, c: c, st: st, req: req, d: d, res: res,
		body: &heldBody{in: &st.in, limit: d.ReplayLimit}}
	for {
		if d.Addr == "" || d.HTTP1 == nil {
			fw.answer()
			return
		}
		res.UpstreamStart = time.Now()
		x, err := d.HTTP1.Open(d.Addr)
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrRefused, err)
			if fw.again(nil, err) {
				continue
			}
			fw.fail(err)
			return
		}
		if !fw.tryH1(x) {
			return
		}
	}
}

// tryH1 sends the request on x and relays the answer; true asks for
// another try (the Router wanted one, and x is closed).
func (fw *forwarder) tryH1(x *h1.Exchange) (retry bool) {
	c, st, req, d, res := fw.c, fw.st, fw.req, fw.d, fw.res
	// A caller's reset (or its connection's end) closes the upstream
	// connection under whatever waits on it.
	stopWatch, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-st.done:
			x.Abort()
		case <-stopWatch:
		}
	}()
	var p *pump
	end := func(pool bool) {
		if p != nil && pool && x.Switched() {
			// A tunnel the app half-closed: the caller's side goes on
			// until it ends its stream or resets it.
			<-p.done
		} else if p != nil && pool {
			// The whole answer is in; the body's last write may still be
			// returning. One that is not done by now is abandoned.
			select {
			case <-p.done:
			case <-time.After(100 * time.Millisecond):
				pool = false
			}
		}
		if !pool {
			x.Abort()
		}
		p.halt()
		close(stopWatch)
		<-watched
		if p != nil {
			res.ReqBytes = p.n.Load()
		}
		if pool {
			x.Done()
		} else {
			x.Close()
		}
	}
	if err := writeH1Head(x, req, d); err != nil {
		end(false)
		err = fmt.Errorf("%w: %w", ErrUpstreamReset, err)
		if fw.again(nil, err) {
			return true
		}
		fw.fail(err)
		return false
	}
	// An upgrade's bytes go only once the app switched.
	if !req.EndStream && req.Protocol == "" {
		fw.body.rewind()
		p = startH1Pump(fw.body, c, st, x)
	}
	err := x.ReadHead(d.HeaderTimeout)
	if p != nil && !fw.body.whole() {
		d.Unreplayable = true
	}
	if err != nil {
		end(false)
		switch {
		case isClosed(st.done):
			res.Err = ErrDownstreamGone
			return false
		case errors.Is(err, os.ErrDeadlineExceeded):
			err = ErrUpstreamTimeout
		default:
			err = fmt.Errorf("%w: %w", ErrUpstreamReset, err)
		}
		if fw.again(nil, err) {
			return true
		}
		fw.fail(err)
		return false
	}
	res.UpstreamHeaders = time.Now()
	fields := h1ResponseFields(x, req, d)
	switched := x.Switched()
	if switched {
		fields = switchedFields(fields)
	}
	ended := x.Ended()
	resp := &Response{Status: x.Status(), Fields: fields[1:], EndStream: ended, At: res.UpstreamHeaders}
	if switched {
		resp.Status = 200 // what the caller gets
	}
	if fw.again(resp, nil) {
		end(false)
		return true
	}
	res.Status = resp.Status
	if ended {
		res.GRPCStatus = get(fields, "grpc-status")
	}
	if err := c.writeHeaders(st, ended, fields); err != nil {
		end(false)
		res.Err = err
		return false
	}
	res.HeadWritten = true
	if switched && !req.EndStream {
		d.Unreplayable = true
		p = startH1Pump(fw.body, c, st, x)
	}
	x.SetIdle(d.StreamIdle)
	for !ended {
		chunk, err := x.Next()
		if err == io.EOF {
			var werr error
			if tr := h1Trailers(x.Trailers()); len(tr) > 0 {
				res.GRPCStatus = get(tr, "grpc-status")
				werr = c.writeHeaders(st, true, tr)
			} else {
				werr = c.writeData(st, nil, true)
			}
			if werr != nil {
				res.Err = werr
				end(false)
				return false
			}
			break
		}
		if err != nil {
			end(false)
			switch {
			case isClosed(st.done):
				res.Err = ErrDownstreamGone
			case errors.Is(err, os.ErrDeadlineExceeded):
				c.writeReset(st, http2.ErrCodeCancel)
				res.Err = ErrStreamIdle
			default:
				c.writeReset(st, http2.ErrCodeInternal)
				res.Err = fmt.Errorf("%w: %w", ErrUpstreamReset, err)
			}
			return false
		}
		ended = x.Ended()
		if len(chunk) == 0 && !ended {
			continue
		}
		// writeData waits for the caller's window: a slow reader slows
		// the reads from the upstream.
		if err := c.writeData(st, chunk, ended); err != nil {
			end(false)
			res.Err = ErrDownstreamGone
			return false
		}
		res.RespBytes += int64(len(chunk))
	}
	end(true)
	return false
}

// writeH1Head writes the request head for an HTTP/1.1 upstream.
func writeH1Head(x *h1.Exchange, r *Request, d *Decision) error {
	host := r.Authority
	if host == "" {
		host = r.Get("host")
	}
	if r.Protocol != "" {
		return writeH1Upgrade(x, r, d, host) // extconnect.go
	}
	if err := x.WriteHead(r.Method, r.Path, host); err != nil {
		return err
	}
	var cookie strings.Builder
	for _, f := range r.Fields {
		switch {
		case f.Name == "host" || dropped(f.Name, d.Set, d.Del):
			continue
		case f.Name == "cookie":
			// HTTP/2 may split a Cookie into fields; HTTP/1.1 has one.
			if cookie.Len() > 0 {
				cookie.WriteString("; ")
			}
			cookie.WriteString(f.Value)
			continue
		}
		if err := x.Field(f.Name, f.Value); err != nil {
			return err
		}
	}
	if cookie.Len() > 0 {
		if err := x.Field("cookie", cookie.String()); err != nil {
			return err
		}
	}
	for _, f := range d.Set {
		if err := x.Field(f.Name, f.Value); err != nil {
			return err
		}
	}
	return x.EndHead(r.ContentLength, !r.EndStream)
}

// h1ResponseFields is the caller's response head: :status, the upstream's
// end-to-end fields (lower-cased) but those the Decision removes or
// replaces, content-length when the upstream gave one, then RespSet.
func h1ResponseFields(x *h1.Exchange, r *Request, d *Decision) []hpack.HeaderField {
	var arr [32]h1.Field
	fs := x.AppendFields(arr[:0])
	out := make([]hpack.HeaderField, 0, 2+len(fs)+len(d.RespSet))
	status := x.Status()
	out = append(out, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	for _, f := range fs {
		name := strings.ToLower(string(f.Name))
		if dropped(name, d.RespSet, d.RespDel) {
			continue
		}
		out = append(out, hpack.HeaderField{Name: name, Value: string(f.Value)})
	}
	if cl := x.ContentLength(); cl >= 0 && status != 204 && status != 304 && !dropped("content-length", d.RespSet, d.RespDel) {
		out = append(out, hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(cl, 10)})
	}
	return appendLower(out, d.RespSet)
}

func h1Trailers(fs []h1.Field) []hpack.HeaderField {
	if len(fs) == 0 {
		return nil
	}
	out := make([]hpack.HeaderField, 0, len(fs))
	for _, f := range fs {
		out = append(out, hpack.HeaderField{Name: strings.ToLower(string(f.Name)), Value: string(f.Value)})
	}
	return out
}

// startH1Pump sends one try's request body to the HTTP/1.1 upstream, as
// startPump does to an h2 one: a chunk is taken from the caller's queue,
// written, and only then credited to the caller.
func startH1Pump(b *heldBody, dc *conn, dst *stream, x *h1.Exchange) *pump {
	p := &pump{done: make(chan struct{}), in: b.in}
	go func() {
		defer close(p.done)
		p.send(b, dc, dst, h1Sink{x}, p.stop.Load)
	}()
	return p
}

// h1Sink writes a request body to an HTTP/1.1 exchange (its own framing:
// Content-Length or chunked, trailers in the last chunk).
type h1Sink struct{ x *h1.Exchange }

func (k h1Sink) data(chunk []byte, _ bool) error { return k.x.WriteBody(chunk) }

func (k h1Sink) end(tr []hpack.HeaderField, _ bool) {
	var fs []h1.Field
	for _, f := range tr {
		fs = append(fs, h1.Field{Name: []byte(f.Name), Value: []byte(f.Value)})
	}
	k.x.EndBody(fs)
}

func (k h1Sink) abort() { k.x.Abort() }
