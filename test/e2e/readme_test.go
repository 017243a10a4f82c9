package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// The README's "Using it" walk-through, run as a new user would paste it:
// the lines come from the README itself (the sh block after the
// e2e:walkthrough marker), so the two cannot drift. The test changes only
// what a shared machine needs: every default port becomes a free one (the
// control plane's flags, each `weft run`'s --control and, where it has none,
// --outbound/--admin, and the literal 127.0.0.1:15001), bin/ becomes a
// temporary directory and the control plane's data dir a temporary one. It
// runs `make build` for real (the binary it builds is the one the rest uses)
// and checks what each line prints.

const walkthroughMarker = "<!-- e2e:walkthrough"

// walkthrough returns the command lines of the README's marked block.
func walkthrough(t *testing.T, readme string) []string {
	t.Helper()
	i := strings.Index(readme, walkthroughMarker)
	if i < 0 {
		t.Fatalf("README.md has no %q marker before its Using it block", walkthroughMarker)
	}
	rest := readme[i:]
	start := strings.Index(rest, "```sh\n")
	if start < 0 {
		t.Fatal("no ```sh block after the walkthrough marker")
	}
	rest = rest[start+len("```sh\n"):]
	end := strings.Index(rest, "\n```")
	if end < 0 {
		t.Fatal("the walkthrough block is not closed")
	}
	var lines []string
	for _, l := range strings.Split(rest[:end], "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

// splitComment cuts a trailing "  # comment" (two spaces or more before
// the #, as the README writes them), and reports a trailing & (background).
func splitComment(line string) (cmd string, background bool) {
	if m := regexp.MustCompile(`\s{2,}#.*$`).FindStringIndex(line); m != nil {
		line = line[:m[0]]
	}
	line = strings.TrimSpace(line)
	if strings.HasSuffix(line, "&") {
		return strings.TrimSpace(strings.TrimSuffix(line, "&")), true
	}
	return line, false
}

type walk struct {
	t                            *testing.T
	root, dir                    string
	http, grpc, outbound, adminA string
	env                          []string
	jobs                         []*harness.Proc
	weftBin                      string
}

// rewrite applies the substitutions described above to one command.
func (w *walk) rewrite(cmd string) string {
	bin := filepath.Join(w.dir, "bin") + "/"
	if cmd == "make build" {
		return "make build BIN=" + bin + "weft"
	}
	cmd = regexp.MustCompile(`(^|[\s=])bin/`).ReplaceAllString(cmd, "${1}"+bin)
	cmd = strings.ReplaceAll(cmd, "127.0.0.1:15001", w.outbound)
	weft := bin + "weft"
	switch {
	case strings.HasPrefix(cmd, weft+" control"):
		cmd += fmt.Sprintf(" --http-addr %s --grpc-addr %s --broker-addr %s --data-dir %s",
			w.http, w.grpc, addr(freePort(w.t)), filepath.Join(w.dir, "weft-data"))
	case strings.HasPrefix(cmd, weft+" check"):
		cmd += " --data-dir " + filepath.Join(w.dir, "weft-data")
	case strings.HasPrefix(cmd, weft+" run "):
		flags := " --control " + w.grpc
		if !strings.Contains(cmd, "--outbound") {
			flags += " --outbound " + w.outbound + " --admin " + w.adminA
		}
		cmd = weft + " run" + flags + strings.TrimPrefix(cmd, weft+" run")
	}
	return cmd
}

func (w *walk) run(cmd string, d time.Duration) (string, int) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", "-c", cmd)
	c.Dir = w.root
	c.Env = append(os.Environ(), w.env...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 2 * time.Second
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	_ = c.Run()
	if ctx.Err() != nil {
		w.t.Fatalf("%s: did not finish within %s\n%s", cmd, d, out.String())
	}
	return out.String(), c.ProcessState.ExitCode()
}

// lines of JSON objects → the "instance" of each.
func instancesOf(t *testing.T, out string) []string {
	t.Helper()
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var v struct{ Instance string }
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Instance == "" {
			t.Fatalf("want one JSON object with an instance per line, got %q in:\n%s", l, out)
		}
		ids = append(ids, v.Instance)
	}
	return ids
}

func TestReadmeWalkthrough(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"make", "curl", "python3", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the walk-through needs %s, which is not installed", tool)
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	w := &walk{t: t, root: root, dir: t.TempDir(),
		http: addr(freePort(t)), grpc: addr(freePort(t)), outbound: addr(freePort(t)), adminA: addr(freePort(t))}
	w.env = []string{"WEFT_SERVER=http://" + w.http, "NO_PROXY=", "no_proxy="}
	w.weftBin = filepath.Join(w.dir, "bin", "weft")

	// What each line must print, in README order; a line the table does not
	// know fails the test, so a new line in the README gets its check here.
	type check func(t *testing.T, cmd, out string, code int)
	wantOK := func(t *testing.T, cmd, out string, code int) {
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", cmd, code, out)
		}
	}
	checks := []struct {
		prefix string
		check  check
	}{
		{"make build", wantOK},
		{"bin/weft version", func(t *testing.T, cmd, out string, code int) {
			wantOK(t, cmd, out, code)
			re := regexp.MustCompile(`^weft \S+ \(commit [0-9a-f]{7,12}(-dirty)?, go1\.\d+\S*, built \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)\n$`)
			if !re.MatchString(out) {
				t.Errorf("weft version printed %q, want it to match %s (stamped by make build)", out, re)
			}
		}},
		{"bin/weft control", nil}, // background: checked when started
		{"bin/weft check", func(t *testing.T, cmd, out string, code int) {
			wantOK(t, cmd, out, code)
			for _, name := range []string{"weft", "loopback", "control plane", "broker", "sidecars"} {
				if !regexp.MustCompile(`(?m)^OK\s+` + name + `\s`).MatchString(out) {
					t.Errorf("weft check has no OK line for %q:\n%s", name, out)
				}
			}
			if strings.Contains(out, "FAIL") {
				t.Errorf("weft check failed a check:\n%s", out)
			}
		}},
		{"go build -o bin/hello-go", wantOK},
		{"bin/weft run --service hello --id hello-1", nil},
		{"bin/weft run --service hello --id hello-2", nil},
		{"bin/weft get services -o wide", func(t *testing.T, cmd, out string, code int) {
			wantOK(t, cmd, out, code)
			rows := map[string][]string{}
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) == 9 {
					rows[f[1]] = f
				}
			}
			h1, h2 := rows["hello-1"], rows["hello-2"]
			if rows["INSTANCE"] == nil || h1 == nil || h2 == nil {
				t.Fatalf("want a header and rows for hello-1 and hello-2:\n%s", out)
			}
			if h1[3] != "true" || h2[3] != "true" || h1[6] != w.outbound || h1[7] != w.adminA {
				t.Errorf("hello-1 want ready with outbound %s admin %s; hello-2 ready:\n%s", w.outbound, w.adminA, out)
			}
			if !regexp.MustCompile(`^127\.0\.0\.1:[1-9]\d+$`).MatchString(h2[6]) || !regexp.MustCompile(`^127\.0\.0\.1:[1-9]\d+$`).MatchString(h2[7]) {
				t.Errorf("hello-2 (ports :0) should show the ports it got:\n%s", out)
			}
		}},
		{"for i in 1 2 3 4; do http_proxy=http://127.0.0.1:15001 curl -s http://hello/", func(t *testing.T, cmd, out string, code int) {
			wantOK(t, cmd, out, code)
			ids := instancesOf(t, out)
			if len(ids) != 4 || ids[0] == ids[1] || ids[0] != ids[2] || ids[1] != ids[3] {
				t.Errorf("round robin over hello-1 and hello-2: want alternating instances, got %v", ids)
			}
		}},
		{"bin/weft apply -f examples/hello-policy.yaml", func(t *testing.T, cmd, out string, code int) {
			wantOK(t, cmd, out, code)
			if out != "trafficpolicy/hello created\n" {
				t.Errorf("apply printed %q", out)
			}
			// A person types the next line after this; the test waits
			// for the policy to reach hello-1's sidecar instead.
			if !poll(eventually, 20*time.Millisecond, func() bool {
				_, body, err := httpGet("http://" + w.adminA + "/config")
				return err == nil && strings.Contains(body, `"algorithm": "consistent_hash"`)
			}) {
				t.Fatal("the policy did not reach hello-1's sidecar")
			}
		}},
		{"for i in 1 2 3 4; do http_proxy=http://127.0.0.1:15001 curl -s -H 'x-user-id: alice'", func(t *testing.T, cmd, out string, code int) {
			wantOK(t, cmd, out, code)
			ids := instancesOf(t, out)
			if len(ids) != 4 || ids[0] != ids[1] || ids[1] != ids[2] || ids[2] != ids[3] {
				t.Errorf("consistent hash on x-user-id: want one instance for alice, got %v", ids)
			}
		}},
		{"bin/weft get config hello-1", func(t *testing.T, cmd, out string, code int) {
			wantOK(t, cmd, out, code)
			for _, re := range []string{
				`(?m)^INSTANCE\s+hello-1 \(service hello, weft \S+\)$`,
				`(?m)^CONTROL\s+` + regexp.QuoteMeta(w.grpc) + ` connected, control plane [0-9a-f]+ version \S+,`,
				`(?m)^hello\s+\d+\s+consistent_hash\s+5s\s+2/2\s+trafficpolicy/hello \(generation 1\)$`,
				`(?m)^hello\s+hello-1\s+127\.0\.0\.1:\d+\s+ready\s+\d+$`,
				`(?m)^hello\s+hello-2\s+127\.0\.0\.1:\d+\s+ready\s+\d+$`,
			} {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("get config output does not match %s:\n%s", re, out)
				}
			}
		}},
		{"kill %3 %2 %1", nil},
	}

	lines := walkthrough(t, string(readme))
	if len(lines) != len(checks) {
		t.Fatalf("the README's walk-through has %d lines, the test checks %d; update one or the other:\n%s", len(lines), len(checks), strings.Join(lines, "\n"))
	}
	for i, line := range lines {
		raw, bg := splitComment(line)
		if !strings.HasPrefix(raw, checks[i].prefix) {
			t.Fatalf("README line %d is %q; the test expects it to start with %q", i+1, raw, checks[i].prefix)
		}
		if strings.HasPrefix(raw, "kill %") {
			w.stopJobs(t, raw)
			continue
		}
		cmd := w.rewrite(raw)
		t.Logf("$ %s", cmd)
		if bg {
			w.startJob(t, raw, cmd)
			continue
		}
		limit := 60 * time.Second
		if raw == "make build" || strings.HasPrefix(raw, "go build") {
			limit = 5 * time.Minute
		}
		out, code := w.run(cmd, limit)
		t.Logf("%s", out)
		checks[i].check(t, raw, out, code)
	}
}

// startJob starts a background line and waits for what it brings up.
func (w *walk) startJob(t *testing.T, raw, cmd string) {
	t.Helper()
	p := harness.Start(t, fmt.Sprintf("job-%d", len(w.jobs)+1), "bash", "-c", "cd "+w.root+" && export "+strings.Join(w.env, " ")+" && exec "+cmd)
	w.jobs = append(w.jobs, p)
	switch {
	case strings.Contains(raw, "weft control"):
		harness.WaitUp(t, p, "http://"+w.http+"/healthz", eventually)
	case strings.Contains(raw, "weft run"):
		id := regexp.MustCompile(`--id (\S+)`).FindStringSubmatch(raw)
		if id == nil {
			t.Fatalf("walk-through: %q has no --id for the test to wait on", raw)
		}
		cp := &Control{Control: &harness.Control{URL: "http://" + w.http}, t: t}
		if !poll(eventually, 50*time.Millisecond, func() bool {
			m, _ := cp.Services()
			for _, in := range m["hello"] {
				if in.ID == id[1] && in.Ready {
					return true
				}
			}
			return p.Exited()
		}) || p.Exited() {
			t.Fatalf("%s did not register ready; its output ends:\n%s", id[1], p.Tail(30))
		}
		if out := p.ReadOutput(); strings.Contains(out, "level=ERROR") {
			t.Errorf("%s logged an error:\n%s", id[1], out)
		}
	}
}

// stopJobs is the shell's `kill %3 %2 %1`: SIGTERM each job in turn and
// wait for it; instances exit cleanly, the control plane promptly.
func (w *walk) stopJobs(t *testing.T, raw string) {
	t.Helper()
	for _, f := range strings.Fields(raw)[1:] {
		n, err := strconv.Atoi(strings.TrimPrefix(f, "%"))
		if err != nil || n < 1 || n > len(w.jobs) {
			t.Fatalf("%q: no job %s", raw, f)
		}
		p := w.jobs[n-1]
		start := time.Now()
		p.Signal(syscall.SIGTERM)
		if !p.WaitExit(20 * time.Second) {
			t.Fatalf("job %d did not exit within 20s of SIGTERM; its output ends:\n%s", n, p.Tail(30))
		}
		if p.ExitCode() != 0 {
			t.Errorf("job %d exited %d after SIGTERM; its output ends:\n%s", n, p.ExitCode(), p.Tail(30))
		}
		if n == 1 {
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("the control plane took %s to exit after SIGTERM (goal 1s)", d)
			}
		}
	}
}
