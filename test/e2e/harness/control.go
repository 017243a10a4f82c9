package harness

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Control is a running `weft control`, every listener on a port of its own.
type Control struct {
	GRPCAddr string
	HTTPAddr string
	URL      string // http://HTTPAddr, or https:// with --api-tls on
	DataDir  string
	Proc     *Proc // the current process; Restart replaces it

	t      testing.TB
	weft   string
	args   []string
	wait   time.Duration
	starts int
}

// StartControl starts weft's control plane on fresh loopback ports and a
// fresh data dir, with flags after the harness's own, and waits up to
// wait for GET /healthz → 200.
func StartControl(t testing.TB, weft string, wait time.Duration, flags ...string) *Control {
	t.Helper()
	c := &Control{
		t:        t,
		weft:     weft,
		wait:     wait,
		GRPCAddr: Addr(FreePort(t)),
		HTTPAddr: Addr(FreePort(t)),
		DataDir:  filepath.Join(t.TempDir(), "data"),
	}
	c.URL = "http://" + c.HTTPAddr
	c.args = []string{"control", "--grpc-addr", c.GRPCAddr, "--http-addr", c.HTTPAddr, "--data-dir", c.DataDir}
	for _, flag := range ControlListenFlags(weft) {
		c.args = append(c.args, flag, Addr(FreePort(t)))
	}
	c.args = append(c.args, flags...)
	if apiTLS(flags) {
		c.URL = "https://" + c.HTTPAddr
	}
	c.Restart()
	return c
}

// Restart starts the control plane (again, after Kill or Stop) on the
// same ports and data dir, and waits for /healthz.
func (c *Control) Restart() {
	c.t.Helper()
	c.starts++
	c.Proc = Start(c.t, fmt.Sprintf("control-%d", c.starts), c.weft, c.args...)
	WaitUp(c.t, c.Proc, c.URL+"/healthz", c.wait)
}

// Kill SIGKILLs the control plane's process group and waits for it to die.
func (c *Control) Kill() {
	c.t.Helper()
	c.Proc.Kill()
}

// Stop stops the control plane gracefully (SIGTERM), waiting up to d.
func (c *Control) Stop(d time.Duration) {
	c.t.Helper()
	c.Proc.Stop(d)
}

// controlListen are the `weft control` listen-address flags beyond
// --grpc-addr and --http-addr that a build may have.
var controlListen = []string{"--broker-addr"}

var listenFlags = struct {
	sync.Mutex
	of map[string][]string // by weft binary
}{of: map[string][]string{}}

// ControlListenFlags lists the listen-address flags of `weft control`
// beyond --grpc-addr and --http-addr (--broker-addr) that this weft binary
// accepts. StartControl pins each to a free port, so that parallel tests
// never collide on a default port.
func ControlListenFlags(weft string) []string {
	listenFlags.Lock()
	defer listenFlags.Unlock()
	if flags, ok := listenFlags.of[weft]; ok {
		return flags
	}
	var flags []string
	if out, err := exec.Command(weft, "control", "--help").CombinedOutput(); err == nil {
		for _, flag := range controlListen {
			if strings.Contains(string(out), flag+" ") {
				flags = append(flags, flag)
			}
		}
	}
	listenFlags.of[weft] = flags
	return flags
}

// apiTLS reports whether flags turn the API's TLS on (on loopback, where
// the harness binds, it is off by default).
func apiTLS(flags []string) bool {
	on := false
	for i, f := range flags {
		switch {
		case f == "--api-tls" && i+1 < len(flags):
			on = flags[i+1] == "on"
		case strings.HasPrefix(f, "--api-tls="):
			on = f == "--api-tls=on"
		}
	}
	return on
}
