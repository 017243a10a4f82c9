package hardening_test

import (
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// h2specEngines are the sidecar's two HTTP/2 engines (--h2-engine), each
// with the h2spec cases it fails today and why. The test asserts each
// list exactly, so a fix or a regression shows.
var h2specEngines = []struct {
	engine  string
	failing map[string]string
	// racyOutbound may fail on the outbound listener only: there the
	// request's authority (h2spec sends 127.0.0.1:PORT) is no service,
	// so the mesh answers at once, without reading the body, and whether
	// net/http sees the content-length mismatch before the response is a
	// race. The same answer-at-once races 6.9.1/3 (WINDOW_UPDATEs past
	// 2^31-1 on a stream): the stream may already be answered and reset
	// with another code when the overflow arrives (seen under load in CI).
	// The native engine checks the body it drops after an answer against
	// its content-length, and the window before the answer, so it has none.
	racyOutbound []string
}{
	// 3.5/2 (invalid connection preface) passes on both: the fast path,
	// which reads every connection's first line on either engine, closes
	// a line that claims no HTTP version without an answer (proxy/h1
	// notHTTP).
	{engine: "native", failing: map[string]string{}},
	{engine: "nethttp", failing: map[string]string{
		"http2/6.5.3/1":   "two SETTINGS_INITIAL_WINDOW_SIZE in one frame: net/http's h2 server hangs up on a SETTINGS frame with duplicate entries (on purpose, a DoS guard) instead of applying them in order",
		"http2/8.1.2.2/1": "connection-specific field in HEADERS: net/http's h2 server answers 400 without calling the proxy (nothing is forwarded), where h2spec wants RST_STREAM PROTOCOL_ERROR",
		"http2/8.1.2.2/2": "TE other than trailers: answered 400 by net/http's h2 server, not forwarded, where h2spec wants RST_STREAM PROTOCOL_ERROR",
	}, racyOutbound: []string{"http2/6.9.1/3", "http2/8.1.2.6/1", "http2/8.1.2.6/2"}},
}

const h2specTotal = 145

// TestH2Spec runs h2spec (h2c, prior knowledge) against the client
// sidecar's outbound listener and the server sidecar's inbound listener,
// on each HTTP/2 engine, and asserts its summary: every case passes but
// the known ones.
func TestH2Spec(t *testing.T) {
	bin := h2specBinary(t)
	port := harness.FreePort(t)
	app := harness.Start(t, "app-back", bins.App, "--port", strconv.Itoa(port), "--name", "back")
	harness.WaitListening(t, app, harness.Addr(port), eventually)
	for _, eng := range h2specEngines {
		t.Run(eng.engine, func(t *testing.T) {
			m := startMesh(t, port, "", "--h2-engine", eng.engine)
			m.waitRoutable(t)
			for _, l := range []struct{ name, addr string }{{"outbound", m.outbound}, {"inbound", m.inbound}} {
				t.Run(l.name, func(t *testing.T) {
					t.Parallel()
					racy := []string(nil)
					if l.name == "outbound" {
						racy = eng.racyOutbound
					}
					runH2spec(t, bin, l.name, l.addr, eng.failing, racy)
				})
			}
		})
	}
}

func runH2spec(t *testing.T, bin, listener, addr string, failing map[string]string, racy []string) {
	_, p, _ := net.SplitHostPort(addr)
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	cmd := exec.Command(bin, "-h", "127.0.0.1", "-p", p, "-o", "5", "-j", report)
	out, _ := cmd.CombinedOutput() // exits 1 when a case fails
	passed, total, failed, err := readH2specReport(report)
	if err != nil {
		t.Fatalf("h2spec report: %v\n%s", err, harness.Tail(string(out), 60, 8<<10))
	}
	t.Logf("h2spec on the %s listener: %d/%d passed, failing %v", listener, passed, total, failed)
	want := make([]string, 0, len(failing))
	for id := range failing {
		want = append(want, id)
	}
	slices.Sort(want)
	failed = slices.DeleteFunc(failed, func(id string) bool {
		if slices.Contains(racy, id) {
			t.Logf("h2spec %s failed (racy on the outbound, see racyOutbound)", id)
			passed++ // counted as the race's other outcome
			return true
		}
		return false
	})
	if total != h2specTotal || passed != total-len(want) || !slices.Equal(failed, want) {
		t.Errorf("h2spec: %d/%d passed, failing %v; want %d/%d, failing %v\n%s",
			passed, total, failed, h2specTotal-len(want), h2specTotal, want, harness.Tail(string(out), 80, 12<<10))
	}
}

// h2specBinary builds (once, cached outside the clone) and returns h2spec,
// through the project's script.
func h2specBinary(t testing.TB) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "scripts", "h2spec.sh")
	cmd := exec.Command("bash", script)
	cmd.Stderr = os.Stderr
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.Output(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		<-done
	}
	if err != nil {
		t.Fatalf("scripts/h2spec.sh: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// readH2specReport reads h2spec's JUnit report: how many cases passed of
// how many run, and the ids (package/index, as h2spec names them) of the
// failed ones, sorted.
func readH2specReport(path string) (passed, total int, failed []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, nil, err
	}
	var r struct {
		Suites []struct {
			Package string `xml:"package,attr"`
			Cases   []struct {
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &r); err != nil {
		return 0, 0, nil, err
	}
	for _, s := range r.Suites {
		for i, c := range s.Cases {
			total++
			switch {
			case c.Failure != nil || c.Error != nil:
				failed = append(failed, fmt.Sprintf("%s/%d", s.Package, i+1))
			case c.Skipped == nil:
				passed++
			}
		}
	}
	slices.Sort(failed)
	return passed, total, failed, nil
}
