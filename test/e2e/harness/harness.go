// Package harness starts the real processes that Weft's end-to-end suites
// (test/e2e, test/e2e/messaging, test/e2e/telemetry) test from the outside.
// It builds the weft binary and a suite's app once per test binary run
// (Main), hands out loopback ports, starts each process in its own process
// group with its output in a file whose tail goes to the test log when the
// test fails and which is killed at cleanup (Start), and starts control
// planes (StartControl).
//
// It holds only what every suite needs the same way; each suite keeps its
// own sidecars, apps and checks on top of it.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Binaries are the programs a suite starts.
type Binaries struct {
	Weft string // built from ./cmd/weft, or $WEFT_E2E_BIN when set
	App  string // the suite's own app (its backend or subscriber)
}

// Main is a suite's TestMain: it builds weft and the app package (relative
// to the module root, e.g. "./test/e2e/testapp") into a temporary
// directory, fills bins, runs the tests and removes the directory. It
// returns the exit code for os.Exit.
func Main(m *testing.M, app string, bins *Binaries) int {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		fmt.Fprintf(os.Stderr, "e2e: cannot find the module root (go env GOMOD: %q, %v)\n", gomod, err)
		return 1
	}
	root := filepath.Dir(gomod)
	tmp, err := os.MkdirTemp("", "weft-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	bins.App = filepath.Join(tmp, filepath.Base(app))
	if err := build(root, bins.App, app); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if b := os.Getenv("WEFT_E2E_BIN"); b != "" {
		bins.Weft, _ = filepath.Abs(b)
	} else {
		bins.Weft = filepath.Join(tmp, "weft")
		if err := build(root, bins.Weft, "./cmd/weft"); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	return m.Run()
}

// build compiles pkg to out, static, so the binary runs wherever the test does.
func build(root, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}
