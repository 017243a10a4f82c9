package harness

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTail(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		lines    int
		maxBytes int
		want     string
	}{
		{"empty", "", 3, 0, ""},
		{"fewer lines", "a\nb\n", 3, 0, "a\nb"},
		{"exactly", "a\nb\nc\n", 3, 0, "a\nb\nc"},
		{"more lines", "a\nb\nc\nd\ne\n", 2, 0, "… (3 earlier lines)\nd\ne"},
		{"no trailing newline", "a\nb\nc", 2, 0, "… (1 earlier lines)\nb\nc"},
		{"bytes bound", "0123456789\nabcdef\n", 10, 9, "…9\nabcdef"},
		{"bytes then lines", "aa\nbb\ncc\ndd\n", 1, 6, "… (1 earlier lines)\ndd"},
		{"bytes bound inside a rune", "xé\n", 10, 2, "…"},
		{"bytes bound off", strings.Repeat("x", 100), 10, 0, strings.Repeat("x", 100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Tail(tt.in, tt.lines, tt.maxBytes); got != tt.want {
				t.Errorf("Tail(%q, %d, %d) = %q, want %q", tt.in, tt.lines, tt.maxBytes, got, tt.want)
			}
		})
	}
}

func TestPollEvery(t *testing.T) {
	tests := []struct {
		name    string
		trueAt  int // the call on which cond first returns true; 0: never
		d       time.Duration
		want    bool
		atLeast int // calls
	}{
		{"at once", 1, time.Second, true, 1},
		{"third call", 3, time.Second, true, 3},
		{"never", 0, 30 * time.Millisecond, false, 2},
		{"zero patience still asks", 1, 0, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			got := PollEvery(tt.d, time.Millisecond, func() bool {
				calls++
				return calls == tt.trueAt
			})
			if got != tt.want || calls < tt.atLeast || (tt.want && calls != tt.trueAt) {
				t.Errorf("PollEvery = %v after %d calls, want %v after at least %d", got, calls, tt.want, tt.atLeast)
			}
		})
	}
}

func TestFreePort(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := FreePort(t)
		if p < portLow || p >= portHigh {
			t.Fatalf("port %d outside [%d, %d)", p, portLow, portHigh)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", Addr(p))
		if err != nil {
			t.Fatalf("port %d handed out but not free: %v", p, err)
		}
		if !Dialable(Addr(p)) {
			t.Errorf("Dialable(%s) = false while listening", Addr(p))
		}
		ln.Close()
	}
}

func TestProc(t *testing.T) {
	tests := []struct {
		name   string
		script string
		stop   func(p *Proc)
		code   int
		output string
	}{
		{"exits by itself", "echo out; echo err >&2; exit 3", func(*Proc) {}, 3, "out\nerr\n"},
		{"stopped by SIGTERM", "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.01; done", func(p *Proc) {
			PollEvery(5*time.Second, 10*time.Millisecond, func() bool { return p.ReadOutput() != "" })
			p.Stop(5 * time.Second)
		}, 0, "up\nbye\n"},
		{"killed", "echo up; exec sleep 60", func(p *Proc) {
			PollEvery(5*time.Second, 10*time.Millisecond, func() bool { return p.ReadOutput() != "" })
			p.Kill()
		}, -1, "up\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Start(t, "sh", "/bin/sh", "-c", tt.script)
			tt.stop(p)
			if !p.WaitExit(5 * time.Second) {
				t.Fatal("still running")
			}
			if p.ExitCode() != tt.code || p.ReadOutput() != tt.output {
				t.Errorf("exit %d, output %q; want %d, %q", p.ExitCode(), p.ReadOutput(), tt.code, tt.output)
			}
		})
	}
}

// TestProcGroupKilledAtCleanup: a process's children (the app of `weft
// run`) die with it at the test's cleanup.
func TestProcGroupKilledAtCleanup(t *testing.T) {
	var child int
	t.Run("inner", func(t *testing.T) {
		p := Start(t, "parent", "/bin/sh", "-c", "sleep 60 & echo $!; wait")
		PollEvery(5*time.Second, 10*time.Millisecond, func() bool { return strings.HasSuffix(p.ReadOutput(), "\n") })
		if _, err := fmt.Sscan(p.ReadOutput(), &child); err != nil || child == 0 {
			t.Fatalf("no child pid in %q: %v", p.ReadOutput(), err)
		}
	})
	if !PollEvery(5*time.Second, 10*time.Millisecond, func() bool { return gone(child) }) {
		t.Errorf("child %d still alive after its group's cleanup", child)
	}
}

// gone reports whether pid has exited: no such process, or a zombie
// waiting for whoever reaps orphans here.
func gone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state …; comm may hold spaces and parentheses.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}
