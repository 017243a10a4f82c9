package healthcheck

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func tcp(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func TestProbe(t *testing.T) {
	var status sync.Map // path -> code
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "orders" || r.Header.Get("X-Weft-Source") != "web" {
			http.Error(w, "wrong host or source", http.StatusBadRequest)
			return
		}
		if r.URL.Path == "/slow" {
			time.Sleep(500 * time.Millisecond)
		}
		code, _ := status.Load(r.URL.Path)
		c, _ := code.(int)
		if c == 0 {
			c = 200
		}
		if c == 503 {
			w.Header().Set("X-Weft-Error", "app_unavailable")
		}
		w.WriteHeader(c)
	}))
	defer srv.Close()
	status.Store("/redirect", 302)
	status.Store("/down", 503)
	status.Store("/missing", 404)
	addr := strings.TrimPrefix(srv.URL, "http://")
	closed := func() string { // a port nothing listens on
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := l.Addr().String()
		l.Close()
		return a
	}()
	for _, tc := range []struct {
		name, path, addr, want string // want: "" healthy, else in the error
	}{
		{"http ok", "/healthz", addr, ""},
		{"redirect counts as healthy", "/redirect", addr, ""},
		{"503 with the mesh's reason", "/down", addr, "GET /down: 503 Service Unavailable (app_unavailable)"},
		{"404", "/missing", addr, "GET /missing: 404 Not Found"},
		{"timeout", "/slow", addr, "GET /slow:"},
		{"tcp ok", "", addr, ""},
		{"tcp refused", "", closed, "connecting to " + closed},
		{"http refused", "/healthz", closed, "connecting to " + closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Probe(context.Background(), Config{Service: "orders", Source: "web", Path: tc.path, Timeout: 200 * time.Millisecond, Dial: tcp}, tc.addr)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want healthy, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestRunReportsAndStops: every target is probed at once and then every
// interval, and Run returns once cancelled.
func TestRunReportsAndStops(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	var mu sync.Mutex
	got := map[string]int{}
	healthy := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Service: "orders", Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond, Dial: tcp,
			Targets: func() []Target {
				return []Target{{ID: "up", Address: strings.TrimPrefix(srv.URL, "http://")}, {ID: "down", Address: "127.0.0.1:1"}}
			},
			Report: func(id string, ok bool, why string) {
				mu.Lock()
				got[id]++
				healthy[id] = ok
				mu.Unlock()
			}})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := min(got["up"], got["down"])
		mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("probes so far %v, want 3 rounds", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	if !healthy["up"] || healthy["down"] {
		t.Fatalf("healthy %v, want up true, down false", healthy)
	}
}
