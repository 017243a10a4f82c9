package harness

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestIdleConns: the connections are really opened, each answered once and
// left open, one reading per count; a server that closes after answering
// is an error, since nothing would be idle.
func TestIdleConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opened, served atomic.Int64
	h := BackendHandler()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		h.ServeHTTP(w, r)
	}), ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			opened.Add(1)
		}
	}}
	go srv.Serve(ln)
	defer srv.Close()
	ctx := context.Background()
	counts := []int{3, 7}
	res, err := IdleConns(ctx, Target{Addr: ln.Addr().String(), Host: "backend"}, nil, nil, counts, 20*time.Millisecond, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Conns != 3 || res[1].Conns != 7 || res[1].AfterGC {
		t.Fatalf("readings %+v", res)
	}
	if opened.Load() != 7 || served.Load() != 7 {
		t.Fatalf("server saw %d connections and %d requests, want 7 of each", opened.Load(), served.Load())
	}

	var b strings.Builder
	writeIdle(&b, []IdleRow{
		{Path: "weft", Conns: 10, HopRSS: []int64{20 << 20, 21 << 20}, HopAnon: []int64{4 << 20, 4 << 20}, HopHeapInuse: []int64{3 << 20, 3 << 20}, HopStackInuse: []int64{1 << 20, 1 << 20}},
		{Path: "weft", Conns: 2000, HopRSS: []int64{40 << 20, 22 << 20}, HopAnon: []int64{20 << 20, 5 << 20}, HopHeapInuse: []int64{11 << 20, 4 << 20}, HopStackInuse: []int64{5 << 20, 1 << 20}},
		{Path: "haproxy", Conns: 10, HopRSS: []int64{14 << 20, 14 << 20}, HopAnon: []int64{4 << 20, 4 << 20}, HopHeapInuse: []int64{-1, -1}, HopStackInuse: []int64{-1, -1}},
	})
	for _, want := range []string{"| weft | 2000 | 40.0 / 22.0 | +20.0 / +1.0 | +16.0 / +1.0 | 16.0 / 5.0 |", "| haproxy | 10 | 14.0 / 14.0 | +0.0 / +0.0 | +0.0 / +0.0 | – / – |"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}

	closing := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
	})}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go closing.Serve(ln2)
	defer closing.Close()
	if _, err := IdleConns(ctx, Target{Addr: ln2.Addr().String()}, nil, nil, []int{2}, time.Millisecond, ""); err == nil || !strings.Contains(err.Error(), "close true") {
		t.Fatalf("a closing server: %v", err)
	}
}
