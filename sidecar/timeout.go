package sidecar

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/proxy"
)

// writeDeadline gives every write to a client connection a deadline of
// WriteTimeout, so a client that stops reading is cut off after it, on
// both engines (the fast path and net/http write through the same
// listener connections). The deadline is renewed lazily — only once less
// than 15/16 of the timeout is left — so a stream of writes costs one
// clock read each and a SetWriteDeadline per 1/16 of the timeout, not
// one per write. A deadline the connection's user sets itself (a
// tunnel's, Shutdown's wake-up) wins until it is cleared.
type writeDeadline struct {
	d        time.Duration
	explicit atomic.Bool
	until    atomic.Int64 // UnixNano of the deadline set last; 0: none
}

func (w *writeDeadline) before(c net.Conn) {
	if w.d <= 0 || w.explicit.Load() {
		return
	}
	now := time.Now().UnixNano()
	if w.until.Load()-now > int64(w.d)/16*15 {
		return
	}
	until := now + int64(w.d)
	w.until.Store(until)
	c.SetWriteDeadline(time.Unix(0, until))
}

func (w *writeDeadline) set(t time.Time) {
	w.explicit.Store(!t.IsZero())
	w.until.Store(0)
}

// errBodyTooSlow ends a request body the body timeouts cut.
var errBodyTooSlow = errors.New("request body too slow")

// limitBodies applies the body timeouts to the net/http engine's HTTP/1.x
// requests (the fast path has its own, in proxy/h1): a read of the body
// waits at most BodyTimeout, and after the first BodyTimeout the body must
// have averaged MinBodyRate. The cut body's request is answered 408
// whatever the proxy behind made of the failed read. HTTP/2 is left out:
// a slow stream holds a stream, not a connection, and gRPC streams may be
// quiet for long.
func limitBodies(h http.Handler, lim ListenLimits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 1 || r.Body == nil || r.Body == http.NoBody || r.Method == http.MethodConnect || r.Header.Get("Upgrade") != "" {
			h.ServeHTTP(w, r)
			return
		}
		b := &slowBody{ReadCloser: r.Body, rc: http.NewResponseController(w), lim: lim, start: time.Now()}
		r.Body = b
		sw := &slowBodyWriter{ResponseWriter: w, b: b}
		h.ServeHTTP(sw, r)
		if b.timedOut.Load() && !sw.wrote {
			sw.WriteHeader(http.StatusRequestTimeout) // the handler gave up without an answer
		}
	})
}

type slowBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	lim      ListenLimits
	start    time.Time
	n        int64
	timedOut atomic.Bool
}

func (b *slowBody) Read(p []byte) (int, error) {
	deadline := time.Now().Add(b.lim.BodyTimeout)
	if b.lim.MinBodyRate > 0 {
		credit := time.Duration(float64(b.n) / float64(b.lim.MinBodyRate) * float64(time.Second))
		if floor := b.start.Add(b.lim.BodyTimeout + credit); floor.Before(deadline) {
			deadline = floor
		}
	}
	b.rc.SetReadDeadline(deadline)
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.timedOut.Store(true)
		return n, errBodyTooSlow
	}
	return n, err
}

// slowBodyWriter answers 408 in place of whatever the handler answers
// once its request body was cut.
type slowBodyWriter struct {
	http.ResponseWriter
	b        *slowBody
	replaced bool
	wrote    bool
}

func (w *slowBodyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *slowBodyWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if w.b.timedOut.Load() {
		w.replaced = true
		h := w.ResponseWriter.Header()
		clear(h)
		h.Set("Connection", "close")
		proxy.BodyTimeoutError().Write(w.ResponseWriter)
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *slowBodyWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}
