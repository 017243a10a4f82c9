// Command messaging measures Weft messaging on this machine, with real
// processes: a control plane (embedded NATS JetStream broker), a publishing
// sidecar and a subscribing sidecar whose app is this program's HTTP
// server. It reports
//
//   - publish → callback latency (p50/p90/p99/max) at a fixed rate,
//   - the most messages/s through one publishing and one subscribing sidecar,
//
// and the same two figures publishing straight to the same broker with a
// JetStream client and consuming with a pull consumer (the floor the
// sidecars add to).
//
//	make build && go run ./bench/messaging -weft bin/weft
//
// -batch N publishes N messages per request (POST /v1/publish-batch) and
// -callback-batch N delivers up to N per callback (Subscription
// spec.batch), the two sides of the sidecars' fastest path.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftmesh/weft/apiclient"
)

func main() {
	weft := flag.String("weft", "bin/weft", "the weft binary")
	rate := flag.Int("rate", 1000, "messages/s of the latency run")
	dur := flag.Duration("duration", 10*time.Second, "length of each run")
	conc := flag.Int("concurrency", 64, "publishers in flight (throughput runs) and the subscription's concurrency")
	size := flag.Int("size", 256, "payload bytes")
	flag.StringVar(&profileDir, "profile", "", "write CPU profiles of both sidecars during the max run to this directory")
	flag.IntVar(&keys, "keys", 0, "publish through the sidecars with ordering keys, rotating over this many (0: no key)")
	flag.IntVar(&batch, "batch", 1, "messages per publish request in the sidecars' max run (> 1: POST /v1/publish-batch, NDJSON)")
	flag.IntVar(&callbackBatch, "callback-batch", 0, "batched callbacks: the Subscription's batch.maxMessages (0: one callback per message)")
	flag.StringVar(&callbackWait, "callback-wait", "", "with -callback-batch: the Subscription's batch.maxWait (empty: send what is queued)")
	flag.Parse()
	if err := run(*weft, *rate, *dur, *conc, *size); err != nil {
		fmt.Fprintln(os.Stderr, "bench/messaging:", err)
		os.Exit(1)
	}
}

var (
	profileDir    string
	batch         int
	callbackBatch int
	callbackWait  string
)

type env struct {
	admins   map[string]int // sidecar → admin port
	dir      string
	procs    []*exec.Cmd
	api      string
	pubURL   string
	broker   string
	received chan int64 // publish timestamps (unix ns) of messages the app got
	appPort  int
}

func run(weft string, rate int, dur time.Duration, conc, size int) error {
	if _, err := os.Stat(weft); err != nil {
		return fmt.Errorf("%s: %w (make build first)", weft, err)
	}
	dir, err := os.MkdirTemp("", "weft-bench-msg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{dir: dir, received: make(chan int64, 1<<20)}
	defer e.stop()
	if err := e.start(weft, conc); err != nil {
		return err
	}
	keyNote := "no ordering key"
	if keys > 0 {
		keyNote = fmt.Sprintf("ordering keys rotating over %d (through the sidecars)", keys)
	}
	if callbackBatch > 0 {
		keyNote += fmt.Sprintf(", batched callbacks of up to %d (maxWait %q)", callbackBatch, callbackWait)
	}
	fmt.Printf("Weft messaging on this machine: %d CPUs, payload %d bytes, %s, broker %s (embedded)\n\n", numCPU(), size, keyNote, e.broker)

	pubLat.d = nil
	split.start()
	lat, err := e.viaSidecars(rate, dur, size, conc, false)
	if err != nil {
		return err
	}
	pubOnly := result{name: "  of which: publish request → 200", pub: lat.pub, rate: lat.rate, lat: pubLat.d}
	delivery := result{name: "  and 200 → callback", pub: lat.pub, rate: lat.rate, lat: split.stop()}
	thr, err := e.viaSidecars(0, dur, size, conc, true)
	if err != nil {
		return err
	}
	dlat, err := e.direct(rate, dur, size, conc, false)
	if err != nil {
		return err
	}
	dthr, err := e.direct(0, dur, size, conc, true)
	if err != nil {
		return err
	}
	fmt.Printf("%-34s %11s %10s %9s %9s %9s %9s %6s\n", "run", "published/s", "received/s", "p50", "p90", "p99", "max", "lost")
	for _, r := range []result{lat, pubOnly, delivery, thr, dlat, dthr} {
		fmt.Printf("%-34s %11.0f %10.0f %9s %9s %9s %9s %6d\n", r.name, r.pub, r.rate, ms(r.p(50)), ms(r.p(90)), ms(r.p(99)), ms(r.p(100)), r.lost)
	}
	fmt.Printf("\nthroughput, sidecars ÷ direct: %.2f (received/s)\n", thr.rate/dthr.rate)
	fmt.Println("CPU µs per message in the max runs (utime+stime; a loaded machine inflates them less than it does the rates):")
	fmt.Println("  sidecars:", thr.cpu)
	fmt.Println("  direct:  ", dthr.cpu)
	fmt.Printf("and at %d msg/s (per-message wake-ups, which a loaded machine makes dearer):\n", rate)
	fmt.Println("  sidecars:", lat.cpu)
	fmt.Println("  direct:  ", dlat.cpu)
	fmt.Println("\nlatency: from the publish request starting to the subscriber's callback (sidecars)")
	fmt.Println("or to the consumer receiving it (direct); both clocks are this process's.")
	fmt.Println("\"publish → 200\" is the app's publish request alone: the broker has stored the message;")
	fmt.Println("\"200 → callback\" the rest, per message (0 when the callback came before the 200).")
	if out, err := exec.Command("uptime").Output(); err == nil {
		if _, avg, ok := strings.Cut(string(out), "load average:"); ok {
			fmt.Printf("load average after measuring:%s", avg)
		}
	}
	return nil
}

// cpuTimes reads utime+stime (seconds) of the bench's processes: this one
// (publishers and the app, or the JetStream clients), the control plane
// (the broker), and the sidecars when they run.
func (e *env) cpuTimes() map[string]float64 {
	m := map[string]float64{"bench": cpuSeconds(os.Getpid())}
	for i, name := range []string{"control+broker", "subscriber sidecar", "publisher sidecar"} {
		if i < len(e.procs) {
			m[name] = cpuSeconds(e.procs[i].Process.Pid)
		}
	}
	return m
}

func cpuNote(before, after map[string]float64, msgs int, sidecars bool) string {
	names := []string{"bench", "control+broker"}
	if sidecars {
		names = append(names, "publisher sidecar", "subscriber sidecar")
	}
	var parts []string
	total := 0.0
	for _, n := range names {
		us := 1e6 * (after[n] - before[n]) / float64(max(msgs, 1))
		total += us
		parts = append(parts, fmt.Sprintf("%s %.0f", n, us))
	}
	return strings.Join(parts, ", ") + fmt.Sprintf("; total %.0f", total)
}

func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

func numCPU() int {
	n, _ := strconv.Atoi(strings.TrimSpace(must(exec.Command("nproc").Output())))
	return n
}

func must(b []byte, _ error) string { return string(b) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

type result struct {
	name string
	pub  float64 // published per second while publishing
	rate float64
	lat  []time.Duration
	lost int
	cpu  string // CPU µs per message of each process, for the max runs
}

func (r result) p(q int) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	slices.Sort(r.lat)
	i := (len(r.lat) - 1) * q / 100
	return r.lat[i]
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (e *env) spawn(bin string, args ...string) error {
	f, err := os.Create(filepath.Join(e.dir, fmt.Sprintf("p%d.log", len(e.procs))))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	e.procs = append(e.procs, cmd)
	return nil
}

func (e *env) stop() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		_ = e.procs[i].Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = e.procs[i].Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-e.procs[i].Process.Pid, syscall.SIGKILL)
		}
	}
}

func waitOK(url string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not OK within 20s", url)
}

// start runs the control plane, the subscriber app (this process), its
// sidecar and a publishing sidecar. Sidecars export no spans: the figures
// are messaging's, not tracing's.
func (e *env) start(weft string, conc int) error {
	grpcA, httpA, brokerA := freePort(), freePort(), freePort()
	e.api = "http://127.0.0.1:" + strconv.Itoa(httpA)
	if err := e.spawn(weft, "control", "--data-dir", filepath.Join(e.dir, "cp"), "--grpc-addr", "127.0.0.1:"+strconv.Itoa(grpcA),
		"--http-addr", "127.0.0.1:"+strconv.Itoa(httpA), "--broker-addr", "127.0.0.1:"+strconv.Itoa(brokerA), "--otlp-endpoint", "none",
		// The direct baseline dials this same broker, which only sidecars
		// can by default. Its password is checked once per connection,
		// never per message, so turning it off changes neither path's
		// figures and keeps one broker and one config for both.
		"--broker-auth=false"); err != nil {
		return err
	}
	if err := waitOK(e.api + "/healthz"); err != nil {
		return err
	}
	e.broker = "nats://127.0.0.1:" + strconv.Itoa(brokerA)

	e.appPort = freePort()
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(e.appPort))
	if err != nil {
		return err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") == "application/x-ndjson" {
			e.receivedBatch(body)
			return
		}
		if len(body) >= 8 {
			e.received <- int64(binary.BigEndian.Uint64(body))
		}
	}))
	control := "127.0.0.1:" + strconv.Itoa(grpcA)
	subAdmin, pubAdmin, pubOut := freePort(), freePort(), freePort()
	batchSpec := ""
	if callbackBatch > 0 {
		batchSpec = fmt.Sprintf(", batch: {maxMessages: %d}", callbackBatch)
		if callbackWait != "" {
			batchSpec = fmt.Sprintf(", batch: {maxMessages: %d, maxWait: %s}", callbackBatch, callbackWait)
		}
	}
	manifest := fmt.Sprintf(`apiVersion: weft.dev/v1alpha1
kind: Subscription
metadata: {name: bench}
spec: {service: sink, topic: bench.sidecar, path: /cb, concurrency: %d%s}
`, conc, batchSpec)
	req, _ := http.NewRequest("POST", e.api+"/api/v1/apply", strings.NewReader(manifest))
	apiclient.Authorize(req) // the local token file, as the CLI
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("apply: %s", resp.Status)
	}
	if err := e.spawn(weft, "sidecar", "--control", control, "--service", "sink", "--app-port", strconv.Itoa(e.appPort),
		"--outbound", "", "--admin", "127.0.0.1:"+strconv.Itoa(subAdmin), "--otlp-endpoint", "none"); err != nil {
		return err
	}
	if err := e.spawn(weft, "sidecar", "--control", control, "--service", "source",
		"--outbound", "127.0.0.1:"+strconv.Itoa(pubOut), "--admin", "127.0.0.1:"+strconv.Itoa(pubAdmin), "--otlp-endpoint", "none"); err != nil {
		return err
	}
	e.admins = map[string]int{"subscriber": subAdmin, "publisher": pubAdmin}
	for _, a := range []int{subAdmin, pubAdmin} {
		if err := waitOK("http://127.0.0.1:" + strconv.Itoa(a) + "/ready"); err != nil {
			return err
		}
	}
	e.pubURL = "http://127.0.0.1:" + strconv.Itoa(pubOut) + "/v1/publish/bench.sidecar"
	// Warm up: the sidecars connect to the broker lazily.
	for i := 0; i < 50; i++ {
		if err := e.publishOnce(payload(16)); err != nil {
			if i == 49 {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	e.drain(5 * time.Second)
	return nil
}

// receivedBatch reads a batched callback (NDJSON, payload base64 in
// "data") as the app of a batching subscription would.
func (e *env) receivedBatch(body []byte) {
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		var l struct {
			Data []byte `json:"data"`
		}
		if json.Unmarshal(line, &l) == nil && len(l.Data) >= 8 {
			e.received <- int64(binary.BigEndian.Uint64(l.Data))
		}
	}
}

var hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1024}}

func payload(size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
	return b
}

// split pairs each message's publish answer with its callback in the
// latency run, to tell the publish side of the latency from the delivery
// side: whichever comes second records 200 → callback.
type splitter struct {
	sync.Mutex
	on      bool
	ack, cb map[int64]time.Time // one side seen, not yet the other
	d       []time.Duration
}

var split splitter

func (s *splitter) start() {
	s.Lock()
	s.on, s.ack, s.cb, s.d = true, map[int64]time.Time{}, map[int64]time.Time{}, nil
	s.Unlock()
}

func (s *splitter) stop() []time.Duration {
	s.Lock()
	defer s.Unlock()
	s.on = false
	return s.d
}

func (s *splitter) mark(ts int64, ack bool, now time.Time) {
	s.Lock()
	defer s.Unlock()
	if !s.on {
		return
	}
	mine, other := s.cb, s.ack
	if ack {
		mine, other = s.ack, s.cb
	}
	t, ok := other[ts]
	if !ok {
		mine[ts] = now
		return
	}
	delete(other, ts)
	if ack { // the callback came first
		s.d = append(s.d, 0)
		return
	}
	s.d = append(s.d, now.Sub(t))
}

var pubLat = struct {
	sync.Mutex
	d []time.Duration
}{}

// keys > 0 makes every publish carry one of that many ordering keys, so
// deliveries go through the partitions (one holder each) and per-key order.
var (
	keys   int
	keySeq atomic.Uint64
)

func (e *env) publishOnce(body []byte) error {
	t0 := time.Now()
	defer func() { pubLat.Lock(); pubLat.d = append(pubLat.d, time.Since(t0)); pubLat.Unlock() }()
	req, err := http.NewRequest(http.MethodPost, e.pubURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if keys > 0 {
		req.Header.Set("X-Weft-Key", "key-"+strconv.FormatUint(keySeq.Add(1)%uint64(keys), 10))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return errors.New(resp.Status)
	}
	if len(body) >= 8 {
		split.mark(int64(binary.BigEndian.Uint64(body)), true, time.Now())
	}
	return nil
}

// publishBatch publishes n messages in one request to the batch endpoint;
// every line carries its own publish timestamp, as publishOnce's body does.
func (e *env) publishBatch(size, n int) error {
	t0 := time.Now()
	var b bytes.Buffer
	for range n {
		b.WriteString(`{"data":"`)
		b.WriteString(base64.StdEncoding.EncodeToString(payload(size)))
		b.WriteByte('"')
		if keys > 0 {
			b.WriteString(`,"key":"key-` + strconv.FormatUint(keySeq.Add(1)%uint64(keys), 10) + `"`)
		}
		b.WriteString("}\n")
	}
	resp, err := hc.Post(strings.Replace(e.pubURL, "/v1/publish/", "/v1/publish-batch/", 1), "application/x-ndjson", &b)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	pubLat.Lock()
	pubLat.d = append(pubLat.d, time.Since(t0))
	pubLat.Unlock()
	if resp.StatusCode != 200 {
		return errors.New(resp.Status)
	}
	return nil
}

// drain empties received until nothing arrives for quiet.
func (e *env) drain(quiet time.Duration) {
	for {
		select {
		case <-e.received:
		case <-time.After(quiet):
			return
		}
	}
}

// load publishes with fn: open loop at rate (rate > 0) or closed loop with
// conc publishers, for dur; it returns how many were published.
func load(rate int, dur time.Duration, conc int, fn func() error) (int64, error) {
	return loadN(rate, dur, conc, 1, fn)
}

// loadN is load where every call of fn publishes per messages.
func loadN(rate int, dur time.Duration, conc, per int, fn func() error) (int64, error) {
	var n atomic.Int64
	var firstErr atomic.Pointer[error]
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	if rate > 0 {
		// Open loop: a ticker hands out sends; 64 workers bound in-flight.
		work := make(chan struct{}, 1024)
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range work {
					if err := fn(); err != nil {
						firstErr.CompareAndSwap(nil, &err)
						continue
					}
					n.Add(int64(per))
				}
			}()
		}
		interval := time.Second / time.Duration(rate)
		next := time.Now()
	loop:
		for {
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			select {
			case <-ctx.Done():
				break loop
			case work <- struct{}{}:
			default: // behind: count it as not sent
			}
		}
		close(work)
	} else {
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if err := fn(); err != nil {
						firstErr.CompareAndSwap(nil, &err)
						return
					}
					n.Add(int64(per))
				}
			}()
		}
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return n.Load(), *p
	}
	return n.Load(), nil
}

// collect gathers latencies of want messages (or until quiet).
func (e *env) collect(want int64, start time.Time) ([]time.Duration, time.Time) {
	lat := make([]time.Duration, 0, max(want, 0))
	last := start
	for int64(len(lat)) < want {
		select {
		case ts := <-e.received:
			now := time.Now()
			lat = append(lat, now.Sub(time.Unix(0, ts)))
			split.mark(ts, false, now)
			last = now
		case <-time.After(10 * time.Second):
			return lat, last
		}
	}
	return lat, last
}

func (e *env) viaSidecars(rate int, dur time.Duration, size, conc int, max bool) (result, error) {
	name := fmt.Sprintf("sidecars, %d msg/s", rate)
	if max {
		name = fmt.Sprintf("sidecars, max (%d publishers)", conc)
		if batch > 1 {
			name = fmt.Sprintf("sidecars, max (%d pub. × %d/batch)", conc, batch)
		}
	}
	fmt.Fprintf(os.Stderr, "running: %s for %s…\n", name, dur)
	cpu0 := e.cpuTimes()
	start := time.Now()
	var lat []time.Duration
	var last time.Time
	done := make(chan struct{})
	var sent int64
	var err error
	go func() {
		defer close(done)
		if max && batch > 1 {
			sent, err = loadN(rate, dur, conc, batch, func() error { return e.publishBatch(size, batch) })
			return
		}
		sent, err = load(rate, dur, conc, func() error { return e.publishOnce(payload(size)) })
	}()
	if max && profileDir != "" {
		for name, port := range e.admins {
			go func() {
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, int(dur.Seconds())-1))
				if err != nil {
					return
				}
				defer resp.Body.Close()
				f, _ := os.Create(filepath.Join(profileDir, name+".pprof"))
				io.Copy(f, resp.Body)
				f.Close()
			}()
		}
	}
	// Collect while publishing, then the stragglers.
	lat, last = e.collectUntil(done)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	more, l2 := e.collect(sent-int64(len(lat)), last)
	lat = append(lat, more...)
	if len(more) > 0 {
		last = l2
	}
	r := result{name: name, lat: lat, lost: int(sent) - len(lat), pub: float64(sent) / dur.Seconds()}
	r.rate = float64(len(lat)) / last.Sub(start).Seconds()
	r.cpu = cpuNote(cpu0, e.cpuTimes(), len(lat), true)
	return r, nil
}

func (e *env) collectUntil(done <-chan struct{}) ([]time.Duration, time.Time) {
	var lat []time.Duration
	var last time.Time
	for {
		select {
		case ts := <-e.received:
			last = time.Now()
			lat = append(lat, last.Sub(time.Unix(0, ts)))
			split.mark(ts, false, last)
		case <-done:
			return lat, last
		}
	}
}

// direct publishes to the same broker with a JetStream client (sync
// publish, acked by the broker) on another subject of the same stream, and
// consumes with a durable pull consumer, explicit acks — what the sidecars
// do, minus HTTP and the sidecars.
func (e *env) direct(rate int, dur time.Duration, size, conc int, max bool) (result, error) {
	name := fmt.Sprintf("direct JetStream, %d msg/s", rate)
	if max {
		name = fmt.Sprintf("direct JetStream, max (%d publishers)", conc)
	}
	fmt.Fprintf(os.Stderr, "running: %s for %s…\n", name, dur)
	pubNC, err := nats.Connect(e.broker)
	if err != nil {
		return result{}, err
	}
	defer pubNC.Close()
	subNC, err := nats.Connect(e.broker)
	if err != nil {
		return result{}, err
	}
	defer subNC.Close()
	pjs, _ := jetstream.New(pubNC)
	sjs, _ := jetstream.New(subNC)
	ctx := context.Background()
	durable := "bench-direct-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	cons, err := sjs.CreateOrUpdateConsumer(ctx, "WEFT", jetstream.ConsumerConfig{Durable: durable, FilterSubject: "weft.t.bench.direct",
		AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverNewPolicy, AckWait: 10 * time.Second, MaxAckPending: 20000})
	if err != nil {
		return result{}, err
	}
	defer sjs.DeleteConsumer(ctx, "WEFT", durable)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if d := m.Data(); len(d) >= 8 {
			e.received <- int64(binary.BigEndian.Uint64(d))
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(4*conc))
	if err != nil {
		return result{}, err
	}
	defer cc.Stop()
	cpu0 := e.cpuTimes()
	start := time.Now()
	done := make(chan struct{})
	var sent int64
	go func() {
		defer close(done)
		sent, err = load(rate, dur, conc, func() error {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := pjs.Publish(pctx, "weft.t.bench.direct", payload(size))
			return err
		})
	}()
	lat, last := e.collectUntil(done)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	more, l2 := e.collect(sent-int64(len(lat)), last)
	lat = append(lat, more...)
	if len(more) > 0 {
		last = l2
	}
	r := result{name: name, lat: lat, lost: int(sent) - len(lat), pub: float64(sent) / dur.Seconds()}
	r.rate = float64(len(lat)) / last.Sub(start).Seconds()
	r.cpu = cpuNote(cpu0, e.cpuTimes(), len(lat), false)
	return r, nil
}
