package hardening_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bigBody is what GET /big streams: far more than the socket buffers on
// the path hold, so a client that does not read stalls the sidecar's write.
const bigBody = 1 << 30

// startBigApp serves /big (bigBody bytes, as fast as they are taken) and
// anything else with a short 200, on a loopback port.
func startBigApp(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/big" {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(bigBody))
		for n := 0; n < bigBody; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSlowClients408 holds both engines (the fast path, and net/http with
// --no-fast-path) to the body and write timeouts: a request body that
// stalls, or trickles under --min-body-rate, is answered 408 and its
// connection closed; a client that stops reading its response is cut off
// after --write-timeout; a normal request beside them is served.
func TestSlowClients408(t *testing.T) {
	const timeout = time.Second
	slack := 10 * time.Second // a loaded 2-core box
	for _, engine := range []struct {
		name  string
		flags []string
	}{{"fast_path", nil}, {"net_http", []string{"--no-fast-path"}}} {
		t.Run(engine.name, func(t *testing.T) {
			t.Parallel()
			flags := append([]string{"--read-body-timeout", timeout.String(), "--min-body-rate", "50", "--write-timeout", timeout.String()}, engine.flags...)
			m := startMesh(t, startBigApp(t), "", flags...)
			m.waitRoutable(t)

			for _, tc := range []struct {
				name    string
				trickle time.Duration // between body bytes; 0: a stall after the first ones
			}{{"body_stalls", 0}, {"body_trickles_under_the_floor", 100 * time.Millisecond}} {
				t.Run(tc.name, func(t *testing.T) {
					c, err := net.DialTimeout("tcp", m.outbound, 5*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(timeout + slack))
					io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: back\r\nContent-Length: 100000\r\n\r\nfirst bytes")
					stop := make(chan struct{})
					defer close(stop)
					if tc.trickle > 0 {
						go func() {
							for {
								select {
								case <-stop:
									return
								case <-time.After(tc.trickle):
								}
								if _, err := io.WriteString(c, "x"); err != nil {
									return
								}
							}
						}()
					}
					start := time.Now()
					if d, err := healthy(m.outbound); err != nil {
						t.Errorf("a normal request beside the slow body: %v", err)
					} else {
						t.Logf("normal request beside the slow body: %s", d)
					}
					br := bufio.NewReader(c)
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("no answer to the slow body within %s: %v", timeout+slack, err)
					}
					body, _ := io.ReadAll(resp.Body)
					if resp.StatusCode != 408 || resp.Header.Get("X-Weft-Error") != "request_timeout" {
						t.Fatalf("slow body answered %d %q %q, want 408 request_timeout", resp.StatusCode, resp.Header.Get("X-Weft-Error"), body)
					}
					t.Logf("408 after %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(body)))
					if err := readClosed(c, br); err != nil {
						t.Error(err)
					}
				})
			}

			t.Run("reader_stops_reading", func(t *testing.T) {
				d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
					return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
				}}
				c, err := d.Dial("tcp", m.outbound)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				io.WriteString(c, "GET /big HTTP/1.1\r\nHost: back\r\n\r\n")
				// Not a byte read: the sidecar's writes stall and, after
				// the write timeout, it gives up on the connection.
				time.Sleep(timeout + 3*time.Second)
				if d, err := healthy(m.outbound); err != nil {
					t.Errorf("a normal request beside the stalled reader: %v", err)
				} else {
					t.Logf("normal request beside the stalled reader: %s", d)
				}
				c.SetReadDeadline(time.Now().Add(slack + 20*time.Second))
				n, err := io.Copy(io.Discard, c)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("the stalled reader's connection is still open (%d bytes read, then nothing)", n)
				}
				if n >= bigBody {
					t.Fatalf("the whole %d-byte response arrived: the sidecar never cut the stalled reader", n)
				}
				t.Logf("stalled reader cut off: %d of %d bytes had left, then %v", n, bigBody, err)
			})
		})
	}
}

// readClosed checks the peer closes c after its answer: nothing more comes
// but EOF or a reset, within a few seconds.
func readClosed(c net.Conn, br *bufio.Reader) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(br)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("connection not closed after the 408: %v (then %q)", err, rest)
	}
	return nil
}
