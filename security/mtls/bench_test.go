package mtls

import (
	"bufio"
	"crypto/tls"
	"net"
	"testing"
)

// BenchmarkHandshake measures one mTLS connection setup between two
// sidecars' configurations over loopback: full (new session cache each
// time) and resumed (TLS 1.3 session ticket).
func BenchmarkHandshake(b *testing.B) {
	ca := newTestCA(b, td)
	srv := serverSource(b, ca)
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	l := NewListener(inner, srv, Strict, nil)
	defer func() { l.Close(); l.Wait() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok\n"))
			c.Close()
		}
	}()
	for _, resume := range []bool{false, true} {
		name := "full"
		if resume {
			name = "resumed"
		}
		b.Run(name, func(b *testing.B) {
			client := serverSource(b, ca)
			d := &Dialer{Source: client}
			for i := 0; i < b.N; i++ {
				if !resume {
					client.sessions.Store(&sessionCache{tls.NewLRUClientSessionCache(8)})
				}
				c, err := d.Dial(b.Context(), "tcp", l.Addr().String(), ALPNHTTP1)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			if resume && client.Resumed.Load() < int64(b.N)-1 {
				b.Fatalf("resumed %d of %d", client.Resumed.Load(), b.N)
			}
		})
	}
}

// BenchmarkExchange is one request/response over an established
// sidecar-to-sidecar connection, the shape of the HTTP/1.1 path's hop: a
// 200-byte request written in one Write, a 1,200-byte answer (head and a
// 1 KiB body) written in one Write, each read into a 16 KiB buffer as
// proxy/h1 does. "plain" is the same over bare TCP: the difference is what
// TLS costs per request once the connection is up.
func BenchmarkExchange(b *testing.B) {
	ca := newTestCA(b, td)
	srv := serverSource(b, ca)
	for _, tlsOn := range []bool{false, true} {
		name := "plain"
		if tlsOn {
			name = "mtls"
		}
		b.Run(name, func(b *testing.B) {
			inner, _ := net.Listen("tcp", "127.0.0.1:0")
			var ln net.Listener = inner
			if tlsOn {
				l := NewListener(inner, srv, Strict, nil)
				defer l.Wait()
				ln = l
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				buf := make([]byte, 16<<10)
				answer := make([]byte, 1200)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := c.Write(answer); err != nil {
						return
					}
				}
			}()
			var c net.Conn
			var err error
			if tlsOn {
				d := &Dialer{Source: serverSource(b, ca)}
				c, err = d.Dial(b.Context(), "tcp", inner.Addr().String(), ALPNHTTP1)
			} else {
				c, err = net.Dial("tcp", inner.Addr().String())
			}
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := make([]byte, 200)
			buf := make([]byte, 16<<10)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < 1200; {
					n, err := c.Read(buf)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
		})
	}
}
