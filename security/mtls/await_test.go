package mtls

import (
	"bytes"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer answers every message of n bytes with "ok" after delay, on
// mTLS connections.
func echoServer(t *testing.T, src *Source, n int, delay time.Duration) net.Addr {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(inner, src, Strict, nil)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, n)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					time.Sleep(delay)
					if _, err := c.Write([]byte("ok")); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); l.Wait() })
	return inner.Addr()
}

// TestReplyConnWriteAwait: DialHTTP1's connection writes a request and
// returns once the reply is readable (so the read finds it at once), on
// every request of a kept-alive connection after the first; a write too large for one
// record, and a plain Write, do not wait; a read deadline bounds the wait.
func TestReplyConnWriteAwait(t *testing.T) {
	ca := newTestCA(t, td)
	const delay = 50 * time.Millisecond
	for _, size := range []int{100, 16 << 10, 16<<10 + 1, 40 << 10} {
		addr := echoServer(t, serverSource(t, ca), size, delay)
		d := &Dialer{Source: serverSource(t, ca)}
		c, err := d.DialHTTP1(t.Context(), "tcp", addr.String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		rc, ok := c.(*ReplyConn)
		if !ok {
			t.Fatalf("DialHTTP1 gave a %T, want a *ReplyConn", c)
		}
		msg := bytes.Repeat([]byte("x"), size)
		for i := range 3 {
			start := time.Now()
			n, err := rc.WriteAwait(msg)
			took := time.Since(start)
			if err != nil || n != size {
				t.Fatalf("size %d, request %d: WriteAwait = %d, %v", size, i, n, err)
			}
			// The first may be woken by the server's session tickets
			// (TLS 1.3 sends them after the handshake): no wait, as before.
			waited := took >= delay*9/10
			if want := size <= 16<<10; waited != want && (i > 0 || waited) {
				t.Errorf("size %d, request %d: WriteAwait took %v: waited %v, want %v", size, i, took, waited, want)
			}
			got := make([]byte, 2)
			if _, err := io.ReadFull(rc, got); err != nil || string(got) != "ok" {
				t.Fatalf("size %d, request %d: reply %q, %v", size, i, got, err)
			}
		}
		if size == 100 {
			// A plain Write does not wait.
			start := time.Now()
			if _, err := rc.Write(msg); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took >= delay*9/10 {
				t.Errorf("Write took %v: it waited for the reply", took)
			}
			got := make([]byte, 2)
			if _, err := io.ReadFull(rc, got); err != nil || string(got) != "ok" {
				t.Fatalf("reply %q, %v", got, err)
			}
			// The read deadline bounds the wait; the write itself succeeded.
			rc.SetReadDeadline(time.Now().Add(delay / 5))
			if _, err := rc.WriteAwait(msg); err != nil {
				t.Fatalf("WriteAwait with a short read deadline: %v", err)
			}
			if _, err := rc.Read(got); !os.IsTimeout(err) {
				t.Fatalf("read after the deadline: %v, want a timeout", err)
			}
		}
		c.Close()
	}
}

// TestDialHTTP1PlainWhenDisabled: with mTLS off the connection is the TCP
// connection itself (the HTTP/1.1 engine waits on its fd).
func TestDialHTTP1PlainWhenDisabled(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := &Dialer{Source: New(td), Disabled: func() bool { return true }}
	c, err := d.DialHTTP1(t.Context(), "tcp", l.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*net.TCPConn); !ok {
		t.Fatalf("DialHTTP1 with mTLS off gave a %T, want a *net.TCPConn", c)
	}
}
