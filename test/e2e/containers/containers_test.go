// Package containers tests Weft in containers, from the outside: the image
// that `make image` builds (FROM scratch, under 30 MB, non-root, one image
// for every role) and the mesh of examples/compose brought up with Docker
// Compose — traffic balanced over every instance, an instance's app
// stopped and then its sidecar, with the requests of the traffic generator
// counted throughout. Skipped, saying why, when no Docker engine answers
// or no Compose is installed.
package containers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/sidecar"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// versionArgs is what `docker run IMAGE …` runs to prove the image starts;
// the output must hold the version the image was built with.
var versionArgs = []string{"version"}

// wantVersionOut is what the output of versionArgs must contain.
func wantVersionOut(version string) string {
	if versionArgs[0] == "version" {
		return version
	}
	return "Weft is a service mesh"
}

// maxImageBytes is the budget for the weft image.
const maxImageBytes = 30_000_000

var (
	imagesOnce sync.Once
	images     struct {
		weft, app, version string
		err                error
	}
)

// needDocker skips the test when no Docker engine answers.
func needDocker(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("skipped: no docker binary on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("skipped: no Docker engine answers (docker info: %v: %s)", err, bytes.TrimSpace(out))
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// buildImages builds weft the way `make build` does and both images with
// scripts/image.sh (what `make image` runs), once per test binary, under
// tags of their own that are removed when the tests end.
func buildImages(t *testing.T) (weft, app, version string) {
	t.Helper()
	imagesOnce.Do(func() {
		root := moduleRoot(t)
		images.version = fmt.Sprintf("e2e-%d", os.Getpid())
		images.weft, images.app = "weft:"+images.version, "weft-example-app:"+images.version
		dir, err := os.MkdirTemp("", "weft-image-e2e-")
		if err != nil {
			images.err = err
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "weft")
		build := exec.Command("make", "-s", "build", "BIN="+bin, "VERSION="+images.version)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			images.err = fmt.Errorf("make build: %v\n%s", err, out)
			return
		}
		img := exec.Command("bash", "scripts/image.sh", bin)
		img.Dir = root
		img.Env = append(os.Environ(), "VERSION="+images.version, "IMAGE="+images.weft, "APP_IMAGE="+images.app)
		out, err := img.CombinedOutput()
		if err != nil {
			images.err = fmt.Errorf("scripts/image.sh: %v\n%s", err, out)
			return
		}
		fmt.Fprintf(os.Stderr, "%s", out)
	})
	if images.err != nil {
		t.Fatal(images.err)
	}
	return images.weft, images.app, images.version
}

func TestMain(m *testing.M) {
	code := m.Run()
	if images.weft != "" {
		_ = exec.Command("docker", "rmi", "-f", images.weft, images.app).Run()
	}
	os.Exit(code)
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestImage(t *testing.T) {
	needDocker(t)
	weft, _, version := buildImages(t)

	var size int64
	fmt.Sscan(docker(t, "image", "inspect", "-f", "{{.Size}}", weft), &size)
	t.Logf("image %s: %d bytes (%.1f MB)", weft, size, float64(size)/1e6)
	if size <= 0 || size >= maxImageBytes {
		t.Errorf("image %s is %d bytes, want under %d", weft, size, maxImageBytes)
	}
	if user := strings.TrimSpace(docker(t, "image", "inspect", "-f", "{{.Config.User}}", weft)); user != "65532:65532" {
		t.Errorf("image runs as user %q, want 65532:65532 (weft, not root)", user)
	}
	if out := docker(t, append([]string{"run", "--rm", weft}, versionArgs...)...); !strings.Contains(out, wantVersionOut(version)) {
		t.Errorf("docker run %s %v: want %q in the output, got:\n%s", weft, versionArgs, wantVersionOut(version), out)
	}
	// Every role starts from the same image; `run` runs its child (here
	// weft itself) and exits with the child's code.
	for _, role := range []string{"control", "sidecar", "run"} {
		if out := docker(t, "run", "--rm", weft, role, "--help"); !strings.Contains(out, "Usage:") {
			t.Errorf("docker run %s %s --help: no usage in:\n%s", weft, role, out)
		}
	}
	out := docker(t, "run", "--rm", weft, "run", "--service", "once", "--control", "127.0.0.1:1", "--admin", "", "--outbound", "",
		"--", "/usr/local/bin/weft", "--help")
	if !strings.Contains(out, "sidecar stopped") {
		t.Errorf("weft run in the image did not run its child and stop:\n%s", out)
	}
	// The CA bundle is where Go looks for it.
	c := strings.TrimSpace(docker(t, "create", weft))
	defer docker(t, "rm", c)
	if tar := docker(t, "cp", c+":/etc/ssl/certs/ca-certificates.crt", "-"); !strings.Contains(tar, "BEGIN CERTIFICATE") {
		t.Errorf("no CA certificates at /etc/ssl/certs/ca-certificates.crt in the image")
	}
}

// compose runs one Docker Compose implementation on the example.
type compose struct {
	t       *testing.T
	argv    []string
	file    string
	project string
	env     []string
}

// composes finds every Compose this machine has, keyed by its version:
// the `docker compose` plugin, docker-compose on PATH (Debian's is 1.29),
// and the v2 that scripts/compose-v2.sh builds into the tools cache
// ($WEFT_COMPOSE_V2 to name another binary).
func composes() map[string][]string {
	found := map[string][]string{}
	add := func(argv ...string) {
		out, err := exec.Command(argv[0], append(argv[1:], "version", "--short")...).Output()
		if v := strings.TrimSpace(string(out)); err == nil && v != "" {
			if _, dup := found[v]; !dup {
				found[v] = argv
			}
		}
	}
	add("docker", "compose")
	if p, err := exec.LookPath("docker-compose"); err == nil {
		add(p)
	}
	v2 := os.Getenv("WEFT_COMPOSE_V2")
	if v2 == "" {
		if out, err := exec.Command("bash", "-c", `echo "${WEFT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weft-tools}/compose-v5.6.0/docker-compose"`).Output(); err == nil {
			v2 = strings.TrimSpace(string(out))
		}
	}
	if st, err := os.Stat(v2); err == nil && !st.IsDir() {
		add(v2)
	}
	return found
}

func newCompose(t *testing.T, argv []string, file, project string, env ...string) *compose {
	return &compose{t: t, argv: argv, file: file, project: project, env: append(os.Environ(), env...)}
}

func (c *compose) cmd(ctx context.Context, args ...string) *exec.Cmd {
	argv := append(append([]string{}, c.argv...), append([]string{"-f", c.file, "-p", c.project}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = c.env
	return cmd
}

func (c *compose) run(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := c.cmd(ctx, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", strings.Join(c.argv, " "), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// loadLine is one line of `app load` (examples/compose/app): a counts line
// or a failure line.
type loadLine struct {
	Time      time.Time      `json:"time"`
	OK        int            `json:"ok"`
	Failed    int            `json:"failed"`
	Instances map[string]int `json:"instances"`
	Start     time.Time      `json:"start"`
	Error     string         `json:"error"`
}

// loadLines reads the traffic generator's output so far.
func (c *compose) loadLines() []loadLine {
	c.t.Helper()
	id := strings.TrimSpace(c.run("ps", "-q", "loadgen-app"))
	out, err := exec.Command("docker", "logs", id).Output()
	if err != nil {
		c.t.Fatalf("docker logs loadgen-app: %v", err)
	}
	var lines []loadLine
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l loadLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && !l.Time.IsZero() {
			lines = append(lines, l)
		}
	}
	return lines
}

type instanceView struct {
	ID    string `json:"id"`
	Ready bool   `json:"ready"`
}

// registry is the control plane's view of service svc, through its
// published API port.
func registry(api, svc string) (map[string]instanceView, error) {
	resp, err := http.Get("http://" + api + "/api/v1/services")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Services []struct {
			Name      string         `json:"name"`
			Instances []instanceView `json:"instances"`
		} `json:"services"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	out := map[string]instanceView{}
	for _, s := range body.Services {
		if s.Name == svc {
			for _, in := range s.Instances {
				out[in.ID] = in
			}
		}
	}
	return out, nil
}

// checkCaptured: the frontend apps have no proxy settings and their calls
// reached orders (nothing listens on port 80 of an orders container), so
// capture meshed them; where the test can enter a container's network
// namespace (root, nsenter), frontend-1's sidecar's /metrics must say so.
func checkCaptured(t *testing.T, c *compose) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: capture checked by the frontends' answers only")
		return
	}
	for _, bin := range []string{"nsenter", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Logf("no %s: capture checked by the frontends' answers only", bin)
			return
		}
	}
	id := strings.TrimSpace(c.run("ps", "-q", "frontend-1"))
	pid := strings.TrimSpace(docker(t, "inspect", "-f", "{{.State.Pid}}", id))
	out, err := exec.Command("nsenter", "-t", pid, "-n", "curl", "-sS", "-m", "5", "http://127.0.0.1:15020/metrics").CombinedOutput()
	if err != nil {
		t.Fatalf("frontend-1's /metrics: %v\n%s", err, out)
	}
	var meshed float64
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, `weft_capture_connections_total{route="mesh"} `) {
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &meshed)
		}
	}
	if meshed < 1 {
		t.Errorf("frontend-1's sidecar meshed no captured connection; its capture metrics:\n%s", grepLines(string(out), "weft_capture"))
	}
	t.Logf("frontend-1: %v captured connections meshed", meshed)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestComposeMesh runs the example under every Compose found (Debian's
// docker-compose 1.29 and a v2), one after the other.
func TestComposeMesh(t *testing.T) {
	needDocker(t)
	found := composes()
	if len(found) == 0 {
		t.Skip("skipped: no Docker Compose: neither `docker compose` nor docker-compose is installed (scripts/compose-v2.sh builds a v2)")
	}
	_, _, version := buildImages(t)
	for _, v := range slices.Sorted(maps.Keys(found)) {
		t.Run("compose-"+v, func(t *testing.T) { testComposeMesh(t, found[v], version) })
	}
}

func testComposeMesh(t *testing.T, argv []string, version string) {
	root := moduleRoot(t)
	project := fmt.Sprintf("weft-e2e-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	c := newCompose(t, argv, filepath.Join(root, "examples/compose/docker-compose.yml"), project, "VERSION="+version, "RATE=50")
	t.Logf("compose: %s, project %s", strings.Join(c.argv, " "), project)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := c.cmd(ctx, "logs", "--no-color", "--tail", "30").CombinedOutput()
			t.Logf("compose logs (tail):\n%s", out)
		}
		if out, err := c.cmd(ctx, "down", "-v", "--remove-orphans", "-t", "3").CombinedOutput(); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	begin := time.Now()
	c.run("up", "-d")

	port := strings.TrimSpace(c.run("port", "control", "15000"))
	api := port[strings.LastIndex(port, "\n")+1:]
	if !strings.HasPrefix(api, "127.0.0.1:") {
		t.Fatalf("control plane API published at %q, want a loopback address", api)
	}

	// Every instance of both services is reached: the generator calls
	// frontend, each frontend instance calls orders.
	var steady map[string]int
	ok := harness.Poll(90*time.Second, func() bool {
		steady = map[string]int{}
		var total int
		for _, l := range c.loadLines() {
			if l.Error == "" && l.OK > 0 {
				total += l.OK
				for k, v := range l.Instances {
					steady[k] += v
				}
			}
		}
		if total < 150 {
			return false
		}
		for _, in := range []string{"frontend-1", "frontend-2", "orders-1", "orders-2"} {
			if steady[in] < total*3/10 { // two instances each: about half
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("traffic not balanced over both instances of both services within 90s: %v", steady)
	}
	steadyAt := time.Now()
	checkCaptured(t, c)
	t.Logf("up and balanced after %s: %v", time.Since(begin).Round(100*time.Millisecond), steady)

	// Stop orders-2's app: its sidecar sees the app refuse connections and
	// marks the instance not ready; callers stop sending to it.
	stopApp := time.Now()
	c.run("stop", "-t", "5", "orders-2-app")
	var ejected time.Time
	if !harness.Poll(20*time.Second, func() bool {
		r, err := registry(api, "orders")
		if err == nil && r["orders-2"].ID != "" && !r["orders-2"].Ready {
			ejected = time.Now()
			return true
		}
		return false
	}) {
		t.Fatalf("orders-2 not marked not ready within 20s of its app stopping")
	}
	t.Logf("orders-2 not ready %s after its app was stopped", ejected.Sub(stopApp).Round(time.Millisecond))
	time.Sleep(3 * time.Second) // traffic without it

	// Then its sidecar: it deregisters and the instance leaves the registry.
	stopSidecar := time.Now()
	c.run("stop", "-t", "10", "orders-2")
	var left time.Time
	if !harness.Poll(20*time.Second, func() bool {
		r, err := registry(api, "orders")
		if err == nil && r["orders-2"].ID == "" && r["orders-1"].Ready {
			left = time.Now()
			return true
		}
		return false
	}) {
		t.Fatalf("orders-2 still in the registry 20s after its sidecar was stopped")
	}
	t.Logf("orders-2 left the registry %s after its sidecar was stopped", left.Sub(stopSidecar).Round(time.Millisecond))
	time.Sleep(3 * time.Second)

	// Account for every request the generator made. Callers learn of the
	// ejection by a push from the control plane, so a request may still be
	// sent to orders-2 for a moment after the registry changed: the
	// allowance is the mesh's own propagation window (the time a
	// deregistering sidecar keeps serving while callers learn of it).
	// Failures in it are counted apart; after it, none is allowed.
	settled := ejected.Add(sidecar.DefaultPropagation)
	var total, startup, beforeEjection, inWindow, afterOrders2, afterOK int
	var firstErr string
	for _, l := range c.loadLines() {
		switch {
		case l.Error != "":
			switch {
			case l.Start.Before(steadyAt):
				startup++ // before every instance was up (compose starts the generator at once)
				continue
			case l.Start.After(settled):
				t.Errorf("request started %s after orders-2 was ejected failed: %s", l.Start.Sub(ejected).Round(time.Millisecond), l.Error)
			case l.Start.After(ejected):
				inWindow++
			default:
				beforeEjection++
			}
			if firstErr == "" {
				firstErr = l.Error
			}
		case l.OK > 0 || l.Failed > 0:
			total += l.OK + l.Failed
			// A counts line covers the second before its time.
			if l.Time.Add(-time.Second).After(settled) {
				afterOrders2 += l.Instances["orders-2"]
				afterOK += l.OK
			}
		}
	}
	if afterOK < 200 {
		t.Errorf("only %d requests succeeded after the ejection, want the generator's steady 50/s", afterOK)
	}
	if afterOrders2 > 0 {
		t.Errorf("orders-2 served %d requests after it was ejected", afterOrders2)
	}
	t.Logf("requests: %d; failed: %d at start-up, %d between the app's stop and the ejection, %d in the %s after it, 0 later; "+
		"served by orders-2 after the ejection: %d; whole test %s",
		total, startup, beforeEjection, inWindow, sidecar.DefaultPropagation, afterOrders2, time.Since(begin).Round(100*time.Millisecond))
	if firstErr != "" {
		if len(firstErr) > 300 {
			firstErr = firstErr[:300] + "…"
		}
		t.Logf("first failure after start-up: %s", firstErr)
	}
}
