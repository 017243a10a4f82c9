package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary double as the benchmark's backend process.
func TestMain(m *testing.M) {
	RunRoleIfRequested()
	os.Exit(m.Run())
}

// TestSmoke runs one short round over every path so the harness cannot rot.
// It asserts only that every path answered: at least one success and no
// errors. Timing figures are never asserted.
func TestSmoke(t *testing.T) {
	haproxy, nginx := LookBinary("haproxy"), LookBinary("nginx")
	if haproxy == "" || nginx == "" {
		msg := fmt.Sprintf("haproxy (%q) or nginx (%q) not installed; run scripts/deps.sh", haproxy, nginx)
		if os.Getenv("CI") == "" {
			t.Skip(msg)
		}
		t.Fatal("CI: " + msg)
	}
	weft := weftBinary(t)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	var log bytes.Buffer
	cfg := Config{
		Paths:      AllPaths,
		Rates:      []int{200},
		Duration:   time.Second,
		Warmup:     200 * time.Millisecond,
		Rounds:     1,
		Max:        true,
		MaxConns:   4,
		WeftBin:    weft,
		HAProxyBin: haproxy,
		NginxBin:   nginx,
		Workdir:    t.TempDir(),
		Pin:        true,
		ReadyWait:  20 * time.Second,
		Log:        &log,
		Command:    "go test ./bench/harness -run TestSmoke",
	}
	rep, err := Run(ctx, cfg)
	t.Log("\n" + log.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var md bytes.Buffer
	WriteMarkdown(&md, rep)
	t.Log("\n" + md.String())
	if err := WriteJSON(rep, filepath.Join(t.TempDir(), "smoke.json")); err != nil {
		t.Fatalf("WriteJSON: %v", err)
	}

	for _, f := range rep.Failures {
		t.Errorf("path %s failed: %s", f.Path, f.Error)
	}
	for _, path := range AllPaths {
		var kinds []string
		for _, r := range rep.Runs {
			if r.Path != path {
				continue
			}
			kinds = append(kinds, r.Kind)
			if r.OK < 1 || r.Errors != 0 {
				t.Errorf("%s %s: %d ok, %d errors (%s); want >= 1 ok and no errors", path, r.Kind, r.OK, r.Errors, r.ErrorMsg)
			}
		}
		if got := strings.Join(kinds, ","); got != KindOpen+","+KindClosed {
			t.Errorf("%s: runs %q, want one open and one closed", path, got)
		}
	}
}

// weftBinary returns bin/weft from the module root, or builds cmd/weft into
// a temporary directory when it is absent.
func weftBinary(t *testing.T) string {
	t.Helper()
	root := moduleRoot(t)
	bin := filepath.Join(root, "bin", "weft")
	if st, err := os.Stat(bin); err == nil && !st.IsDir() {
		return bin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(t.TempDir(), "weft")
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/weft")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bin/weft is absent and building cmd/weft failed: %v\n%s", err, b)
	}
	return out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/weftmesh/weft\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("module root (go.mod of github.com/weftmesh/weft) not found above the test's directory")
		}
		dir = parent
	}
}
