package messaging

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// A publishing sidecar serves /v1/publish on the app's own connection to
// its outbound: it listens on the ports it was given and on no other (an
// earlier version forwarded those requests to a loopback listener of its
// own).
func TestPublishNeedsNoListenerOfItsOwn(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	c := startControl(t)
	c.apply(subscription("audit", "audit", "local.api", "/events/in", ""))
	c.waitSubscription("local.api", "audit")
	pub := startPub(t, c, "clerk")
	if _, err := publishRetrying(pub.outbound, "local.api", "m-1", "", "hello", eventually); err != nil {
		t.Fatal(err)
	}
	var got []int
	want := []int{pub.outbound, pub.admin}
	slices.Sort(want)
	if !harness.Poll(5*time.Second, func() bool { got = listeningPorts(t, pub.p.Pid()); return slices.Equal(got, want) }) {
		t.Fatalf("sidecar listens on %v; want only its --outbound and --admin %v", got, want)
	}
}

// listeningPorts lists the TCP ports pid's own sockets listen on: its fds'
// socket inodes matched against the LISTEN rows of its network namespace.
func listeningPorts(t *testing.T, pid int) []int {
	t.Helper()
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/" + f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] { // 0A: TCP_LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(fs[1], ":")
			p, _ := strconv.ParseInt(hexPort, 16, 32)
			ports = append(ports, int(p))
		}
	}
	slices.Sort(ports)
	return ports
}
