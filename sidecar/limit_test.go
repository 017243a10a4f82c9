package sidecar

import (
	"bytes"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pipeListener accepts one end of a net.Pipe: a connection that is not a
// *net.TCPConn, as the inbound's TLS ones are not.
type pipeListener struct {
	net.Listener
	conns chan net.Conn
}

func (l *pipeListener) Accept() (net.Conn, error) { return <-l.conns, nil }

func TestAcceptedConnections(t *testing.T) {
	lm := newListenerMetrics(prometheus.NewRegistry())

	t.Run("tcp keeps its own methods", func(t *testing.T) {
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := lm.limit(raw, "tcp", 10, time.Minute).(*limitListener)
		defer ln.Close()
		src, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		// ReadFrom, WriteTo (splice), SyscallConn (parking), CloseWrite.
		if _, ok := c.(io.ReaderFrom); !ok {
			t.Error("no ReadFrom")
		}
		if _, ok := c.(io.WriterTo); !ok {
			t.Error("no WriteTo")
		}
		if _, ok := c.(syscall.Conn); !ok {
			t.Error("no SyscallConn")
		}
		if _, ok := c.(interface{ CloseWrite() error }); !ok {
			t.Error("no CloseWrite")
		}

		// io.Copy into it from another TCP connection takes
		// TCPConn.ReadFrom (splice on Linux): the bytes never pass
		// through the wrapper's Write, which would have set the write
		// deadline.
		dst, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		up, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer up.Close()
		payload := bytes.Repeat([]byte("weft"), 1<<18) // 1 MiB
		go func() {
			src.Write(payload)
			src.Close()
		}()
		// c's peer is src; copy what src sent into up (up's peer is dst).
		done := make(chan int64, 1)
		go func() {
			n, _ := io.Copy(up, c.(*countedTCPConn).TCPConn) // a *net.TCPConn source, as a tunnel's upstream is
			up.(interface{ CloseWrite() error }).CloseWrite()
			done <- n
		}()
		got, err := io.ReadAll(dst)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("read %d bytes, %v; want the %d sent", len(got), err, len(payload))
		}
		<-done
		if u := up.(*countedTCPConn).wt.until.Load(); u != 0 {
			t.Error("io.Copy went through the wrapper's Write, not TCPConn.ReadFrom")
		}

		// The wrapper's own Write sets the write deadline; Close gives the
		// slot back once.
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if c.(*countedTCPConn).wt.until.Load() == 0 {
			t.Error("Write set no write deadline")
		}
		before := ln.n.Load()
		c.Close()
		c.Close()
		if ln.n.Load() != before-1 {
			t.Errorf("open %d after two Closes; want %d", ln.n.Load(), before-1)
		}
	})

	t.Run("other connections", func(t *testing.T) {
		pl := &pipeListener{conns: make(chan net.Conn, 1)}
		ln := lm.limit(pl, "pipe", 10, time.Minute).(*limitListener)
		a, b := net.Pipe()
		defer b.Close()
		pl.conns <- a
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.(syscall.Conn); ok {
			t.Error("a pipe offers SyscallConn through the wrapper")
		}
		go io.Copy(io.Discard, b)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if c.(*countedConn).wt.until.Load() == 0 {
			t.Error("Write set no write deadline")
		}
		// A pipe cannot half-close: CloseWrite closes it (and gives the
		// slot back, once).
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if ln.n.Load() != 0 {
			t.Errorf("open %d after CloseWrite and Close; want 0", ln.n.Load())
		}
	})
}
