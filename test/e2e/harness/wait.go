package harness

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// pace is how often Poll checks: often enough that a wait ends soon
// after its condition holds, seldom enough not to load the box.
const pace = 50 * time.Millisecond

// Poll calls cond every 50 ms until it returns true or d has passed, and
// reports whether it returned true.
func Poll(d time.Duration, cond func() bool) bool { return PollEvery(d, pace, cond) }

// PollEvery calls cond every interval (0: without pause) until it returns
// true or d has passed, and reports whether it returned true. cond is
// called at least once, and once more after the deadline's last pause.
func PollEvery(d, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		if interval > 0 {
			time.Sleep(interval)
		}
	}
}

// Client makes requests straight to a listener: no proxy, and no
// keep-alive, so no pooled connection outlives the process it went to.
// To a control plane it sends the local token and verifies its TLS, as
// the CLI does (see Transport).
var Client = &http.Client{Timeout: 5 * time.Second, Transport: Transport}

// Get GETs u with Client and returns the status and the body.
func Get(u string) (int, string, error) {
	resp, err := Client.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// WaitUp waits up to d for GET u to answer 200 (a control plane's
// /healthz, a sidecar's /ready) while p runs. It fails the test, with the
// tail of p's output, if p exits first or d passes.
func WaitUp(t testing.TB, p *Proc, u string, d time.Duration) {
	t.Helper()
	var last string
	ok := Poll(d, func() bool {
		if p.Exited() {
			return true
		}
		code, body, err := Get(u)
		last = fmt.Sprintf("status %d body %q err %v", code, body, err)
		return err == nil && code == 200
	})
	if p.Exited() {
		t.Fatalf("%s exited with code %d before GET %s answered 200; its output ends:\n%s", p.Name, p.ExitCode(), u, p.Tail(30))
	}
	if !ok {
		t.Fatalf("%s: GET %s not 200 within %s (last: %s); its output ends:\n%s", p.Name, u, d, last, p.Tail(30))
	}
}

// WaitListening waits up to d for p to accept TCP connections at addr. It
// fails the test, with the tail of p's output, if p exits first or d passes.
func WaitListening(t testing.TB, p *Proc, addr string, d time.Duration) {
	t.Helper()
	if !PollEvery(d, 20*time.Millisecond, func() bool { return Dialable(addr) || p.Exited() }) || p.Exited() {
		t.Fatalf("%s did not listen on %s within %s (exited: %v, code %d); its output ends:\n%s", p.Name, addr, d, p.Exited(), p.ExitCode(), p.Tail(30))
	}
}
