// Command push measures the control plane's fan-out: how long a
// registration takes to reach every sidecar subscribed to the service, with
// many sidecars connected, and what the control plane holds in memory for
// them.
//
// It starts a real `weft control` (no broker, no tracing), then opens
// -sidecars simulated sidecars: each is a gRPC stream on the real discovery
// API (api/discoveryv1), over its own HTTP/2 connection as a real sidecar's
// is, registering an instance of its own and subscribing to one service,
// "target", and sending a heartbeat every second like a real sidecar. Then
// it registers and deregisters instances of "target", one event at a time,
// and times each from the Register (or Deregister) being sent to the last
// subscriber having received the update that carries it.
//
//	go run ./bench/push -sidecars 1000
//	go run ./bench/push -sidecars 5000 -events 40
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/weftmesh/weft/api/discoveryv1"
)

const target = "target"

func main() {
	weft := flag.String("weft", "bin/weft", "the weft binary (built from ./cmd/weft into a temporary directory when missing)")
	n := flag.Int("sidecars", 1000, "simulated sidecars subscribed to the target service")
	events := flag.Int("events", 40, "registrations and deregistrations of target instances (half each), one at a time")
	perConn := flag.Int("streams-per-conn", 1, "discovery streams sharing one HTTP/2 connection (1: one connection per sidecar, as in a real mesh)")
	gap := flag.Duration("gap", 200*time.Millisecond, "pause between events")
	flag.Parse()
	if err := run(*weft, *n, *events, max(1, *perConn), *gap); err != nil {
		fmt.Fprintln(os.Stderr, "bench/push:", err)
		os.Exit(1)
	}
}

// sim is one simulated sidecar's stream.
type sim struct {
	stream pb.Discovery_ConnectClient
	mu     sync.Mutex // Send is not safe for concurrent use
}

func (s *sim) send(m *pb.SidecarMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

// event is one registration or deregistration being waited for.
type event struct {
	key     string // "+id" or "-id"
	sent    time.Time
	left    atomic.Int64 // subscribers that have not seen it yet
	done    chan struct{}
	lastNs  atomic.Int64 // latest arrival, ns after sent
	arrived []int64      // per-subscriber arrival, ns after sent (index: sim)
}

type bench struct {
	n      int
	cur    atomic.Pointer[event]
	synced atomic.Int64 // sims that got their first update of target
	cut    atomic.Int64 // streams the control plane ended
}

// seen is called by sim i's reader for every instance id an update of
// target adds ("+id") or removes ("-id").
func (b *bench) seen(i int, key string, now time.Time) {
	ev := b.cur.Load()
	if ev == nil || ev.key != key {
		return
	}
	d := now.Sub(ev.sent).Nanoseconds()
	if !atomic.CompareAndSwapInt64(&ev.arrived[i], -1, d) {
		return // seen twice (a reset after a resync)
	}
	for {
		old := ev.lastNs.Load()
		if d <= old || ev.lastNs.CompareAndSwap(old, d) {
			break
		}
	}
	if ev.left.Add(-1) == 0 {
		close(ev.done)
	}
}

func run(weft string, n, events, perConn int, gap time.Duration) error {
	dir, err := os.MkdirTemp("", "weft-bench-push-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if _, err := os.Stat(weft); err != nil {
		weft = filepath.Join(dir, "weft")
		fmt.Fprintln(os.Stderr, "building ./cmd/weft …")
		if out, err := exec.Command("go", "build", "-o", weft, "github.com/weftmesh/weft/cmd/weft").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/weft: %w\n%s", err, out)
		}
	}
	grpcA, httpA := freePort(), freePort()
	logf, err := os.Create(filepath.Join(dir, "control.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	// The lease is longer than a real mesh's (5s) so that a bench process
	// starved of CPU on a shared machine does not lose its sidecars; the
	// heartbeats are sent every second all the same.
	cmd := exec.Command(weft, "control", "--data-dir", filepath.Join(dir, "cp"),
		"--grpc-addr", "127.0.0.1:"+strconv.Itoa(grpcA), "--http-addr", "127.0.0.1:"+strconv.Itoa(httpA),
		"--broker", "off", "--otlp-endpoint", "none", "--sync-grace", "0s", "--lease-ttl", "30s",
		// The simulated sidecars register without certificates, which a
		// strict mesh (the default) refuses; this measures pushes, not mTLS.
		"--mtls", "permissive")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	if err := waitOK("http://127.0.0.1:" + strconv.Itoa(httpA) + "/healthz"); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	addr := "127.0.0.1:" + strconv.Itoa(grpcA)
	rssIdle := rssMiB(pid)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{n: n}

	// Connect the sidecars, 64 at a time.
	fmt.Fprintf(os.Stderr, "connecting %d sidecars …\n", n)
	began := time.Now()
	sims := make([]*sim, n)
	conns := make([]*grpc.ClientConn, (n+perConn-1)/perConn)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		if conns[i], err = dial(addr); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := b.connect(ctx, conns[i/perConn], i)
			if err != nil {
				select {
				case errc <- fmt.Errorf("sidecar %d: %w", i, err):
				default:
				}
				return
			}
			sims[i] = s
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	go heartbeats(ctx, sims)
	if err := waitFor(60*time.Second, func() bool { return b.synced.Load() == int64(n) }); err != nil {
		return fmt.Errorf("%d of %d sidecars got the target's first update: %w", b.synced.Load(), n, err)
	}
	connectTook := time.Since(began)
	time.Sleep(time.Second) // let the connect burst's garbage be collected
	rssConnected := rssMiB(pid)

	// Sample the control plane's RSS while the events run.
	var peak atomic.Int64
	peak.Store(int64(rssConnected * 1024))
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				if kib := int64(rssMiB(pid) * 1024); kib > peak.Load() {
					peak.Store(kib)
				}
			}
		}
	}()

	fmt.Fprintf(os.Stderr, "connected in %s; %d events …\n", connectTook.Round(time.Millisecond), events)
	mover, err := dial(addr)
	if err != nil {
		return err
	}
	defer mover.Close()
	// The heartbeats alone, for a baseline of the control plane's CPU.
	hb0 := cpuSeconds(pid)
	time.Sleep(2 * time.Second)
	hbPerSec := (cpuSeconds(pid) - hb0) / 2
	cpu1, self1, t1 := cpuSeconds(pid), cpuSeconds(os.Getpid()), time.Now()
	var all []time.Duration  // per event: registration → last subscriber
	var each []time.Duration // per event and subscriber
	var regs []*moverStream
	for k := range events {
		var ev *event
		if k%2 == 0 {
			m, err := openMover(ctx, mover)
			if err != nil {
				return err
			}
			regs = append(regs, m)
			id := fmt.Sprintf("target-%d", k/2)
			ev = b.begin("+" + id)
			err = m.stream.Send(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Register{Register: &pb.Register{Instance: &pb.Instance{
				Id: id, Service: target, Address: fmt.Sprintf("127.0.0.1:%d", 20000+k/2), Ready: true}}}})
			if err != nil {
				return fmt.Errorf("register %s: %w", id, err)
			}
		} else {
			m := regs[len(regs)-1]
			ev = b.begin("-" + fmt.Sprintf("target-%d", k/2))
			if err := m.stream.Send(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Deregister{Deregister: &pb.Deregister{}}}); err != nil {
				return fmt.Errorf("deregister: %w", err)
			}
		}
		select {
		case <-ev.done:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("event %s: %d of %d sidecars had not seen it after 30s (%d streams cut by the control plane)", ev.key, ev.left.Load(), n, b.cut.Load())
		}
		all = append(all, time.Duration(ev.lastNs.Load()))
		for _, d := range ev.arrived {
			each = append(each, time.Duration(d))
		}
		time.Sleep(gap)
	}
	cpuEvents, selfEvents, took := cpuSeconds(pid)-cpu1, cpuSeconds(os.Getpid())-self1, time.Since(t1).Seconds()
	stopSampling()
	for _, m := range regs {
		m.cancel()
	}

	la := loadavg()
	fmt.Printf("Weft control plane push: %d sidecars (%d per HTTP/2 connection), %d events, %d CPUs; load average %s\n\n",
		n, perConn, events, numCPU(), la)
	fmt.Println("| sidecars | events | all seen p50 | all seen p99 | all seen max | per sidecar p50 | per sidecar p99 | control RSS MiB idle / connected / peak | control CPU ms per event | control CPU heartbeats only | this bench's CPU while events ran | connect all | streams cut |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %d | %s | %s | %s | %s | %s | %.1f / %.1f / %.1f | %.1f | %.2f cores | %.2f cores | %s | %d |\n",
		n, events, ms(pct(all, 50)), ms(pct(all, 99)), ms(pct(all, 100)), ms(pct(each, 50)), ms(pct(each, 99)),
		rssIdle, rssConnected, float64(peak.Load())/1024, 1000*cpuEvents/float64(events), hbPerSec, selfEvents/took, connectTook.Round(time.Millisecond), b.cut.Load())
	fmt.Println("\nall seen: from the Register/Deregister being sent to the last subscribed sidecar receiving the update;")
	fmt.Println("per sidecar: the same, to each one. Control CPU: utime+stime of weft control during the events (heartbeats included).")
	fmt.Println("heartbeats only: its CPU over 2 s before the events, while every sidecar sends one heartbeat per second.")
	return nil
}

func (b *bench) begin(key string) *event {
	ev := &event{key: key, sent: time.Now(), done: make(chan struct{}), arrived: make([]int64, b.n)}
	for i := range ev.arrived {
		ev.arrived[i] = -1
	}
	ev.left.Store(int64(b.n))
	b.cur.Store(ev)
	return ev
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
}

// connect opens sim i's stream, registers its instance, subscribes to the
// target and reads what the control plane pushes until the stream ends.
func (b *bench) connect(ctx context.Context, cc *grpc.ClientConn, i int) (*sim, error) {
	st, err := pb.NewDiscoveryClient(cc).Connect(ctx)
	if err != nil {
		return nil, err
	}
	s := &sim{stream: st}
	id := "sim-" + strconv.Itoa(i)
	if err := s.send(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Register{Register: &pb.Register{Instance: &pb.Instance{
		Id: id, Service: "sim", Address: "127.0.0.1:1", Ready: true}}}}); err != nil {
		return nil, err
	}
	if err := s.send(&pb.SidecarMessage{Msg: &pb.SidecarMessage_Subscribe{Subscribe: &pb.Subscribe{Services: []string{target}}}}); err != nil {
		return nil, err
	}
	go func() {
		first := true
		for {
			m, err := st.Recv()
			if err != nil {
				if ctx.Err() == nil {
					b.cut.Add(1)
				}
				return
			}
			u := m.GetUpdate()
			if u == nil || u.Service != target {
				continue
			}
			now := time.Now()
			if first {
				first = false
				b.synced.Add(1)
			}
			for _, in := range u.Upserts {
				b.seen(i, "+"+in.Id, now)
			}
			for _, id := range u.Removes {
				b.seen(i, "-"+id, now)
			}
		}
	}()
	return s, nil
}

// heartbeats renews every sim's lease each second, as a sidecar does.
func heartbeats(ctx context.Context, sims []*sim) {
	hb := &pb.SidecarMessage{Msg: &pb.SidecarMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, s := range sims {
				_ = s.send(hb)
			}
		}
	}
}

// moverStream registers one target instance and deregisters it.
type moverStream struct {
	stream pb.Discovery_ConnectClient
	cancel context.CancelFunc
}

func openMover(ctx context.Context, cc *grpc.ClientConn) (*moverStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := pb.NewDiscoveryClient(cc).Connect(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	go func() { // drain: the hello and the ack of the deregistration
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	return &moverStream{stream: st, cancel: cancel}, nil
}

func pct(d []time.Duration, q int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*q/100]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kib, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kib / 1024
		}
	}
	return 0
}

// cpuSeconds is utime+stime of pid, from /proc/<pid>/stat (clock ticks of
// 1/100 s).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func numCPU() int {
	out, _ := exec.Command("nproc").Output()
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitOK(url string) error {
	return waitFor(20*time.Second, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return errors.New("timed out after " + d.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
