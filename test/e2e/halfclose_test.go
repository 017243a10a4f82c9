package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// halfCloseReply is what halfCloseApp answers once its client has
// half-closed: the byte count and digest of what it received, then big
// bytes of a pattern.
func halfCloseReply(got []byte, big int) []byte {
	head := fmt.Sprintf("received %d bytes, sha256 %x\n", len(got), sha256.Sum256(got))
	return append([]byte(head), bytes.Repeat([]byte("0123456789abcdef"), big/16)...)
}

// halfCloseApp is a raw TCP app. A connection starting "GET " is a
// WebSocket-style Upgrade: its head is answered 101, then the connection
// is raw. Raw, it reads to EOF (the client's half-close), waits a little
// (so that a close travelling behind the FIN would arrive first), and only
// then answers with halfCloseReply and closes. One starting "SERVERFIN\n"
// is the other way round: the app sends its reply and half-closes first,
// then reads the client's bytes to EOF and reports them on got.
type halfCloseApp struct {
	big int
	got chan []byte
}

func serveHalfClose(t *testing.T, big int) (int, *halfCloseApp) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	a := &halfCloseApp{big: big, got: make(chan []byte, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go a.serve(c.(*net.TCPConn))
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, a
}

func (a *halfCloseApp) serve(c *net.TCPConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if pre, _ := br.Peek(4); string(pre) == "GET " {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+req.Header.Get("Upgrade")+"\r\n\r\n")
	}
	if pre, _ := br.Peek(10); string(pre) == "SERVERFIN\n" {
		br.Discard(10)
		c.Write(halfCloseReply(nil, a.big))
		c.CloseWrite()
		got, _ := io.ReadAll(br)
		a.got <- got
		return
	}
	got, err := io.ReadAll(br)
	if err != nil {
		return
	}
	time.Sleep(300 * time.Millisecond)
	c.Write(halfCloseReply(got, a.big))
}

// TestTunnelHalfClose: a client that sends, half-closes (TCP FIN) and then
// reads still gets the app's whole reply through a client sidecar and a
// server sidecar, their hop mTLS: the FIN becomes a TLS close_notify on
// the hop and a FIN again to the app, each side still reading the other
// way — and the same the other way round, the app half-closing first.
// Through a CONNECT and a WebSocket-style Upgrade on the fast path and a
// raw --upstream tunnel; Upgrade and --upstream also with --no-fast-path
// (net/http). A build whose tunnels close instead of half-closing fails
// every fast-path case here.
func TestTunnelHalfClose(t *testing.T) {
	t.Parallel()
	const big = 1 << 20
	for _, engine := range []struct {
		name  string
		flags []string
	}{{"fast", nil}, {"nethttp", []string{"--no-fast-path"}}} {
		t.Run(engine.name, func(t *testing.T) {
			t.Parallel()
			cp := StartControl(t)
			appPort, app := serveHalfClose(t, big)
			srv := StartSidecar(t, cp, SidecarOpts{Service: "halfclose", AppPort: appPort, Flags: engine.flags})
			srv.WaitRegistered(cp, eventually)
			upPort := freePort(t)
			client := StartSidecar(t, cp, SidecarOpts{Service: "client", Upstreams: map[string]int{"halfclose": upPort}, Flags: engine.flags})
			payload := randBytes(t, 300<<10)

			open := map[string]func(t *testing.T) (net.Conn, *bufio.Reader){
				"connect": func(t *testing.T) (net.Conn, *bufio.Reader) {
					conn := dialTCP(t, client.OutboundAddr())
					io.WriteString(conn, "CONNECT halfclose:1 HTTP/1.1\r\nHost: halfclose:1\r\n\r\n")
					br := bufio.NewReader(conn)
					resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
					if err != nil || resp.StatusCode != 200 {
						t.Fatalf("CONNECT halfclose:1: %v %v", resp, err)
					}
					return conn, br
				},
				"upgrade": func(t *testing.T) (net.Conn, *bufio.Reader) {
					conn := dialTCP(t, client.OutboundAddr())
					io.WriteString(conn, "GET /raw HTTP/1.1\r\nHost: halfclose\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
					br := bufio.NewReader(conn)
					resp, err := http.ReadResponse(br, nil)
					if err != nil || resp.StatusCode != 101 {
						t.Fatalf("Upgrade through the outbound: %v %v", resp, err)
					}
					return conn, br
				},
				"upstream": func(t *testing.T) (net.Conn, *bufio.Reader) {
					conn := dialTCP(t, addr(upPort))
					return conn, bufio.NewReader(conn)
				},
			}
			for _, kind := range []string{"connect", "upgrade", "upstream"} {
				if kind == "connect" && engine.name == "nethttp" {
					continue // the net/http outbound answers CONNECT 405
				}
				t.Run(kind+"/client_first", func(t *testing.T) {
					conn, br := open[kind](t)
					errc := make(chan error, 1)
					go func() {
						_, err := conn.Write(payload)
						if err == nil {
							err = conn.(*net.TCPConn).CloseWrite()
						}
						errc <- err
					}()
					got, err := io.ReadAll(br)
					if werr := <-errc; werr != nil {
						t.Fatalf("sending and half-closing: %v", werr)
					}
					want := halfCloseReply(payload, big)
					if err != nil || !bytes.Equal(got, want) {
						t.Fatalf("reply after the half-close: %d of %d bytes (%q), equal %v, err %v",
							len(got), len(want), truncate(string(got), 60), bytes.Equal(got, want), err)
					}
				})
				t.Run(kind+"/app_first", func(t *testing.T) {
					conn, br := open[kind](t)
					io.WriteString(conn, "SERVERFIN\n")
					want := halfCloseReply(nil, big)
					got, err := io.ReadAll(br) // the app's half-close ends it
					if err != nil || !bytes.Equal(got, want) {
						t.Fatalf("the app's reply: %d of %d bytes, err %v", len(got), len(want), err)
					}
					// The way to the app stays open: it gets all of this.
					if _, err := conn.Write(payload); err != nil {
						t.Fatalf("sending after the app's half-close: %v", err)
					}
					conn.(*net.TCPConn).CloseWrite()
					select {
					case b := <-app.got:
						if !bytes.Equal(b, payload) {
							t.Fatalf("the app got %d of %d bytes after its half-close", len(b), len(payload))
						}
					case <-time.After(20 * time.Second):
						t.Fatal("the app did not see the client's bytes and half-close")
					}
				})
			}
			if hs := metricSum(t, srv, "weft_mtls_handshakes_total"); hs < 1 {
				t.Errorf("server sidecar: weft_mtls_handshakes_total %v: the hop was not mTLS", hs)
			}
			if n := metricSum(t, srv, "weft_mtls_plaintext_connections_total"); n != 0 {
				t.Errorf("server sidecar: %v plaintext connections", n)
			}
		})
	}
}

func dialTCP(t *testing.T, a string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return conn
}
