//go:build unix

package awaitreply

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// readable reports the bytes a non-blocking read finds on c now.
func readable(t *testing.T, c net.Conn) string {
	t.Helper()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	raw.Read(func(fd uintptr) bool {
		b := make([]byte, 64)
		n, _ := syscall.Read(int(fd), b)
		if n > 0 {
			got = b[:n]
		}
		return true
	})
	return string(got)
}

func TestWriteReturnsOnceTheReplyIsReadable(t *testing.T) {
	client, server := pair(t)
	var w Writer
	w.Init(client)
	if !w.Ready() {
		t.Fatal("a TCP connection's Writer is not ready")
	}
	reply := make(chan struct{})
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 7)
		io.ReadFull(server, b)
		got <- string(b)
		<-reply
		server.Write([]byte("answer"))
	}()
	done := make(chan error, 1)
	go func() {
		n, err := w.Write(client, []byte("request"))
		if err == nil && n != 7 {
			t.Errorf("wrote %d bytes", n)
		}
		done <- err
	}()
	if s := <-got; s != "request" {
		t.Fatalf("the peer got %q", s)
	}
	select {
	case err := <-done:
		t.Fatalf("Write returned (%v) before the reply was sent", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(reply)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write did not return once the reply came")
	}
	if s := readable(t, client); s != "answer" {
		t.Fatalf("after Write the first read found %q, want the reply", s)
	}
}

func TestWriteWaitEndsOnClose(t *testing.T) {
	client, server := pair(t)
	var w Writer
	w.Init(client)
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(client, []byte("request"))
		done <- err
	}()
	b := make([]byte, 7)
	io.ReadFull(server, b)
	server.Close() // the peer goes away without answering
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the request was written; Write said %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write still waiting after the peer closed")
	}
	if _, err := client.Read(b); err != io.EOF {
		t.Fatalf("read after the peer's close: %v, want EOF", err)
	}
}

func TestPlainWriter(t *testing.T) {
	client, server := pair(t)
	var w Writer // no Init: writes without waiting
	if w.Ready() {
		t.Fatal("the zero Writer is ready")
	}
	if _, err := w.Write(client, []byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(server, b); err != nil || b[0] != 'x' {
		t.Fatalf("peer read %q, %v", b, err)
	}
}
