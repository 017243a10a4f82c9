package deliver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// appConn is one worker's keep-alive connection to the app. The worker
// writes each callback and reads its answer on its own goroutine: net/http's
// Transport hands every request to the connection's write goroutine and
// every answer back from its read goroutine, two goroutine wake-ups per
// callback, which were a third of the subscribing sidecar's profile at
// max throughput (readLoop 21%, writeLoop 20% of samples, bench/messaging
// -batch 50). A worker delivers one callback at a time, so one connection
// is all it needs, and the app sees `concurrency` connections as before.
type appConn struct {
	addr   string
	dialer net.Dialer
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	num    [20]byte
}

func newAppConn(addr string) *appConn {
	return &appConn{addr: addr, dialer: net.Dialer{Timeout: 2 * time.Second}}
}

// post sends one callback, POST path with h and body, and returns the
// answer's status and body (at most limit bytes kept). A callback on a
// reused connection that fails before any answer byte is sent again once on
// a new connection, as net/http does: the app had closed the idle
// connection, so nothing was delivered.
func (c *appConn) post(ctx context.Context, path string, h http.Header, body []byte, deadline time.Time, limit int64) (int, []byte, error) {
	reused := c.conn != nil
	status, answer, err := c.once(ctx, path, h, body, deadline, limit)
	var stale staleError
	if errors.As(err, &stale) && reused && ctx.Err() == nil {
		status, answer, err = c.once(ctx, path, h, body, deadline, limit)
	}
	if errors.As(err, &stale) {
		err = stale.err
	}
	return status, answer, err
}

// staleError is a failure before any byte of the answer came back.
type staleError struct{ err error }

func (e staleError) Error() string { return e.err.Error() }

func (c *appConn) once(ctx context.Context, path string, h http.Header, body []byte, deadline time.Time, limit int64) (int, []byte, error) {
	if c.conn == nil {
		conn, err := c.dialer.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return 0, nil, err
		}
		c.conn = conn
		if c.br == nil {
			c.br, c.bw = bufio.NewReaderSize(conn, 4<<10), bufio.NewWriterSize(conn, 16<<10)
		} else {
			c.br.Reset(conn)
			c.bw.Reset(conn)
		}
	}
	conn := c.conn
	_ = conn.SetDeadline(deadline)
	// Cut the call short when ctx ends (the sidecar stopping, a lease lost).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error, beforeAnswer bool) (int, []byte, error) {
		c.close()
		switch {
		case ctx.Err() != nil:
			return 0, nil, ctx.Err()
		case beforeAnswer && !errors.Is(err, os.ErrDeadlineExceeded):
			return 0, nil, staleError{err}
		}
		return 0, nil, err
	}
	bw := c.bw
	bw.WriteString("POST ")
	bw.WriteString(path)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(c.addr)
	bw.WriteString("\r\nContent-Length: ")
	bw.Write(strconv.AppendInt(c.num[:0], int64(len(body)), 10))
	bw.WriteString("\r\n")
	_ = h.Write(bw) // sanitises values; errors are the writer's, seen at Flush
	bw.WriteString("\r\n")
	bw.Write(body)
	if err := bw.Flush(); err != nil {
		return fail(err, true)
	}
	if _, err := c.br.Peek(1); err != nil {
		return fail(err, true)
	}
	resp, err := http.ReadResponse(c.br, nil)
	// An interim answer (100 Continue, 103 Early Hints) is followed by the
	// real one.
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(c.br, nil)
	}
	if err != nil {
		return fail(err, false)
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return fail(err, false)
	}
	// Keep the connection only if the answer was read to its end.
	if n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)); err != nil || n == 64<<10 || resp.Close {
		c.close()
	}
	return resp.StatusCode, answer, nil
}

func (c *appConn) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}
