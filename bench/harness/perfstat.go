package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Wake-ups and syscalls per request: the issue (#14) asks for them beside
// HAProxy's, and unlike CPU time they hardly move with the neighbours on a
// shared machine.

// SnapshotSwitches reads voluntary plus involuntary context switches of
// every thread of every process in the trees rooted at roots (from
// /proc/PID/task/TID/status), by thread id.
func SnapshotSwitches(roots []int) map[int]int64 {
	s := map[int]int64{}
	for _, r := range roots {
		for _, p := range Descendants(r) {
			tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", p))
			for _, t := range tasks {
				tid, err := strconv.Atoi(filepath.Base(filepath.Dir(t)))
				b, rerr := os.ReadFile(t)
				if err == nil && rerr == nil {
					s[tid] = parseSwitches(string(b))
				}
			}
		}
	}
	return s
}

// BusiestThreads returns the n largest per-thread switch counts between
// two snapshots, largest first.
func BusiestThreads(before, after map[int]int64, n int) []int64 {
	var d []int64
	for t, a := range after {
		if a > before[t] {
			d = append(d, a-before[t])
		}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] > d[j] })
	return d[:min(n, len(d))]
}

// parseSwitches returns voluntary_ctxt_switches + nonvoluntary_ctxt_switches
// of one /proc/.../status.
func parseSwitches(status string) int64 {
	var n int64
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "voluntary_ctxt_switches" && k != "nonvoluntary_ctxt_switches") {
			continue
		}
		x, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err == nil {
			n += x
		}
	}
	return n
}

// SwitchDelta is the switches between two snapshots (processes that
// appeared count from zero).
func SwitchDelta(before, after map[int]int64) int64 {
	var n int64
	for p, a := range after {
		if a >= before[p] {
			n += a - before[p]
		}
	}
	return n
}

// PerfStat counts syscalls of a set of processes with `perf stat` while a
// run lasts (meshbench -perf). Tracing syscalls costs the traced process a
// little per syscall, so CPU figures of a -perf run are slightly high for
// every path alike.
type PerfStat struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// StartPerfStat attaches perf to pids; nil when perf is missing or fails.
func StartPerfStat(pids []int) *PerfStat {
	bin, err := exec.LookPath("perf")
	if err != nil || len(pids) == 0 {
		return nil
	}
	ps := make([]string, len(pids))
	for i, p := range pids {
		ps[i] = strconv.Itoa(p)
	}
	p := &PerfStat{}
	p.cmd = exec.Command(bin, "stat", "-x", ",", "-e", "syscalls:sys_enter_*", "-p", strings.Join(ps, ","))
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		return nil
	}
	time.Sleep(150 * time.Millisecond) // attached before the run starts
	return p
}

// Stop ends perf and returns the syscall count by syscall name (nil when
// unknown).
func (p *PerfStat) Stop() map[string]int64 {
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	_ = p.cmd.Wait()
	return parsePerfCSV(p.out.String())
}

// parsePerfCSV reads the non-zero syscalls:sys_enter_NAME counts of
// `perf stat -x ,` output.
func parsePerfCSV(out string) map[string]int64 {
	m := map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		name, ok := strings.CutPrefix(f[2], "syscalls:sys_enter_")
		if n, err := strconv.ParseInt(f[0], 10, 64); ok && err == nil && n > 0 {
			m[name] = n
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
