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
