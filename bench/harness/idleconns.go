package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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
func IdleConns(ctx context.Context, target Target, hops []*Proc, metrics []string, counts []int, settle time.Duration) ([]IdleMem, error) {
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
