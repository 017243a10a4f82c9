package harness

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func testTarget(t *testing.T, h http.Handler) Target {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return Target{Addr: strings.TrimPrefix(srv.URL, "http://"), Host: "backend"}
}

func TestOpenLoopCounts(t *testing.T) {
	var hosts atomic.Int64
	tgt := testTarget(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "backend" {
			hosts.Add(1)
		}
		BackendHandler().ServeHTTP(w, r)
	}))
	c := NewClient(tgt, 16, 5*time.Second, BodySize)
	defer c.Close()
	res, err := OpenLoop(context.Background(), c, 200, 500*time.Millisecond, 16)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 100 || res.OK != 100 || res.Errors != 0 || res.Hist.TotalCount() != 100 {
		t.Fatalf("sent %d ok %d errors %d recorded %d; want 100 100 0 100 (%s)", res.Sent, res.OK, res.Errors, res.Hist.TotalCount(), res.ErrorSummary())
	}
	if hosts.Load() != 100 {
		t.Fatalf("%d requests carried Host: backend, want 100", hosts.Load())
	}
	if res.Elapsed < 500*time.Millisecond {
		t.Fatalf("elapsed %v, shorter than the schedule", res.Elapsed)
	}
}

// TestOpenLoopCoordinatedOmission stalls the server once with one
// connection allowed: the requests scheduled during the stall must be
// charged for their wait, not only the one that hit the stall. The bounds
// are lower bounds guaranteed by the stall itself, not timing figures.
func TestOpenLoopCoordinatedOmission(t *testing.T) {
	const stall = 300 * time.Millisecond
	var n atomic.Int64
	tgt := testTarget(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 10 {
			time.Sleep(stall)
		}
		BackendHandler().ServeHTTP(w, r)
	}))
	c := NewClient(tgt, 1, 5*time.Second, BodySize)
	defer c.Close()
	// 100 req/s for 1 s through a single worker: ~30 sends fall in the stall.
	res, err := OpenLoop(context.Background(), c, 100, time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 100 {
		t.Fatalf("ok %d, want 100 (%s)", res.OK, res.ErrorSummary())
	}
	if max := res.Hist.Max(); max < stall.Microseconds() {
		t.Fatalf("max latency %d µs, want >= the %v stall", max, stall)
	}
	// A generator that measured from the actual send would see one slow
	// request; scheduled-time measurement sees every request that queued.
	slow := res.Hist.TotalCount() - countBelow(res, 100*time.Millisecond)
	if slow < 10 {
		t.Fatalf("%d requests >= 100ms, want >= 10: coordinated omission", slow)
	}
}

func countBelow(res *LoadResult, d time.Duration) int64 {
	var n int64
	for _, b := range res.Hist.Distribution() {
		if b.To < d.Microseconds() {
			n += b.Count
		}
	}
	return n
}

func TestOpenLoopErrors(t *testing.T) {
	tgt := testTarget(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	c := NewClient(tgt, 4, 5*time.Second, BodySize)
	defer c.Close()
	res, err := OpenLoop(context.Background(), c, 100, 200*time.Millisecond, 4)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Errors != 20 || !strings.Contains(res.ErrorSummary(), "20x status 503") {
		t.Fatalf("ok %d errors %d (%s), want 0, 20, 20x status 503", res.OK, res.Errors, res.ErrorSummary())
	}

	// Nothing listening: every request is a transport error, still counted.
	dead := NewClient(Target{Addr: "127.0.0.1:1"}, 4, time.Second, BodySize)
	defer dead.Close()
	res, err = OpenLoop(context.Background(), dead, 100, 100*time.Millisecond, 4)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Errors != 10 {
		t.Fatalf("ok %d errors %d (%s), want 0, 10", res.OK, res.Errors, res.ErrorSummary())
	}
}

func TestOpenLoopCancel(t *testing.T) {
	tgt := testTarget(t, BackendHandler())
	c := NewClient(tgt, 4, 5*time.Second, BodySize)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := OpenLoop(ctx, c, 100, time.Hour, 4)
	if err == nil {
		t.Fatal("OpenLoop with a cancelled context returned no error")
	}
	if time.Since(start) > 10*time.Second || res.Sent >= 360000 {
		t.Fatalf("cancel not honoured: %v, %d sent", time.Since(start), res.Sent)
	}
}

func TestClosedLoop(t *testing.T) {
	tgt := testTarget(t, BackendHandler())
	c := NewClient(tgt, 4, 5*time.Second, BodySize)
	defer c.Close()
	res, err := ClosedLoop(context.Background(), c, 4, 300*time.Millisecond, 500)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK == 0 || res.Errors != 0 || res.Sent > 500 || res.OK != res.Sent {
		t.Fatalf("sent %d ok %d errors %d (%s)", res.Sent, res.OK, res.Errors, res.ErrorSummary())
	}
	if res.Achieved() <= 0 {
		t.Fatalf("achieved %v", res.Achieved())
	}
}

func TestBodyLengthChecked(t *testing.T) {
	tgt := testTarget(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("short"))
	}))
	c := NewClient(tgt, 1, 5*time.Second, BodySize)
	defer c.Close()
	if err := c.Do(context.Background()); err == nil || !strings.Contains(err.Error(), "body length") {
		t.Fatalf("Do = %v, want a body length error", err)
	}
}
