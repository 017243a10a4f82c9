package h2

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serveHandler serves a stream with an http.Handler: the requests the
// engine does not forward itself (to an HTTP/1.1 app, the sidecar's own
// API). It is the slow path — an http.Request and header maps — kept so
// one connection can carry every kind of request.
func serveHandler(s *Server, c *conn, st *stream, req *Request, d *Decision, res *Result) {
	ctx := context.Background()
	if s.Context != nil {
		ctx = s.Context(req.RemoteAddr)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-st.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	u, err := url.ParseRequestURI(req.Path)
	if req.Method == "CONNECT" {
		u, err = &url.URL{Host: req.Authority}, nil
	}
	if err != nil {
		c.writeReset(st, http2.ErrCodeProtocol)
		return
	}
	h := make(http.Header, len(req.Fields))
	for _, f := range req.Fields {
		if f.Name == "host" {
			continue
		}
		k := http.CanonicalHeaderKey(f.Name)
		h[k] = append(h[k], f.Value)
	}
	hr := &http.Request{Method: req.Method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: h,
		Host: req.Authority, RemoteAddr: req.RemoteAddr.String(), RequestURI: req.Path,
		ContentLength: req.ContentLength, Body: http.NoBody}
	if !req.EndStream {
		hr.Body = &handlerBody{c: c, st: st}
		if req.ContentLength < 0 {
			hr.ContentLength = -1
		}
	} else {
		hr.ContentLength = 0
	}
	hr = hr.WithContext(ctx)
	w := &respWriter{c: c, st: st, h: http.Header{}, res: res, d: d, head: req.Method == "HEAD"}
	d.Handler.ServeHTTP(w, hr)
	w.finish()
}

// handlerBody is a request body read by a Handler.
type handlerBody struct {
	c    *conn
	st   *stream
	cur  []byte
	off  int
	done bool
}

func (b *handlerBody) Read(p []byte) (int, error) {
	if b.off >= len(b.cur) {
		if b.cur != nil {
			b.c.consumed(b.st, len(b.cur))
			putBuf(b.cur)
			b.cur, b.off = nil, 0
		}
		if b.done {
			return 0, io.EOF
		}
		chunk, end, _, err := b.st.in.next(nil)
		if err != nil {
			return 0, err
		}
		b.cur, b.done = chunk, end
		if len(chunk) == 0 {
			return 0, io.EOF
		}
	}
	n := copy(p, b.cur[b.off:])
	b.off += n
	return n, nil
}

func (b *handlerBody) Close() error { return nil }

// respWriter is the Handler's ResponseWriter over the stream.
type respWriter struct {
	c        *conn
	st       *stream
	h        http.Header
	res      *Result
	d        *Decision
	wrote    bool // WriteHeader called
	sent     bool // the head is on the wire
	code     int
	head     bool
	trailers []string
	err      error
}

func (w *respWriter) Header() http.Header { return w.h }

func (w *respWriter) WriteHeader(code int) {
	if w.wrote || (code >= 100 && code < 200) {
		return
	}
	w.wrote, w.code = true, code
}

// send writes the head (end: with END_STREAM, nothing follows).
func (w *respWriter) send(end bool) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	w.sent = true
	code := w.code
	w.res.Status, w.res.HeadWritten = code, true
	fields := make([]hpack.HeaderField, 0, len(w.h)+1+len(w.d.RespSet))
	fields = append(fields, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(code)})
	for k, vs := range w.h {
		lk := strings.ToLower(k)
		switch lk {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			continue
		case "trailer":
			for _, v := range vs {
				for _, t := range strings.Split(v, ",") {
					if t = strings.TrimSpace(t); t != "" {
						w.trailers = append(w.trailers, t)
					}
				}
			}
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || dropped(lk, w.d.RespSet, w.d.RespDel) {
			continue
		}
		for _, v := range vs {
			fields = append(fields, hpack.HeaderField{Name: lk, Value: v})
		}
	}
	fields = appendLower(fields, w.d.RespSet)
	if end {
		w.res.GRPCStatus = get(fields, "grpc-status")
	}
	w.err = w.c.writeHeaders(w.st, end, fields)
}

func (w *respWriter) Write(p []byte) (int, error) {
	if !w.sent {
		w.send(false)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.head {
		return len(p), nil
	}
	if err := w.c.writeData(w.st, p, false); err != nil {
		w.err = err
		return 0, err
	}
	w.res.RespBytes += int64(len(p))
	return len(p), nil
}

// Flush: every Write is already on the wire.
func (w *respWriter) Flush() {
	if !w.sent {
		w.send(false)
	}
}

// finish ends the stream: the trailers, or an empty END_STREAM — or, for
// a head nothing followed (a gRPC trailers-only answer), the head alone
// with END_STREAM.
func (w *respWriter) finish() {
	if !w.sent && w.trailerCount() == 0 {
		w.send(true)
		return
	}
	if !w.sent {
		w.send(false)
	}
	if w.err != nil {
		return
	}
	var tr []hpack.HeaderField
	for _, k := range w.trailers {
		for _, v := range w.h[http.CanonicalHeaderKey(k)] {
			tr = append(tr, hpack.HeaderField{Name: strings.ToLower(k), Value: v})
		}
	}
	for k, vs := range w.h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vs {
				tr = append(tr, hpack.HeaderField{Name: strings.ToLower(name), Value: v})
			}
		}
	}
	if gs := get(tr, "grpc-status"); gs != "" {
		w.res.GRPCStatus = gs
	}
	if len(tr) > 0 {
		w.err = w.c.writeHeaders(w.st, true, tr)
		return
	}
	w.err = w.c.writeData(w.st, nil, true)
}

func (w *respWriter) trailerCount() int {
	n := 0
	for k := range w.h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			n++
		}
	}
	for _, v := range w.h["Trailer"] {
		if strings.TrimSpace(v) != "" {
			n++
		}
	}
	return n
}
