package hardening_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// startApp starts the e2e testapp (HTTP/1.1) on a fresh port.
func startApp(t testing.TB) int {
	t.Helper()
	port := harness.FreePort(t)
	app := harness.Start(t, "app-back", bins.App, "--port", strconv.Itoa(port), "--name", "back")
	harness.WaitListening(t, app, harness.Addr(port), eventually)
	return port
}

// healthy sends one GET through addr (the client sidecar's outbound, Host
// back) on a new connection and returns how long the answer took.
func healthy(addr string) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /healthy HTTP/1.1\r\nHost: back\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return time.Since(start), nil
}

// closedWithin reads (and discards) from c until it is closed, or d passes.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestSlowClients: 300 slowloris connections trickling a request head at
// the client sidecar do not stop a normal request, and are cut off by the
// header read timeout; an idle keep-alive connection is closed by the idle
// timeout.
func TestSlowClients(t *testing.T) {
	const (
		conns         = 300
		headerTimeout = 2 * time.Second
		idleTimeout   = 3 * time.Second
		slack         = 10 * time.Second
	)
	m := startMesh(t, startApp(t), "", "--read-header-timeout", headerTimeout.String(), "--idle-timeout", idleTimeout.String())
	m.waitRoutable(t)
	base, err := healthy(m.outbound)
	if err != nil {
		t.Fatal(err)
	}
	rssBefore := rss(t, m.client.Pid())

	var closed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < conns; i++ {
		c, err := net.DialTimeout("tcp", m.outbound, 5*time.Second)
		if err != nil {
			t.Fatalf("slow connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Add(2)
		go func() { // trickle one header byte every 200ms until cut off
			defer wg.Done()
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: back\r\nX-Slow: "); err != nil {
				return
			}
			for time.Since(start) < headerTimeout+slack {
				time.Sleep(200 * time.Millisecond)
				if _, err := c.Write([]byte("a")); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			if closedWithin(c, headerTimeout+slack) {
				closed.Add(1)
			}
		}()
	}
	var worst time.Duration
	for i := 0; i < 20; i++ {
		d, err := healthy(m.outbound)
		if err != nil {
			t.Fatalf("normal request %d beside %d slow clients: %v", i, conns, err)
		}
		worst = max(worst, d)
	}
	rssDuring := rss(t, m.client.Pid())
	wg.Wait()
	if n := closed.Load(); n != conns {
		t.Fatalf("%d of %d slow connections closed within %s", n, conns, headerTimeout+slack)
	}
	t.Logf("slowloris: %d trickling connections cut off in %s (header timeout %s); normal requests beside them: worst %s (alone %s); client sidecar RSS %d MiB before, %d MiB with them open",
		conns, time.Since(start).Round(time.Millisecond), headerTimeout, worst.Round(time.Microsecond), base.Round(time.Microsecond), rssBefore>>20, rssDuring>>20)

	// Idle timeout: one request, then silence.
	c, err := net.Dial("tcp", m.outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /idle HTTP/1.1\r\nHost: back\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("request before idling: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	idleStart := time.Now()
	if !closedWithin(c, idleTimeout+slack) {
		t.Fatalf("idle connection still open after %s (idle timeout %s)", idleTimeout+slack, idleTimeout)
	}
	if d := time.Since(idleStart); d < idleTimeout-500*time.Millisecond {
		t.Fatalf("idle connection closed after %s, before the idle timeout %s", d, idleTimeout)
	}
}

// TestMaxConnections: a listener at --max-connections closes the next
// connection at once and counts it; once connections go, new ones are served.
func TestMaxConnections(t *testing.T) {
	const limit = 20
	m := startMesh(t, startApp(t), "", "--max-connections", strconv.Itoa(limit))
	m.waitRoutable(t)
	// waitRoutable's connection may still be counted for an instant.
	if !harness.PollEvery(eventually, 20*time.Millisecond, func() bool {
		return metric(t, m.clientAdmin, "weft_listener_connections", `listener="outbound"`) == 0
	}) {
		t.Fatal("weft_listener_connections never 0 with no client connected")
	}
	var held []net.Conn
	for i := 0; i < limit; i++ {
		c, err := net.Dial("tcp", m.outbound)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	var rejected bool
	harness.PollEvery(eventually, 100*time.Millisecond, func() bool {
		c, err := net.Dial("tcp", m.outbound)
		if err != nil {
			rejected = true
			return true
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: back\r\n\r\n")
		rejected = closedWithin(c, 2*time.Second)
		return rejected
	})
	if !rejected {
		t.Fatalf("connection %d was served", limit+1)
	}
	if n := metric(t, m.clientAdmin, "weft_listener_rejected_total", `listener="outbound"`, `reason="max_connections"`); n < 1 {
		t.Fatalf("weft_listener_rejected_total = %v", n)
	}
	if n := metric(t, m.clientAdmin, "weft_listener_connections", `listener="outbound"`); n != limit {
		t.Errorf("weft_listener_connections = %v, want %d", n, limit)
	}
	for _, c := range held {
		c.Close()
	}
	var last error
	if !harness.PollEvery(eventually, 50*time.Millisecond, func() bool { _, last = healthy(m.outbound); return last == nil }) {
		t.Fatalf("no request served after the connections closed: %v", last)
	}
}

// ---------------------------------------------------------------- HTTP/2 floods

// h2conn is a raw h2c client connection: the preface and SETTINGS are
// sent, frames are written with x/net/http2's Framer.
type h2conn struct {
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dialH2(t testing.TB, addr string) *h2conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &h2conn{c: c, fr: http2.NewFramer(c, c)}
	h.enc = hpack.NewEncoder(&h.hb)
	h.fr.SetMaxReadFrameSize(1 << 20)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// headers encodes a GET / request head.
func (h *h2conn) headers(extra ...hpack.HeaderField) []byte {
	h.hb.Reset()
	for _, f := range append([]hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "back"}, {Name: ":path", Value: "/"},
	}, extra...) {
		h.enc.WriteField(f)
	}
	return bytes.Clone(h.hb.Bytes())
}

// readUntilClosed reads frames, answering SETTINGS, until the connection
// ends or d passes; it returns what ended it ("" for the deadline).
func (h *h2conn) readUntilClosed(d time.Duration) (ended string) {
	h.c.SetReadDeadline(time.Now().Add(d))
	fr := http2.NewFramer(io.Discard, h.c)
	fr.SetMaxReadFrameSize(1 << 20)
	goaway := ""
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return ""
			}
			if goaway != "" {
				return goaway
			}
			return "closed"
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			goaway = "GOAWAY " + g.ErrCode.String()
		}
	}
}

// h2Client is a healthy h2c client of addr.
func h2Client(addr string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
}

// flood is one abusive HTTP/2 client. run writes at most a bounded number
// of frames and returns when done or when a write fails (the server
// closed); the connection must then end (wantClosed) and memory stay
// bounded.
type flood struct {
	name string
	// wantClosed: the server ends the connection (GOAWAY or close) within
	// the bound.
	wantClosed bool
	// guard: the reason the sidecar's h2 guard counts in
	// weft_listener_closed_total when it, not net/http, cuts the client
	// off ("": net/http's own limits end it).
	guard string
	// noRead: the client reads nothing while it floods (the server's
	// answers to SETTINGS and PING pile up on its side).
	noRead bool
	run    func(h *h2conn) (frames int)
}

const floodTime = 8 * time.Second

var floods = []flood{
	{"rapid reset (CVE-2023-44487)", true, "h2_control_flood", false, func(h *h2conn) int {
		deadline := time.Now().Add(floodTime)
		n := 0
		hdr := h.headers()
		for id := uint32(1); id < 2*50000 && time.Now().Before(deadline); id += 2 {
			if h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hdr, EndStream: true, EndHeaders: true}) != nil ||
				h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				break
			}
			n += 2
		}
		return n
	}},
	{"CONTINUATION flood", true, "", false, func(h *h2conn) int {
		frag := h.headers()
		if h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag, EndStream: true, EndHeaders: false}) != nil {
			return 0
		}
		h.hb.Reset()
		h.enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("a", 8000)})
		block := bytes.Clone(h.hb.Bytes())
		n := 1
		deadline := time.Now().Add(floodTime)
		for ; n < 20000 && time.Now().Before(deadline); n++ { // up to 160 MB of header
			if h.fr.WriteContinuation(1, false, block) != nil {
				break
			}
		}
		return n
	}},
	{"HPACK bomb", true, "", false, func(h *h2conn) int {
		// One 4 KB field in the dynamic table, then a block naming it by
		// index (one byte each) 16000 times: 64 MB decoded from 16 KB.
		h.hb.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
			{Name: ":authority", Value: "back"}, {Name: ":path", Value: "/"}} {
			h.enc.WriteField(f)
		}
		h.hb.Write([]byte{0x40, 0x01, 'x', 0x7f, 0x81, 0x1f}) // literal, incremental indexing, name "x", value length 4000
		h.hb.WriteString(strings.Repeat("b", 4000))
		first := bytes.Clone(h.hb.Bytes())
		if h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: true}) != nil {
			return 0
		}
		bomb := append(h.headers(), bytes.Repeat([]byte{0xbe}, 16000)...) // index 62: the newest entry
		n := 1
		for id := uint32(3); id < 3+2*50; id += 2 {
			if h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: bomb[:min(len(bomb), 16000)], EndStream: true, EndHeaders: len(bomb) <= 16000}) != nil {
				break
			}
			if len(bomb) > 16000 && h.fr.WriteContinuation(id, true, bomb[16000:]) != nil {
				break
			}
			n++
		}
		return n
	}},
	{"SETTINGS flood", true, "h2_control_flood", true, func(h *h2conn) int { return repeat(func() error { return h.fr.WriteSettings() }) }},
	{"PING flood", true, "", true, func(h *h2conn) int {
		return repeat(func() error { return h.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}) })
	}},
	{"empty DATA frames", true, "h2_empty_frames", false, func(h *h2conn) int {
		if h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.headers(hpack.HeaderField{Name: "content-length", Value: "1"}), EndHeaders: true}) != nil {
			return 0
		}
		return 1 + repeat(func() error { return h.fr.WriteData(1, false, nil) })
	}},
	{"WINDOW_UPDATE flood", true, "h2_control_flood", false, func(h *h2conn) int {
		n := repeat(func() error { return h.fr.WriteWindowUpdate(0, 1) }) // a flood of tiny increments first
		if h.fr.WriteWindowUpdate(0, 1<<31-1) == nil {
			n++
		}
		return n
	}},
}

// cpuTime is a process's user+system CPU time so far, from /proc.
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// repeat writes up to 1M frames, for at most floodTime.
func repeat(write func() error) int {
	deadline := time.Now().Add(floodTime)
	n := 0
	for ; n < 1_000_000; n++ {
		if n%1024 == 0 && time.Now().After(deadline) {
			break
		}
		if write() != nil {
			break
		}
	}
	return n
}

// TestH2Floods runs each flood against the server sidecar's inbound
// listener (h2c, what the network reaches) and the client sidecar's
// outbound, while a healthy h2c client keeps calling the same listener;
// the sidecar's RSS must stay bounded.
func TestH2Floods(t *testing.T) {
	m := startMesh(t, startApp(t), "")
	m.waitRoutable(t)
	for _, l := range []struct {
		name, addr, admin string
		p                 *harness.Proc
	}{{"inbound", m.inbound, m.serverAdmin, m.server}, {"outbound", m.outbound, m.clientAdmin, m.client}} {
		t.Run(l.name, func(t *testing.T) { runFloods(t, l.name, l.addr, l.admin, l.p.Pid(), floods) })
	}
}

func runFloods(t *testing.T, listener, addr, admin string, pid int, floods []flood) {
	const rssBound = 128 << 20 // growth allowed per flood
	hc := h2Client(addr)
	get := func() error {
		resp, err := hc.Get("http://back/healthy")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatalf("h2c request before the floods: %v", err)
	}
	for _, f := range floods {
		t.Run(f.name, func(t *testing.T) {
			before := rss(t, pid)
			guardBefore := metric(t, admin, "weft_listener_closed_total", `listener="`+listener+`"`, `reason="`+f.guard+`"`)
			h := dialH2(t, addr)
			ended := make(chan string, 1)
			var peak atomic.Int64
			stop := make(chan struct{})
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
						if r := rss(t, pid); r > peak.Load() {
							peak.Store(r)
						}
					}
				}
			}()
			defer close(stop)
			var healthyErr error
			var healthyN int
			var hwg sync.WaitGroup
			hwg.Add(1)
			go func() {
				defer hwg.Done()
				for i := 0; i < 10; i++ {
					if err := get(); err != nil {
						healthyErr = err
						return
					}
					healthyN++
					time.Sleep(50 * time.Millisecond)
				}
			}()
			start := time.Now()
			frames := make(chan int, 1)
			cpuBefore := cpuTime(t, pid)
			go func() { frames <- f.run(h) }()
			if !f.noRead {
				go func() { ended <- h.readUntilClosed(floodTime + 10*time.Second) }()
			}
			n := <-frames
			if f.noRead {
				go func() { ended <- h.readUntilClosed(10 * time.Second) }()
			}
			var how string
			if f.wantClosed {
				how = <-ended
			} else {
				select {
				case how = <-ended:
				case <-time.After(time.Second):
				}
			}
			took := time.Since(start)
			hwg.Wait()
			cpu := cpuTime(t, pid) - cpuBefore
			after := rss(t, pid)
			t.Logf("%s: %d frames in %s, connection: %q; %s sidecar CPU %s, RSS %d MiB before, peak %d MiB, %d MiB after; healthy h2c requests meanwhile: %d ok",
				f.name, n, took.Round(time.Millisecond), how, listener, cpu, before>>20, max(peak.Load(), after)>>20, after>>20, healthyN)
			if healthyErr != nil {
				t.Errorf("healthy request during the flood: %v", healthyErr)
			}
			if f.wantClosed && how == "" {
				t.Errorf("connection still open %s after the flood", floodTime+10*time.Second)
			}
			if f.guard != "" {
				if n := metric(t, admin, "weft_listener_closed_total", `listener="`+listener+`"`, `reason="`+f.guard+`"`); n != guardBefore+1 {
					t.Errorf("weft_listener_closed_total{reason=%q} went from %v to %v", f.guard, guardBefore, n)
				}
			}
			if g := max(peak.Load(), after) - before; g > rssBound {
				t.Errorf("RSS grew by %d MiB", g>>20)
			}
		})
	}
	if err := get(); err != nil {
		t.Fatalf("h2c request after the floods: %v", err)
	}
}
