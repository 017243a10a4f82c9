package deliver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// appConn against net/http's server: one kept-alive connection, a new one
// after the app closes it (before or with an answer), chunked answers,
// deadlines and cancellation.
func TestAppConn(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch string(body) {
		case "slow":
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		case "close":
			w.Header().Set("Connection", "close")
		case "chunked":
			io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part two")
			return
		case "early hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "after hints")
			return
		case "big":
			io.WriteString(w, strings.Repeat("x", 200<<10))
			return
		}
		if r.Method != http.MethodPost || r.URL.RequestURI() != "/events?x=1" || r.Header.Get("X-Msg-Tenant") != "acme" {
			http.Error(w, "bad request", 400)
			return
		}
		io.WriteString(w, "ok:"+string(body))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := newAppConn(strings.TrimPrefix(srv.URL, "http://"))
	defer c.close()
	h := http.Header{"X-Msg-Tenant": {"acme"}}
	post := func(body string, d time.Duration) (int, string, error) {
		status, answer, err := c.post(context.Background(), "/events?x=1", h, []byte(body), time.Now().Add(d), 1<<10)
		return status, string(answer), err
	}
	expect := func(body string, wantStatus int, want string) {
		t.Helper()
		status, answer, err := post(body, 5*time.Second)
		if err != nil || status != wantStatus || answer != want {
			t.Fatalf("post %q: %d %q %v, want %d %q", body, status, answer, err, wantStatus, want)
		}
	}
	for range 20 {
		expect("m", 200, "ok:m")
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 callbacks took %d connections, want 1 kept alive", n)
	}
	expect("close", 200, "ok:close")
	expect("after close", 200, "ok:after close")
	srv.CloseClientConnections() // the app drops the idle connection
	expect("after drop", 200, "ok:after drop")
	expect("chunked", 200, "part one, part two")
	expect("early hints", 200, "after hints")
	if _, answer, err := post("big", 5*time.Second); err != nil || len(answer) != 1<<10 {
		t.Fatalf("big answer: %d bytes kept, %v; want the 1 KiB limit", len(answer), err)
	}
	expect("after big", 200, "ok:after big")
	if _, _, err := post("slow", 100*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("slow app: %v, want the deadline exceeded", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	began := time.Now()
	if _, _, err := c.post(ctx, "/events?x=1", h, []byte("slow"), time.Now().Add(5*time.Second), 1<<10); !errors.Is(err, context.Canceled) || time.Since(began) > time.Second {
		t.Fatalf("cancelled after %s: %v, want context.Canceled at once", time.Since(began), err)
	}
	expect("after cancel", 200, "ok:after cancel")
}

// BenchmarkCallback is one callback's round trip to an app on loopback:
// through net/http's Transport (as before) and on the worker's own
// connection. CPU per op includes the in-process app's.
func BenchmarkCallback(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	body := make([]byte, 256)
	h := func() http.Header {
		return http.Header{"Content-Type": {"application/octet-stream"}, "X-Weft-Message-Id": {"7mibhs1IUs6jDx5Tg8pbJW"},
			"X-Weft-Topic": {"bench"}, "X-Weft-Attempt": {"1"}, "X-Weft-Sequence": {"12345"}}
	}
	b.Run("transport", func(b *testing.B) {
		tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, DisableCompression: true}
		defer tr.CloseIdleConnections()
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/events", bytes.NewReader(body))
			req.Header = h()
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes))
			resp.Body.Close()
		}
	})
	b.Run("appconn", func(b *testing.B) {
		c := newAppConn(strings.TrimPrefix(srv.URL, "http://"))
		defer c.close()
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := c.post(context.Background(), "/events", h(), body, time.Now().Add(5*time.Second), MaxAnswerBytes); err != nil {
				b.Fatal(err)
			}
		}
	})
}
