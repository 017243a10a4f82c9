// Package demo runs a whole mesh on one machine (`weft demo`): an embedded
// control plane and, for each demo service instance, a real `weft run` unit
// (sidecar + app processes) on loopback, with steady traffic and a live
// per-instance request count that shows the balancing.
package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/sidecar"
)

// Config configures the demo.
type Config struct {
	Binary   string // the weft binary to start units with (os.Executable)
	HTTPAddr string
	GRPCAddr string
	DataDir  string // "" : a fresh temporary directory
	Duration time.Duration
	Rate     float64
	Out      io.Writer
	Logger   *slog.Logger
}

type unit struct {
	service, role string
	args          []string
	admin         string
	cmd           *exec.Cmd
	done          chan struct{}
	last          int64
}

// The demo mesh: loadgen → frontend → orders ×3 → inventory ×2, and
// orders publish order.created, which notifier ×2 receive (one instance
// per message).
var topology = []struct {
	service string
	n       int
	flags   []string
}{{"inventory", 2, nil}, {"orders", 3, nil}, {"notifier", 2, []string{"--subscribe", "order.created=/events/order-created"}},
	{"frontend", 1, nil}, {"loadgen", 1, nil}}

// Run runs the demo until ctx is done or the duration passes.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "weft-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.DataDir = dir
	}
	logDir := filepath.Join(cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	// The control plane's log goes to a file: the terminal shows the mesh.
	cpLog, err := os.Create(filepath.Join(logDir, "control.log"))
	if err != nil {
		return err
	}
	defer cpLog.Close()
	cp, err := control.New(control.Config{GRPCAddr: cfg.GRPCAddr, HTTPAddr: cfg.HTTPAddr, DataDir: filepath.Join(cfg.DataDir, "control"),
		Logger: slog.New(slog.NewTextHandler(cpLog, nil)).With("component", "control"), SyncGrace: time.Millisecond,
		// Stats a few seconds after start; every sidecar exports its spans
		// to this control plane (the Hello's otlp_endpoint).
		ScrapeInterval: 2 * time.Second,
		// As weft control: apps cannot dial the embedded broker directly.
		Security: control.SecurityConfig{BrokerAuth: true}})
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	cpCtx, stopCP := context.WithCancel(context.Background())
	cpDone := make(chan error, 1)
	go func() { cpDone <- cp.Run(cpCtx) }()
	defer func() { stopCP(); <-cpDone }()

	policy := filepath.Join(cfg.DataDir, "orders-consistent-hash.yaml")
	if err := os.WriteFile(policy, []byte(examplePolicy), 0o644); err != nil {
		return err
	}

	var units []*unit
	defer func() { stopUnits(units, cfg.Out) }()
	for _, t := range topology {
		for i := 1; i <= t.n; i++ {
			ports, err := freePorts(3)
			if err != nil {
				return err
			}
			u := &unit{service: t.service, admin: "127.0.0.1:" + strconv.Itoa(ports[1]), done: make(chan struct{})}
			u.args = []string{"run", "--control", cp.GRPCAddr(), "--service", t.service,
				"--id", fmt.Sprintf("%s-%d", t.service, i), "--version", "v1", "--label", "demo=true",
				"--outbound", "127.0.0.1:" + strconv.Itoa(ports[0]), "--admin", u.admin,
				"--app-port", strconv.Itoa(ports[2]), "--trace-sampling", "1"}
			u.args = append(u.args, t.flags...)
			u.args = append(u.args, "--", cfg.Binary, "demo-app", "--role", t.service, "--rate", strconv.FormatFloat(cfg.Rate, 'f', -1, 64))
			if err := u.start(cfg.Binary, logDir); err != nil {
				return err
			}
			units = append(units, u)
		}
	}
	fmt.Fprintf(cfg.Out, `Weft demo: a control plane and %d instances, each a real sidecar + app pair.

  loadgen ─▶ frontend ─▶ orders ×3 ─▶ inventory ×2      (%.0f requests/s)
                           └─ publish order.created ─▶ notifier ×2   (messaging)

  control plane API  http://%s   (gRPC %s)
  see the registry   weft get services --server http://%s
  switch balancing   weft apply -f %s --server http://%s
                     (orders' SHARE column then follows the users: each sticks to one instance)
  live metrics       weft stat --server http://%s      (or weft top)
  traces             weft traces --server http://%s, then weft trace ID
  topics             weft topics --server http://%s      (weft dlq list order.created)
  logs               %s
  stop               Ctrl-C

`, len(units), cfg.Rate, cp.HTTPAddr(), cp.GRPCAddr(), cp.HTTPAddr(), policy, cp.HTTPAddr(), cp.HTTPAddr(), cp.HTTPAddr(), cp.HTTPAddr(), logDir)

	var deadline <-chan time.Time
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(cfg.Out, "\nstopping the demo…")
			return nil
		case <-deadline:
			report(cfg.Out, units, 0, balancing(cp))
			fmt.Fprintln(cfg.Out, "\ndemo duration reached; stopping…")
			return nil
		case <-tick.C:
			for _, u := range units {
				select {
				case <-u.done:
					return fmt.Errorf("instance %s exited unexpectedly; see %s", u.admin, logDir)
				default:
				}
			}
			report(cfg.Out, units, 2*time.Second, balancing(cp))
		}
	}
}

const examplePolicy = `apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: orders
spec:
  service: orders
  loadBalancer:
    algorithm: consistent_hash     # round_robin | random | modulo | consistent_hash | least_request
    hashKey: header:x-user-id      # each user sticks to one orders instance
`

func (u *unit) start(bin, logDir string) error {
	name := filepath.Join(logDir, fmt.Sprintf("%s-%s.log", u.service, u.admin[len("127.0.0.1:"):]))
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	u.cmd = exec.Command(bin, u.args...)
	u.cmd.Stdout, u.cmd.Stderr = f, f
	// Own process group, and killed with the demo if it dies.
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := u.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", u.service, err)
	}
	go func() {
		_ = u.cmd.Wait()
		f.Close()
		close(u.done)
	}()
	return nil
}

// stopUnits sends SIGTERM to every unit (each drains and stops its app) and
// waits, killing stragglers.
func stopUnits(units []*unit, out io.Writer) {
	for _, u := range units {
		_ = u.cmd.Process.Signal(syscall.SIGTERM)
	}
	var wg sync.WaitGroup
	for _, u := range units {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-u.done:
			case <-time.After(15 * time.Second):
				_ = syscall.Kill(-u.cmd.Process.Pid, syscall.SIGKILL)
				<-u.done
			}
		}()
	}
	wg.Wait()
	fmt.Fprintf(out, "stopped %d instances\n", len(units))
}

// balancing is how callers balance over each service, as the control
// plane's applied TrafficPolicies say: "round_robin" when none does.
func balancing(cp *control.Server) map[string]string {
	out := map[string]string{}
	for _, s := range cp.Registry().Services() {
		for _, o := range s.Config {
			if o.Kind != "TrafficPolicy" {
				continue
			}
			var spec struct {
				LoadBalancer struct {
					Algorithm string `json:"algorithm"`
					HashKey   string `json:"hashKey"`
				} `json:"loadBalancer"`
			}
			if json.Unmarshal(o.SpecJson, &spec) == nil && spec.LoadBalancer.Algorithm != "" {
				out[s.Name] = spec.LoadBalancer.Algorithm
				if spec.LoadBalancer.HashKey != "" {
					out[s.Name] += " by " + spec.LoadBalancer.HashKey
				}
			}
		}
	}
	return out
}

// report prints one line per instance: its requests, its rate over the
// last interval and its SHARE of its service's requests in that interval,
// under the balancing its callers use — so a `weft apply` of another
// algorithm shows in the next lines (round_robin: even shares; a hash:
// shares follow the keys).
func report(out io.Writer, units []*unit, every time.Duration, lb map[string]string) {
	hc := &http.Client{Timeout: time.Second}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tSERVICE\tINSTANCE\tREQUESTS\tREQ/S\tSHARE\tSTATE\tBALANCING\n", time.Now().Format("15:04:05"))
	type line struct {
		n, rate, state string
		delta          int64
	}
	lines := make([]line, len(units))
	total := map[string]int64{}
	for i, u := range units {
		st, err := stats(hc, u.admin)
		state := "ready"
		if err != nil {
			state = "unreachable"
		}
		count, n := st.InboundRequests, strconv.FormatInt(st.InboundRequests, 10)
		if u.service == "loadgen" {
			count, n = st.OutboundRequests, strconv.FormatInt(st.OutboundRequests, 10)+" sent"
		}
		if u.service == "notifier" {
			// Deliveries do not pass the inbound proxy: count the acks.
			acked := ackedMessages(hc, u.admin)
			count, n = acked, strconv.FormatInt(acked, 10)+" events"
		}
		rate := "-"
		if every > 0 && err == nil {
			rate = strconv.FormatFloat(float64(count-u.last)/every.Seconds(), 'f', 1, 64)
		}
		lines[i] = line{n: n, rate: rate, state: state, delta: count - u.last}
		total[u.service] += count - u.last
		u.last = count
	}
	for i, u := range units {
		l := lines[i]
		share := "-"
		if t := total[u.service]; every > 0 && t > 0 && u.service != "loadgen" {
			share = strconv.FormatFloat(100*float64(l.delta)/float64(t), 'f', 0, 64) + "%"
		}
		algo := "-"
		if u.service != "loadgen" && u.service != "notifier" { // notifier: messages go by partition
			algo = lb[u.service]
			if algo == "" {
				algo = "round_robin"
			}
		}
		fmt.Fprintf(tw, "\t%s\t%s-%d\t%s\t%s\t%s\t%s\t%s\n", u.service, u.service, instanceNo(units, i), l.n, l.rate, share, l.state, algo)
	}
	tw.Flush()
	fmt.Fprintln(out)
}

func instanceNo(units []*unit, i int) int {
	n := 0
	for j := 0; j <= i; j++ {
		if units[j].service == units[i].service {
			n++
		}
	}
	return n
}

func stats(hc *http.Client, admin string) (sidecar.StatsView, error) {
	var v sidecar.StatsView
	resp, err := hc.Get("http://" + admin + "/stats")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, errors.New(resp.Status)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ackedMessages reads weft_messages_delivered_total{result="ack"} from a
// sidecar's /metrics (0 if unreachable).
func ackedMessages(hc *http.Client, admin string) int64 {
	resp, err := hc.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var total float64
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "weft_messages_delivered_total{") || !strings.Contains(line, `result="ack"`) {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				total += v
			}
		}
	}
	return int64(total)
}
