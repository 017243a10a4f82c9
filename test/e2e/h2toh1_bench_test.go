package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procCPU is a process's user+system CPU time (/proc, clock ticks of 10 ms).
func procCPU(tb testing.TB, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

// BenchmarkH2ToHTTP1Pair: small h2c POSTs (100 bytes) from 8 parallel
// callers through a client sidecar and a server sidecar to an
// HTTP/1.1-only app; server-µs/req is the server sidecar's CPU per
// request (where h2 becomes HTTP/1.1), client-µs/req the client's. Compare
// binaries in one locked run:
//
//	flock /work/wt/bench.lock timeout 150 env WEFT_E2E_BIN=OLD go test -run '^$' -bench H2ToHTTP1Pair -benchtime 40000x ./test/e2e/
func BenchmarkH2ToHTTP1Pair(b *testing.B) {
	cp := StartControl(b)
	port, _ := serveH1App(b)
	app := StartSidecar(b, cp, SidecarOpts{Service: "h1only", AppPort: port})
	app.WaitRegistered(cp, eventually)
	client := StartClient(b, cp, nil)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Protocols: &protos}}
	payload := bytes.Repeat([]byte("x"), 100)
	one := func() error {
		req, _ := http.NewRequest("POST", "http://"+client.OutboundAddr()+"/echo", bytes.NewReader(payload))
		req.Host = "h1only"
		resp, err := h2c.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			return fmt.Errorf("status %d (x-weft-error %q)", resp.StatusCode, resp.Header.Get("X-Weft-Error"))
		}
		return nil
	}
	for range 500 { // warm: connections, pools, the destination
		if err := one(); err != nil {
			b.Fatal(err)
		}
	}
	s0, c0 := procCPU(b, app.Proc.Pid()), procCPU(b, client.Proc.Pid())
	b.ResetTimer()
	b.SetParallelism(4) // 8 callers on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := one(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	s1, c1 := procCPU(b, app.Proc.Pid()), procCPU(b, client.Proc.Pid())
	b.ReportMetric(float64(s1-s0)/float64(b.N)/1e3, "server-µs/req")
	b.ReportMetric(float64(c1-c0)/float64(b.N)/1e3, "client-µs/req")
}
