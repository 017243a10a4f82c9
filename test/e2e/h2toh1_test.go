package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// teeListener records the first bytes each accepted connection reads.
type teeListener struct {
	net.Listener
	mu   sync.Mutex
	seen bytes.Buffer
}

func (l *teeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &teeConn{Conn: c, l: l}, nil
}

type teeConn struct {
	net.Conn
	l *teeListener
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	if c.l.seen.Len() < 1<<20 {
		c.l.seen.Write(p[:min(n, 4096)])
	}
	c.l.mu.Unlock()
	return n, err
}

func (l *teeListener) saw(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.seen.Bytes(), []byte(s))
}

// serveH1App is an HTTP/1.1-only app: /echo answers the request's
// method, Host, Cookie, framing and peer identity in headers and echoes the
// body with the digest in a trailer; /big?n=N sends N bytes.
func serveH1App(t testing.TB) (int, *teeListener) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &teeListener{Listener: inner}
	var protos http.Protocols
	protos.SetHTTP1(true)
	srv := &http.Server{Protocols: &protos, ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/big":
				var n int
				fmt.Sscan(r.URL.Query().Get("n"), &n)
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Write(bytes.Repeat([]byte("0123456789abcdef"), n/16))
				return
			}
			b, _ := io.ReadAll(r.Body)
			h := w.Header()
			h.Set("X-Proto", r.Proto)
			h.Set("X-Method", r.Method)
			h.Set("X-Host", r.Host)
			h.Set("X-Cookie", strings.Join(r.Header.Values("Cookie"), "|"))
			h.Set("X-Framing", fmt.Sprintf("%d %v", r.ContentLength, r.TransferEncoding))
			h.Set("X-Peer", r.Header.Get("X-Weft-Peer-Identity"))
			h.Set("Connection", "x-private")
			h.Set("X-Private", "hop-by-hop")
			h.Set("Trailer", "X-Digest")
			w.WriteHeader(201)
			w.Write(b)
			w.(http.Flusher).Flush() // chunked: the trailer follows
			h.Set("X-Digest", fmt.Sprintf("%x", sha256.Sum256(b)))
		})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return inner.Addr().(*net.TCPAddr).Port, ln
}

// TestH2ToHTTP1App: an h2c caller reaches an HTTP/1.1 app through a client
// sidecar and a server sidecar (their hop h2 over mTLS), the server
// sidecar's native h2 engine writing each stream as an HTTP/1.1 request:
// status, headers (Host from :authority, cookies joined, hop-by-hop
// dropped), body, trailers from the chunked answer, 4 MiB each way
// through flow control, HEAD, and the server side's telemetry.
func TestH2ToHTTP1App(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	port, tee := serveH1App(t)
	app := StartSidecar(t, cp, SidecarOpts{Service: "h1app", AppPort: port})
	app.WaitRegistered(cp, eventually)
	client := StartClient(t, cp, nil)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Protocols: &protos}}
	do := func(t *testing.T, method, path string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+client.OutboundAddr()+path, body)
		req.Host = "h1app"
		for k, v := range hdr {
			req.Header.Add(k, v)
		}
		resp, err := h2c.Do(req)
		if err != nil {
			t.Fatalf("h2c %s %s: %v", method, path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("h2c %s %s: reading the body: %v", method, path, err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over %s", resp.Proto)
		}
		return resp, b
	}
	check := func(t *testing.T, resp *http.Response, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if g := resp.Header.Get(k); g != v {
				t.Errorf("header %s = %q, want %q (x-weft-error %q)", k, g, v, resp.Header.Get("X-Weft-Error"))
			}
		}
	}

	t.Run("small_post", func(t *testing.T) {
		resp, b := do(t, "POST", "/echo", strings.NewReader("hello"), map[string]string{"Cookie": "a=1", "X-Case": "native"})
		if resp.StatusCode != 201 || string(b) != "hello" {
			t.Fatalf("%d %q, want 201 hello", resp.StatusCode, b)
		}
		check(t, resp, map[string]string{"X-Proto": "HTTP/1.1", "X-Method": "POST", "X-Host": "h1app", "X-Framing": "5 []",
			"X-Peer": "spiffe://weft.local/ns/default/sa/client"})
		if _, ok := resp.Header["X-Private"]; ok {
			t.Error("a field the app's Connection named reached the caller")
		}
		if got, want := resp.Trailer.Get("X-Digest"), fmt.Sprintf("%x", sha256.Sum256([]byte("hello"))); got != want {
			t.Errorf("trailer X-Digest %q, want %q", got, want)
		}
	})

	t.Run("cookies_joined", func(t *testing.T) {
		// The h2 client sends each Cookie field as it is; HTTP/1.1 has one.
		resp, _ := do(t, "GET", "/echo", nil, map[string]string{"Cookie": "a=1"})
		check(t, resp, map[string]string{"X-Framing": "0 []"})
		req, _ := http.NewRequest("GET", "http://"+client.OutboundAddr()+"/echo", nil)
		req.Host = "h1app"
		req.Header["Cookie"] = []string{"a=1", "b=2"}
		r2, err := h2c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r2.Body)
		r2.Body.Close()
		if g := r2.Header.Get("X-Cookie"); g != "a=1; b=2" {
			t.Errorf("the app saw Cookie %q, want one field \"a=1; b=2\"", g)
		}
	})

	t.Run("upload_4MiB_unknown_length", func(t *testing.T) {
		big := randBytes(t, 4<<20)
		resp, b := do(t, "PUT", "/echo", io.MultiReader(bytes.NewReader(big[:1<<20]), bytes.NewReader(big[1<<20:])), nil)
		if resp.StatusCode != 201 || !bytes.Equal(b, big) {
			t.Fatalf("%d, %d bytes echoed (equal %v)", resp.StatusCode, len(b), bytes.Equal(b, big))
		}
		check(t, resp, map[string]string{"X-Framing": "-1 [chunked]"})
		if got, want := resp.Trailer.Get("X-Digest"), fmt.Sprintf("%x", sha256.Sum256(big)); got != want {
			t.Errorf("trailer X-Digest %q, want %q", got, want)
		}
	})

	t.Run("download_4MiB", func(t *testing.T) {
		resp, b := do(t, "GET", "/big?n=4194304", nil, nil)
		want := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16)
		if resp.StatusCode != 200 || !bytes.Equal(b, want) {
			t.Fatalf("%d, %d of %d bytes", resp.StatusCode, len(b), len(want))
		}
		check(t, resp, map[string]string{"Content-Type": "application/octet-stream"})
	})

	t.Run("head", func(t *testing.T) {
		resp, b := do(t, "HEAD", "/big?n=64", nil, nil)
		if resp.StatusCode != 200 || len(b) != 0 {
			t.Fatalf("%d, %d bytes", resp.StatusCode, len(b))
		}
	})

	t.Run("native_engine_wrote_the_request", func(t *testing.T) {
		// net/http's transport (the handler path) canonicalises field
		// names; the engine writes the caller's as HTTP/2 has them.
		if !tee.saw("\r\nx-case: native\r\n") {
			t.Error("the app did not get the h2 field names as sent (x-case): not the native engine's request")
		}
	})

	if n := metricSum(t, app, "weft_requests_total", `reporter="server"`, `destination_service="h1app"`); n < 6 {
		t.Errorf("server sidecar: weft_requests_total{reporter=server,destination_service=h1app} = %v, want ≥ 6", n)
	}
}
