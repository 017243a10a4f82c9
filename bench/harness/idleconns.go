package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// IdleMem is what the proxies hold with Conns idle kept-alive client
// connections open.
type IdleMem struct {
	Conns int
	// AfterGC: the reading was taken after two garbage collections forced
	// in each weft hop (through /debug/pprof/heap?gc=1 on its admin
	// address), which shrink idle goroutines' stacks.
	AfterGC bool
	// Hops are the proxies' memory, in request order.
	Hops []Mem
	// HeapInuse and StackInuse are each hop's Go runtime figures from its
	// /metrics (go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes);
	// -1 where the hop has no metrics address.
	HeapInuse, StackInuse []int64
}

// IdleConns opens client connections to target in steps up to each of
// counts (ascending), sends one GET on each new connection and reads its
// answer, leaves them all idle for settle, and records the hops' memory
// then, and once more at the last count after forcing two collections in
// each hop with a metrics address. metrics are the hops' /metrics URLs ("" where there is none). The
// connections are closed before it returns.
//
// With profileDir set, each weft hop's heap profile at the last count goes
// there as <hop name>.heap.pb.gz (go tool pprof -sample_index=inuse_space).
func IdleConns(ctx context.Context, target Target, hops []*Proc, metrics []string, counts []int, settle time.Duration, profileDir string) ([]IdleMem, error) {
	host := target.Host
	if host == "" {
		host = target.Addr
	}
	path := target.Path
	if path == "" {
		path = "/"
	}
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	br := bufio.NewReaderSize(nil, 4096)
	var out []IdleMem
	for _, n := range counts {
		for len(conns) < n {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			c, err := net.DialTimeout("tcp", target.Addr, 5*time.Second)
			if err != nil {
				return out, fmt.Errorf("connection %d: %w", len(conns)+1, err)
			}
			conns = append(conns, c)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(req); err != nil {
				return out, fmt.Errorf("connection %d: writing request: %w", len(conns), err)
			}
			br.Reset(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return out, fmt.Errorf("connection %d: reading response: %w", len(conns), err)
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || resp.Close {
				return out, fmt.Errorf("connection %d: status %d, close %v, body %v", len(conns), resp.StatusCode, resp.Close, err)
			}
			c.SetDeadline(time.Time{})
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(settle):
		}
		m, err := readIdleMem(ctx, n, hops, metrics)
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
	if profileDir != "" {
		for i, u := range metrics {
			if u == "" || i >= len(hops) {
				continue
			}
			f, err := os.Create(filepath.Join(profileDir, hops[i].Name+".heap.pb.gz"))
			if err != nil {
				return out, err
			}
			err = get(ctx, strings.TrimSuffix(u, "/metrics")+"/debug/pprof/heap", f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return out, fmt.Errorf("heap profile: %w", err)
			}
		}
	}
	gced := false
	for _, u := range metrics {
		if u == "" {
			continue
		}
		gc := strings.TrimSuffix(u, "/metrics") + "/debug/pprof/heap?gc=1"
		for range 2 {
			if err := get(ctx, gc, io.Discard); err != nil {
				return out, fmt.Errorf("forcing a collection: %w", err)
			}
		}
		gced = true
	}
	if gced && len(counts) > 0 {
		time.Sleep(settle)
		m, err := readIdleMem(ctx, counts[len(counts)-1], hops, metrics)
		if err != nil {
			return out, err
		}
		m.AfterGC = true
		out = append(out, m)
	}
	return out, nil
}

func readIdleMem(ctx context.Context, n int, hops []*Proc, metrics []string) (IdleMem, error) {
	{
		m := IdleMem{Conns: n}
		for i, p := range hops {
			mem, err := ReadMem(p.PID())
			if err != nil {
				return m, fmt.Errorf("%s: %w", p.Name, err)
			}
			m.Hops = append(m.Hops, mem)
			heap, stack := int64(-1), int64(-1)
			if i < len(metrics) && metrics[i] != "" {
				heap, stack = goMem(ctx, metrics[i])
			}
			m.HeapInuse = append(m.HeapInuse, heap)
			m.StackInuse = append(m.StackInuse, stack)
		}
		return m, nil
	}
}

// get fetches url into w, failing on a status other than 200.
func get(ctx context.Context, url string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// goMem reads heap and stack in use from a Prometheus text page; -1 for
// what it cannot read.
func goMem(ctx context.Context, url string) (heap, stack int64) {
	heap, stack = -1, -1
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			heap = int64(f)
		case "go_memstats_stack_inuse_bytes":
			stack = int64(f)
		}
	}
	return
}

// IdleRow is one reading of IdleConns in the report.
type IdleRow struct {
	Path    string  `json:"path"`
	Conns   int     `json:"conns"`
	AfterGC bool    `json:"after_gc,omitempty"`
	HopRSS  []int64 `json:"hop_rss_bytes"`
	HopAnon []int64 `json:"hop_rss_anon_bytes"`
	// Go runtime figures per hop, -1 where unknown (not a Go process).
	HopHeapInuse  []int64 `json:"hop_heap_inuse_bytes"`
	HopStackInuse []int64 `json:"hop_stack_inuse_bytes"`
}

// idleSettle is how long the connections sit idle before each reading:
// over proxy/h1's parkAfter (1 s), after which an idle connection waits on
// a fresh goroutine's minimal stack.
const idleSettle = 2 * time.Second

// idlePath starts path afresh and reads its hops' memory with
// cfg.IdleConns idle connections open.
func idlePath(ctx context.Context, cfg Config, env *Env, path string) ([]IdleRow, error) {
	topo, err := StartPath(ctx, path, env, 0)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	defer topo.Stop(env.Starter)
	res, err := IdleConns(ctx, topo.Target, topo.Hops, topo.Metrics, cfg.IdleConns, idleSettle, "")
	var rows []IdleRow
	for _, m := range res {
		r := IdleRow{Path: path, Conns: m.Conns, AfterGC: m.AfterGC, HopHeapInuse: m.HeapInuse, HopStackInuse: m.StackInuse}
		for _, h := range m.Hops {
			r.HopRSS = append(r.HopRSS, h.RSS)
			r.HopAnon = append(r.HopAnon, h.Anon)
		}
		rows = append(rows, r)
		fmt.Fprintf(cfg.Log, "idle     %-8s %5d conns%s  RSS MiB per hop %s\n", path, m.Conns, map[bool]string{true: " (after 2 GCs)"}[m.AfterGC], mibList(r.HopRSS))
	}
	return rows, err
}

func mibList(b []int64) string {
	var parts []string
	for _, v := range b {
		parts = append(parts, fmt.Sprintf("%.1f", mib(v)))
	}
	return strings.Join(parts, " / ")
}

// writeIdle writes the idle-connections table: each hop's RSS, and its
// growth over the first count's, also of RssAnon alone (heap and stacks;
// RSS also moves with the executable's pages the sidecar touches and
// trims, which is not per connection).
func writeIdle(w io.Writer, rows []IdleRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "### Idle kept-alive client connections (one GET each, then %v idle; path started afresh)\n\n", idleSettle)
	fmt.Fprintln(w, "| path | conns | RSS MiB per hop | Δ RSS MiB per hop | Δ RssAnon MiB per hop | Go heap + stacks MiB per hop |")
	fmt.Fprintln(w, "|---|---:|---|---|---|---|")
	first := map[string]IdleRow{}
	for _, r := range rows {
		f, ok := first[r.Path]
		if !ok {
			first[r.Path], f = r, r
		}
		var delta, anon, gomem []string
		for i, v := range r.HopRSS {
			if i < len(f.HopRSS) {
				delta = append(delta, fmt.Sprintf("%+.1f", mib(v-f.HopRSS[i])))
			}
			if i < len(f.HopAnon) && i < len(r.HopAnon) {
				anon = append(anon, fmt.Sprintf("%+.1f", mib(r.HopAnon[i]-f.HopAnon[i])))
			}
			if i < len(r.HopHeapInuse) && r.HopHeapInuse[i] >= 0 && r.HopStackInuse[i] >= 0 {
				gomem = append(gomem, fmt.Sprintf("%.1f", mib(r.HopHeapInuse[i]+r.HopStackInuse[i])))
			} else {
				gomem = append(gomem, "–")
			}
		}
		conns := strconv.Itoa(r.Conns)
		if r.AfterGC {
			conns += " (after 2 GCs)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.Path, conns, mibList(r.HopRSS), strings.Join(delta, " / "), strings.Join(anon, " / "), strings.Join(gomem, " / "))
	}
	fmt.Fprintln(w)
}
