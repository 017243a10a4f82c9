package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a child process in its own process group, so that stopping it
// also stops whatever it forked (nginx's workers).
type Proc struct {
	Name string
	Log  string // stdout+stderr file
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	once sync.Once
}

// PID is the process's id (taskset execs, so it is the program's own).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
		// Always kill the group: the leader may be gone while children live.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	})
}

// LogTail returns the last n lines of the process's output.
func (p *Proc) LogTail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(bytes.ToValidUTF8(b, []byte("?"))), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// ProcSpec describes a process to start.
type ProcSpec struct {
	Name string
	Argv []string
	Env  []string // added to the harness's environment
	Dir  string   // working directory; the log file goes here too ("" = Starter.LogDir)
	CPU  string   // taskset CPU list; "" = not pinned
	// Stamp prefixes every line the process writes (stdout and stderr)
	// with the CLOCK_MONOTONIC time the harness read it ("@<ns> "), so
	// that its log (a GODEBUG=gctrace=1 line, say) can be lined up with
	// the load generator's requests and the kernel's scheduler trace.
	Stamp bool
}

// Starter starts processes and remembers them, so that everything can be
// stopped at once on exit, Ctrl-C or test failure.
type Starter struct {
	LogDir  string
	Taskset string // path of taskset, "" = pinning unavailable

	mu    sync.Mutex
	procs []*Proc
}

// Start starts spec in a new process group; stdout and stderr go to a log
// file in the spec's Dir. If the harness dies first, the child gets
// SIGTERM (not SIGKILL: nginx's master then stops its workers too).
func (s *Starter) Start(spec ProcSpec) (*Proc, error) {
	argv := spec.Argv
	if spec.CPU != "" && s.Taskset != "" {
		argv = append([]string{s.Taskset, "-c", spec.CPU}, argv...)
	}
	logDir := spec.Dir
	if logDir == "" {
		logDir = s.LogDir
	}
	logPath := filepath.Join(logDir, sanitize(spec.Name)+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	var pr *os.File
	if spec.Stamp {
		var pw *os.File
		if pr, pw, err = os.Pipe(); err != nil {
			lf.Close()
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = pw, pw
		defer pw.Close()
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		if pr != nil {
			pr.Close()
		}
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p := &Proc{Name: spec.Name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	stamped := make(chan struct{})
	if pr != nil {
		go func() {
			defer close(stamped)
			defer pr.Close()
			stampLines(pr, lf)
		}()
	} else {
		close(stamped)
	}
	go func() {
		p.err = cmd.Wait()
		<-stamped // the pipe's last lines are in the log (its writers are gone)
		lf.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// stampLines copies r to w line by line, each line prefixed with "@<ns> ",
// the CLOCK_MONOTONIC time it was read.
func stampLines(r io.Reader, w io.Writer) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			fmt.Fprintf(w, "@%d %s", monoNow(), line)
			if line[len(line)-1] != '\n' {
				io.WriteString(w, "\n")
			}
		}
		if err != nil {
			return
		}
	}
}

// StopAll stops every process started and not yet stopped, newest first.
func (s *Starter) StopAll() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for i := len(procs) - 1; i >= 0; i-- {
		wg.Add(1)
		go func(p *Proc) { defer wg.Done(); p.Stop(2 * time.Second) }(procs[i])
	}
	wg.Wait()
}

// Forget drops stopped processes from the list.
func (s *Starter) Forget(ps ...*Proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := s.procs[:0]
	for _, p := range s.procs {
		drop := false
		for _, q := range ps {
			if p == q {
				drop = true
			}
		}
		if !drop {
			keep = append(keep, p)
		}
	}
	s.procs = keep
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// FreePort asks the kernel for an unused loopback port. Another process
// can take it before the child binds; callers retry startup on failure.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreePorts returns n distinct free ports.
func FreePorts(n int) ([]int, error) {
	// Hold all listeners open until the end so the ports differ.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// WaitHTTP polls url (with Host header host, if set) until it answers 200,
// the context ends, timeout passes, or one of procs exits.
func WaitHTTP(ctx context.Context, url, host string, timeout time.Duration, procs ...*Proc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Second}
	last := "no attempt"
	for {
		for _, p := range procs {
			if done, err := p.Exited(); done {
				return fmt.Errorf("%s exited (%v) while waiting for %s: %s", p.Name, err, url, p.LogTail(6))
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if host != "" {
			req.Host = host
		}
		resp, err := hc.Do(req)
		if err == nil {
			body := make([]byte, 256)
			nr, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body[:nr])))
		} else {
			last = simplifyErr(err).Error()
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s not ready after %v: last: %s", url, timeout, last)
			}
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
