package harness

import (
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// Target is where the load generator sends its GETs.
type Target struct {
	Addr string // host:port dialled
	Host string // Host header ("" = Addr)
	Path string // request path ("" = "/")
	// Proto is what the load generator speaks: HTTP/1.1 GETs (ProtoHTTP1),
	// gRPC unary calls or gRPC stream round trips.
	Proto string
}

// Requester sends one request and reads its whole answer: the unit the load
// loops schedule and time (*Client, *GRPCClient).
type Requester interface {
	Do(ctx context.Context) error
	Close()
}

func (t Target) url() string {
	p := t.Path
	if p == "" {
		p = "/"
	}
	return "http://" + t.Addr + p
}

// LoadResult is what one load run observed.
type LoadResult struct {
	Hist     *hdrhistogram.Histogram // µs, OK and non-OK responses alike
	Sent     int64                   // requests started
	OK       int64                   // 200 with the expected body length
	Errors   int64                   // everything else (transport error, status, short body)
	Samples  map[string]int64        // error message -> count (a few kinds)
	Elapsed  time.Duration           // from the first scheduled send to the last completion
	Inflight int                     // peak workers (open loop) or connections (closed loop)
	// Slowest are the slowest requests (at most the recorder's keep),
	// slowest first: when each was scheduled and how long it took, so that
	// a tail can be lined up against what else happened on the machine.
	Slowest []SlowRequest
	// All is every request, in completion order, when asked for
	// (OpenLoopKeep's all): the timeline sorts them into quiet and not.
	All []SlowRequest
	// StartMono is the first scheduled send on CLOCK_MONOTONIC (ns), the
	// clock of perf's -k CLOCK_MONOTONIC and of the kernel's tracepoints:
	// a SlowRequest's At is relative to it.
	StartMono int64
}

// SlowRequest is one of a run's slowest requests.
type SlowRequest struct {
	At      time.Duration // scheduled send, from the run's first scheduled send
	Latency time.Duration // scheduled send to last byte (or error)
	Err     bool
}

// Completed is the number of requests that got a response or failed.
func (r *LoadResult) Completed() int64 { return r.OK + r.Errors }

// Achieved is successful requests per second over Elapsed.
func (r *LoadResult) Achieved() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// ErrorSummary is the error kinds, most frequent first, in one line.
func (r *LoadResult) ErrorSummary() string {
	type kv struct {
		k string
		v int64
	}
	var kvs []kv
	for k, v := range r.Samples {
		kvs = append(kvs, kv{k, v})
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].v > kvs[j].v || kvs[i].v == kvs[j].v && kvs[i].k < kvs[j].k })
	s := ""
	for i, e := range kvs {
		if i > 0 {
			s += "; "
		}
		s += fmt.Sprintf("%dx %s", e.v, e.k)
	}
	return s
}

const maxErrorKinds = 8

// DefaultSlowest is how many of a run's slowest requests are kept.
const DefaultSlowest = 20

type recorder struct {
	mu   sync.Mutex
	res  *LoadResult
	last time.Time
	keep int
	all  bool
	slow slowHeap // the keep slowest so far, fastest on top
}

func newRecorder(keep int) *recorder {
	return &recorder{res: &LoadResult{Hist: NewHistogram(), Samples: map[string]int64{}}, keep: keep}
}

// slowHeap is a min-heap on latency: its top is the fastest of the slow
// requests kept, the one a slower newcomer replaces.
type slowHeap []SlowRequest

func (h slowHeap) Len() int           { return len(h) }
func (h slowHeap) Less(i, j int) bool { return h[i].Latency < h[j].Latency }
func (h slowHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *slowHeap) Push(x any)        { *h = append(*h, x.(SlowRequest)) }
func (h *slowHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// finish fills the result's Slowest, slowest first.
func (r *recorder) finish() {
	s := append([]SlowRequest(nil), r.slow...)
	sort.Slice(s, func(i, j int) bool {
		return s[i].Latency > s[j].Latency || s[i].Latency == s[j].Latency && s[i].At < s[j].At
	})
	r.res.Slowest = s
}

// record counts one request scheduled at offset at (from the run's first
// scheduled send) that took lat.
func (r *recorder) record(at, lat time.Duration, err error, end time.Time) {
	us := lat.Microseconds()
	if us < histLowest {
		us = histLowest
	}
	if us > histHighest {
		us = histHighest
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.res.Hist.RecordValue(us)
	if r.all {
		r.res.All = append(r.res.All, SlowRequest{At: at, Latency: lat, Err: err != nil})
	}
	if r.keep > 0 {
		sr := SlowRequest{At: at, Latency: lat, Err: err != nil}
		if len(r.slow) < r.keep {
			heap.Push(&r.slow, sr)
		} else if lat > r.slow[0].Latency {
			r.slow[0] = sr
			heap.Fix(&r.slow, 0)
		}
	}
	if end.After(r.last) {
		r.last = end
	}
	if err == nil {
		r.res.OK++
		return
	}
	r.res.Errors++
	msg := err.Error()
	if _, ok := r.res.Samples[msg]; ok || len(r.res.Samples) < maxErrorKinds {
		r.res.Samples[msg]++
	}
}

// Client is a keep-alive HTTP/1.1 client for one path.
type Client struct {
	hc     *http.Client
	tr     *http.Transport
	target Target
	body   int64 // expected body length, -1 = any
}

// NewClient returns a client with a keep-alive pool large enough for
// maxConns concurrent requests and a per-request timeout.
func NewClient(t Target, maxConns int, timeout time.Duration, bodyLen int64) *Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: timeout}, tr: tr, target: t, body: bodyLen}
}

// Close drops pooled connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

var errBodyLen = errors.New("unexpected body length")

// Do sends one GET and reads the whole body.
func (c *Client) Do(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.target.url(), nil)
	if err != nil {
		return err
	}
	if c.target.Host != "" {
		req.Host = c.target.Host
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return simplifyErr(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return simplifyErr(err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if c.body >= 0 && n != c.body {
		return fmt.Errorf("%w: %d", errBodyLen, n)
	}
	return nil
}

// simplifyErr drops the per-request parts (URLs, local ports) so that error
// kinds aggregate.
func simplifyErr(err error) error {
	var te interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &te) && te.Timeout() {
		return errors.New("timeout")
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return fmt.Errorf("%s: %v", oe.Op, oe.Err)
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// OpenLoop sends rate requests per second for dur, each scheduled at
// start + i/rate, and measures every request from its scheduled send time:
// when the system under test (or the generator) falls behind, the wait is
// charged to the requests that had to wait, so slow replies are not
// under-counted (coordinated omission). The schedule is driven by a timerfd
// rather than Go timers, whose wake-ups are rounded to whole milliseconds
// by the runtime's epoll wait. At most maxInflight requests are outstanding;
// beyond that, sends are late, and their lateness is measured.
// The slowest requests (DefaultSlowest of them) come back in Slowest.
func OpenLoop(ctx context.Context, c Requester, rate float64, dur time.Duration, maxInflight int) (*LoadResult, error) {
	return OpenLoopKeep(ctx, c, rate, dur, maxInflight, DefaultSlowest, false)
}

// OpenLoopKeep is OpenLoop keeping the keep slowest requests, and every
// request's timing in All when all is set.
func OpenLoopKeep(ctx context.Context, c Requester, rate float64, dur time.Duration, maxInflight, keep int, all bool) (*LoadResult, error) {
	if rate <= 0 || dur <= 0 {
		return nil, fmt.Errorf("openloop: rate %v and duration %v must be positive", rate, dur)
	}
	n := int64(rate * dur.Seconds())
	if n < 1 {
		n = 1
	}
	interval := time.Duration(float64(time.Second) / rate)
	if interval <= 0 {
		interval = 1
	}
	tick, err := newTicker(interval, time.Millisecond)
	if err != nil {
		return nil, err
	}
	defer tick.Close()
	start := tick.start

	rec := newRecorder(keep)
	rec.all = all
	rec.res.StartMono = tick.startMono
	jobs := make(chan time.Time)
	var wg sync.WaitGroup
	workers := 0
	worker := func(first time.Time) {
		defer wg.Done()
		sched := first
		for {
			err := c.Do(ctx)
			now := time.Now()
			rec.record(sched.Sub(start), now.Sub(sched), err, now)
			var ok bool
			if sched, ok = <-jobs; !ok {
				return
			}
		}
	}

	stop := context.AfterFunc(ctx, func() { tick.Close() })
	defer stop()
	var sent int64
	var loopErr error
dispatch:
	for sent < n {
		k, err := tick.Wait()
		if err != nil {
			if ctx.Err() != nil {
				loopErr = ctx.Err()
			} else {
				loopErr = err
			}
			break
		}
		for ; k > 0 && sent < n; k-- {
			sched := start.Add(time.Duration(sent) * interval)
			select {
			case jobs <- sched:
			default:
				if workers < maxInflight {
					workers++
					wg.Add(1)
					go worker(sched)
				} else {
					select {
					case jobs <- sched:
					case <-ctx.Done():
						loopErr = ctx.Err()
						break dispatch
					}
				}
			}
			sent++
		}
	}
	close(jobs)
	wg.Wait() // bounded: every request has the client's timeout
	rec.finish()
	res := rec.res
	res.Sent = sent
	res.Inflight = workers
	if !rec.last.IsZero() {
		res.Elapsed = rec.last.Sub(start)
	}
	if min := time.Duration(sent) * interval; res.Elapsed < min {
		res.Elapsed = min
	}
	return res, loopErr
}

// ClosedLoop keeps conns requests outstanding (each connection sends its
// next request when the previous reply is read) for dur: the maximum
// throughput run. Latency is measured from each send.
func ClosedLoop(ctx context.Context, c Requester, conns int, dur time.Duration, maxRequests int64) (*LoadResult, error) {
	if conns <= 0 || dur <= 0 {
		return nil, fmt.Errorf("closedloop: conns %d and duration %v must be positive", conns, dur)
	}
	rec := newRecorder(DefaultSlowest)
	rec.res.StartMono = monoNow()
	start := time.Now()
	deadline := start.Add(dur)
	var mu sync.Mutex
	var sent int64
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if sent >= maxRequests {
			return false
		}
		sent++
		return true
	}
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) && take() {
				t0 := time.Now()
				err := c.Do(ctx)
				now := time.Now()
				rec.record(t0.Sub(start), now.Sub(t0), err, now)
			}
		}()
	}
	wg.Wait()
	rec.finish()
	res := rec.res
	res.Sent = sent
	res.Inflight = conns
	res.Elapsed = time.Since(start)
	return res, ctx.Err()
}

// ticker is a periodic CLOCK_MONOTONIC timerfd read through the runtime's
// poller: its expirations wake the reading goroutine with hrtimer precision.
type ticker struct {
	f         *os.File
	start     time.Time // first expiration, on Go's clock
	startMono int64     // the same on CLOCK_MONOTONIC, ns
	once      sync.Once
}

func newTicker(interval, lead time.Duration) (*ticker, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "timerfd")
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		f.Close()
		return nil, fmt.Errorf("clock_gettime: %w", err)
	}
	goNow := time.Now()
	first := now.Nano() + lead.Nanoseconds()
	spec := unix.ItimerSpec{
		Value:    unix.NsecToTimespec(first),
		Interval: unix.NsecToTimespec(interval.Nanoseconds()),
	}
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		f.Close()
		return nil, fmt.Errorf("timerfd_settime: %w", err)
	}
	return &ticker{f: f, start: goNow.Add(lead), startMono: first}, nil
}

// Wait blocks until the next expiration and returns how many happened
// since the previous Wait.
func (t *ticker) Wait() (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(t.f, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func (t *ticker) Close() { t.once.Do(func() { t.f.Close() }) }

// monoNow is CLOCK_MONOTONIC in ns (0 if unreadable).
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}
