package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// How much of a process's output a failed test shows: enough for the
// last requests and the shutdown, bounded so a chatty process does not
// bury the failure.
const (
	dumpLines = 120
	dumpBytes = 24 << 10
)

// killWait bounds the wait for a process to die after SIGKILL.
const killWait = 10 * time.Second

// Proc is one started process, leader of its own process group (so that
// `weft run`'s app goes with it).
type Proc struct {
	Name    string
	Bin     string
	Args    []string
	Output  string // the file holding its stdout and stderr, interleaved as written
	Started time.Time

	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

// Start starts bin with args as a process named name (in the test log and
// its output file's name). At the test's cleanup the process group is
// killed and, if the test failed, the tail of its output is logged.
func Start(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	return StartEnv(t, name, bin, nil, args...)
}

// StartEnv is Start with env ("K=V") added to the test's environment.
func StartEnv(t testing.TB, name, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{
		t: t, Name: name, Bin: bin, Args: args,
		Output: filepath.Join(t.TempDir(), name+".log"),
		done:   make(chan struct{}),
	}
	f, err := os.Create(p.Output)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p.cmd = exec.Command(bin, args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.Started = time.Now()
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.KillGroup()
		if !p.WaitExit(killWait) {
			t.Errorf("%s (pid %d) did not die after SIGKILL", p.Name, p.Pid())
		}
		if t.Failed() {
			p.Dump()
		}
	})
	return p
}

// Pid is the process's id, which is also its process group's.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process itself (not its group).
func (p *Proc) Signal(sig syscall.Signal) {
	if err := syscall.Kill(p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.t.Errorf("signal %v to %s: %v", sig, p.Name, err)
	}
}

// KillGroup sends SIGKILL to the whole process group (e.g. sidecar and
// app) and returns at once.
func (p *Proc) KillGroup() {
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	_ = syscall.Kill(p.Pid(), syscall.SIGKILL)
}

// Kill is kill -9 of the process group, returning once the process has
// exited; the test fails if it does not die.
func (p *Proc) Kill() {
	p.t.Helper()
	p.KillGroup()
	if !p.WaitExit(killWait) {
		p.t.Fatalf("%s (pid %d) did not die after SIGKILL", p.Name, p.Pid())
	}
}

// Stop sends SIGTERM to the process and waits up to d for it to exit; if
// it does not, the test fails and the group is killed.
func (p *Proc) Stop(d time.Duration) {
	p.t.Helper()
	p.Signal(syscall.SIGTERM)
	if !p.WaitExit(d) {
		p.t.Errorf("%s did not stop within %s of SIGTERM", p.Name, d)
		p.Kill()
	}
}

// WaitExit waits up to d for the process to exit and reports whether it did.
func (p *Proc) WaitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit status (-1 if killed by a signal or still running).
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// ReadOutput returns the process's output so far.
func (p *Proc) ReadOutput() string {
	b, _ := os.ReadFile(p.Output)
	return string(b)
}

// Tail returns the last lines of the process's output, for a failure
// message.
func (p *Proc) Tail(lines int) string { return Tail(p.ReadOutput(), lines, dumpBytes) }

// Dump writes the tail of the process's output to the test log.
func (p *Proc) Dump() {
	p.t.Logf("----- %s (%s %s) -----\n%s", p.Name, filepath.Base(p.Bin), strings.Join(p.Args, " "), p.Tail(dumpLines))
}

// Tail returns the last lines of s, at most maxBytes of them (0: no
// bound), marking what it left out.
func Tail(s string, lines, maxBytes int) string {
	if maxBytes > 0 && len(s) > maxBytes {
		cut := len(s) - maxBytes
		for cut < len(s) && !utf8.RuneStart(s[cut]) {
			cut++
		}
		s = "…" + s[cut:]
	}
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = append([]string{fmt.Sprintf("… (%d earlier lines)", len(ls)-lines)}, ls[len(ls)-lines:]...)
	}
	return strings.Join(ls, "\n")
}
