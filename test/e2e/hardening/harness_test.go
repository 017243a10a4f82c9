// Package hardening_test holds the listeners to hostile and malformed input
// from the outside, with real processes on loopback: a control plane, a
// client sidecar and a server sidecar (weft binaries), and backends the
// tests own — a raw TCP backend that records the exact bytes it receives,
// an HTTP/2 backend, the gRPC interop server. No mocks.
//
// Run: go test -count=1 -v ./test/e2e/hardening/
package hardening_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

const eventually = 20 * time.Second

// bins are weft and the e2e testapp, built once for the package's tests.
var bins harness.Binaries

func TestMain(m *testing.M) { os.Exit(harness.Main(m, "./test/e2e/testapp", &bins)) }

// mesh is a control plane, a server sidecar in front of an app the test
// runs (service "back"), and a pure client sidecar.
type mesh struct {
	cp          *harness.Control
	server      *harness.Proc // weft sidecar --service back
	client      *harness.Proc // weft sidecar --service client
	inbound     string        // the server sidecar's inbound listener
	outbound    string        // the client sidecar's outbound listener
	serverAdmin string
	clientAdmin string
}

// startMesh starts the control plane and both sidecars in front of the app
// listening on appPort, and waits until the client sidecar can reach the
// server sidecar (a GET / through the pair answers, whatever its status:
// the app decides that). flags go to both sidecars.
func startMesh(t testing.TB, appPort int, appProtocol string, flags ...string) *mesh {
	t.Helper()
	m := &mesh{}
	// Permissive: these tests speak plaintext straight at the inbound
	// listener to test its parsers, which a strict mesh (the default) refuses
	// before parsing.
	m.cp = harness.StartControl(t, bins.Weft, eventually, "--broker", "off", "--mtls", "permissive")
	m.inbound, m.serverAdmin = harness.FreeAddr(t), harness.FreeAddr(t)
	args := []string{"sidecar", "--control", m.cp.GRPCAddr, "--service", "back", "--app-port", strconv.Itoa(appPort),
		"--inbound", m.inbound, "--outbound", "", "--admin", m.serverAdmin, "--otlp-endpoint", "none"}
	if appProtocol != "" {
		args = append(args, "--app-protocol", appProtocol)
	}
	m.server = harness.Start(t, "sidecar-back", bins.Weft, append(args, flags...)...)
	harness.WaitUp(t, m.server, "http://"+m.serverAdmin+"/ready", eventually)
	m.outbound, m.clientAdmin = harness.FreeAddr(t), harness.FreeAddr(t)
	m.client = harness.Start(t, "sidecar-client", bins.Weft, append([]string{"sidecar", "--control", m.cp.GRPCAddr, "--service", "client",
		"--outbound", m.outbound, "--admin", m.clientAdmin, "--otlp-endpoint", "none"}, flags...)...)
	harness.WaitUp(t, m.client, "http://"+m.clientAdmin+"/ready", eventually)
	// Ready does not wait for the workload certificate, and in a permissive
	// mesh a sidecar without one yet dials (or is dialled) in plaintext: a
	// long-lived h2 connection made then stays plaintext, and the tests that
	// check the sidecar hop is mTLS would fail by the race.
	for _, admin := range []string{m.serverAdmin, m.clientAdmin} {
		if !harness.PollEvery(eventually, 20*time.Millisecond, func() bool {
			_, body, err := harness.Get("http://" + admin + "/metrics")
			return err == nil && strings.Contains(body, "\nweft_cert_expiry_timestamp_seconds ")
		}) {
			t.Fatalf("sidecar %s got no workload certificate within %s", admin, eventually)
		}
	}
	return m
}

// waitRoutable waits until a GET with Host: back through the client
// sidecar is answered by the app (not by the mesh).
func (m *mesh) waitRoutable(t testing.TB) {
	t.Helper()
	var last string
	ok := harness.PollEvery(eventually, 50*time.Millisecond, func() bool {
		c, err := net.DialTimeout("tcp", m.outbound, time.Second)
		if err != nil {
			last = err.Error()
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /ready-probe HTTP/1.1\r\nHost: back\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			last = err.Error()
			return false
		}
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Weft-Error"))
		return resp.Header.Get("X-Weft-Error") == ""
	})
	if !ok {
		t.Fatalf("service back not reachable through the client sidecar within %s: last %s", eventually, last)
	}
}

// rss is a process's resident set in bytes, from /proc.
func rss(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read RSS: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// metric reads one unlabelled sample (or the sum of a family's samples
// whose labels contain every want) from a sidecar's /metrics.
func metric(t testing.TB, admin, name string, want ...string) float64 {
	t.Helper()
	code, body, err := harness.Get("http://" + admin + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// ---------------------------------------------------------------- raw backend

// rawBackend is an HTTP/1.1 app on a raw TCP listener that records every
// byte it receives, per connection, and answers each request it can frame
// with 200 and "METHOD PATH BODYLEN". It parses with net/http's
// ReadRequest only to know where a request ends; what the tests assert is
// the recorded bytes.
type rawBackend struct {
	ln net.Listener
	mu sync.Mutex
	cs []*bytes.Buffer // one per accepted connection, in accept order
}

func newRawBackend(t testing.TB) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go b.accept()
	return b
}

func (b *rawBackend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

func (b *rawBackend) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		rec := &lockedBuf{b: b}
		b.mu.Lock()
		b.cs = append(b.cs, &rec.buf)
		b.mu.Unlock()
		go b.serve(c, rec)
	}
}

// lockedBuf appends what a connection reads under the backend's lock.
type lockedBuf struct {
	b   *rawBackend
	buf bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.b.mu.Lock()
	defer l.b.mu.Unlock()
	return l.buf.Write(p)
}

func (b *rawBackend) serve(c net.Conn, rec io.Writer) {
	defer c.Close()
	br := bufio.NewReader(io.TeeReader(c, rec))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		}
		n, err := io.Copy(io.Discard, req.Body)
		if err != nil {
			return
		}
		msg := fmt.Sprintf("%s %s %d", req.Method, req.URL.RequestURI(), n)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
		if req.Close {
			return
		}
	}
}

// mark is where each connection's record stands.
type mark []int

func (b *rawBackend) mark() mark {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := make(mark, len(b.cs))
	for i, c := range b.cs {
		m[i] = c.Len()
	}
	return m
}

// since returns, per connection with new bytes, what arrived after m.
func (b *rawBackend) since(m mark) [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out [][]byte
	for i, c := range b.cs {
		from := 0
		if i < len(m) {
			from = m[i]
		}
		if c.Len() > from {
			out = append(out, bytes.Clone(c.Bytes()[from:]))
		}
	}
	return out
}

// received is one request the backend got, as framed by a strict reading
// of the recorded bytes.
type received struct {
	method, target string
	header         http.Header
	body           string
	complete       bool // false: the connection ended inside it
}

// frame splits one connection's recorded bytes into requests. Anything
// that is not a sequence of well-framed requests (optionally ending with
// one cut short) is an error.
func frame(raw []byte) ([]received, error) {
	var out []received
	br := bufio.NewReader(bytes.NewReader(raw))
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return out, nil
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			if err == io.ErrUnexpectedEOF || strings.Contains(err.Error(), "unexpected EOF") {
				return append(out, received{complete: false}), nil
			}
			return out, fmt.Errorf("request %d not well framed: %v", len(out)+1, err)
		}
		if len(req.TransferEncoding) > 0 && req.Header.Get("Content-Length") != "" {
			return out, fmt.Errorf("request %d has both Transfer-Encoding and Content-Length", len(out)+1)
		}
		body, err := io.ReadAll(req.Body)
		r := received{method: req.Method, target: req.RequestURI, header: req.Header, body: string(body), complete: err == nil}
		out = append(out, r)
		if err != nil {
			if _, more := br.Peek(1); more != io.EOF {
				return out, fmt.Errorf("request %d: bad body (%v) followed by more bytes", len(out), err)
			}
			return out, nil
		}
	}
}
