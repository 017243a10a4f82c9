package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProcStat holds the fields of /proc/<pid>/stat the harness uses.
type ProcStat struct {
	PID   int
	Comm  string // without the surrounding parentheses
	State byte
	PPID  int
	UTime uint64 // clock ticks
	STime uint64 // clock ticks
	RSS   int64  // pages
}

// CPUTicks is user plus system time in clock ticks.
func (s ProcStat) CPUTicks() uint64 { return s.UTime + s.STime }

// ParseStat parses the contents of /proc/<pid>/stat. The second field, the
// command name, is wrapped in parentheses and may itself contain spaces and
// parentheses ("(my (odd) name)"), so the fields after it are located from
// the last ')' in the line, which is how the kernel intends it to be read.
func ParseStat(data string) (ProcStat, error) {
	var s ProcStat
	data = strings.TrimRight(data, "\n")
	open := strings.IndexByte(data, '(')
	closeIdx := strings.LastIndexByte(data, ')')
	if open < 0 || closeIdx < open {
		return s, fmt.Errorf("procstat: no (comm) in %q", truncate(data, 80))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(data[:open]))
	if err != nil {
		return s, fmt.Errorf("procstat: bad pid: %w", err)
	}
	s.PID = pid
	s.Comm = data[open+1 : closeIdx]
	// rest starts with field 3 (state).
	rest := strings.Fields(data[closeIdx+1:])
	// Fields by 1-based number in proc(5): 3 state, 4 ppid, 14 utime,
	// 15 stime, 24 rss. rest[0] is field 3.
	const (
		fState = 3
		fPPID  = 4
		fUTime = 14
		fSTime = 15
		fRSS   = 24
	)
	field := func(n int) (string, error) {
		i := n - fState
		if i >= len(rest) {
			return "", fmt.Errorf("procstat: %d fields after comm, need field %d", len(rest), n)
		}
		return rest[i], nil
	}
	st, err := field(fState)
	if err != nil {
		return s, err
	}
	if len(st) != 1 {
		return s, fmt.Errorf("procstat: bad state %q", st)
	}
	s.State = st[0]
	parse := func(n int) (uint64, error) {
		f, err := field(n)
		if err != nil {
			return 0, err
		}
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("procstat: field %d: %w", n, err)
		}
		return v, nil
	}
	ppid, err := parse(fPPID)
	if err != nil {
		return s, err
	}
	s.PPID = int(ppid)
	if s.UTime, err = parse(fUTime); err != nil {
		return s, err
	}
	if s.STime, err = parse(fSTime); err != nil {
		return s, err
	}
	rssField, err := field(fRSS)
	if err != nil {
		return s, err
	}
	// rss is signed in the kernel's format string (%ld).
	if s.RSS, err = strconv.ParseInt(rssField, 10, 64); err != nil {
		return s, fmt.Errorf("procstat: rss: %w", err)
	}
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ReadStat reads and parses /proc/<pid>/stat.
func ReadStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, err
	}
	return ParseStat(string(b))
}

// Mem is what a process holds in memory, in bytes.
type Mem struct {
	RSS  int64 // VmRSS: every page mapped, shared or not
	Anon int64 // RssAnon: heap, stacks (0 when the kernel does not say)
	File int64 // RssFile: mapped file pages, the executable's included
	// PSS is the proportional set size (smaps_rollup): each page divided
	// by the number of processes mapping it, so the executable's pages,
	// shared by every process running it, count once across them. -1 when
	// unreadable.
	PSS int64
}

// ParseStatusMem extracts VmRSS, RssAnon and RssFile, in bytes, from the
// contents of /proc/<pid>/status; VmRSS is required. PSS is left at -1.
func ParseStatusMem(status string) (Mem, error) {
	m := Mem{PSS: -1}
	rss, ok, err := kbField(status, "VmRSS:")
	if err != nil {
		return m, err
	}
	if !ok {
		return m, errors.New("procstat: no VmRSS line")
	}
	m.RSS = rss
	if m.Anon, _, err = kbField(status, "RssAnon:"); err != nil {
		return m, err
	}
	if m.File, _, err = kbField(status, "RssFile:"); err != nil {
		return m, err
	}
	return m, nil
}

// ParsePSS extracts Pss, in bytes, from the contents of
// /proc/<pid>/smaps_rollup.
func ParsePSS(rollup string) (int64, error) {
	v, ok, err := kbField(rollup, "Pss:")
	if err == nil && !ok {
		err = errors.New("procstat: no Pss line")
	}
	return v, err
}

// kbField finds the line starting with key ("VmRSS:") and returns its value
// in bytes (the kernel writes "1234 kB").
func kbField(text, key string) (int64, bool, error) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, key)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 1 {
			return 0, false, nil
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("procstat: %s %w", key, err)
		}
		unit := int64(1)
		if len(f) > 1 {
			switch strings.ToLower(f[1]) {
			case "kb":
				unit = 1024
			case "mb":
				unit = 1024 * 1024
			}
		}
		return v * unit, true, nil
	}
	return 0, false, nil
}

// ReadMem reads pid's resident memory from /proc/<pid>/status and its PSS
// from /proc/<pid>/smaps_rollup (PSS -1 when that is unreadable: kernels
// before 4.14, or no permission).
func ReadMem(pid int) (Mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	m, err := ParseStatusMem(string(b))
	if err != nil {
		return m, err
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		if pss, err := ParsePSS(string(b)); err == nil {
			m.PSS = pss
		}
	}
	return m, nil
}

// Descendants returns pid and all of its live descendants (children,
// grandchildren, ...), found by scanning /proc for parent links.
func Descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadStat(p)
		if err != nil {
			continue
		}
		children[st.PPID] = append(children[st.PPID], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

var (
	clkTckOnce sync.Once
	clkTck     int64
)

// ClockTicks returns USER_HZ, the unit of utime/stime in /proc/<pid>/stat,
// read from the auxiliary vector (AT_CLKTCK); 100 if that is unreadable.
func ClockTicks() int64 {
	clkTckOnce.Do(func() {
		clkTck = 100
		b, err := os.ReadFile("/proc/self/auxv")
		if err != nil {
			return
		}
		if v, ok := auxvValue(b, 17 /* AT_CLKTCK */); ok && v > 0 {
			clkTck = int64(v)
		}
	})
	return clkTck
}

// auxvValue finds key in a 64-bit little-endian auxiliary vector.
func auxvValue(b []byte, key uint64) (uint64, bool) {
	for i := 0; i+16 <= len(b); i += 16 {
		k := binary.LittleEndian.Uint64(b[i:])
		v := binary.LittleEndian.Uint64(b[i+8:])
		if k == 0 {
			break
		}
		if k == key {
			return v, true
		}
	}
	return 0, false
}

// CPUSnapshot maps pid to cumulative CPU ticks.
type CPUSnapshot map[int]uint64

// SnapshotCPU reads utime+stime of every process in the trees rooted at
// roots (a root and its live descendants: nginx's workers, for instance).
func SnapshotCPU(roots []int) CPUSnapshot {
	s := CPUSnapshot{}
	for _, r := range roots {
		for _, p := range Descendants(r) {
			if st, err := ReadStat(p); err == nil {
				s[p] = st.CPUTicks()
			}
		}
	}
	return s
}

// CPUDelta returns the CPU seconds spent between two snapshots: processes
// that appeared in between count from zero, ones that vanished are dropped
// (their last ticks are unknowable from /proc).
func CPUDelta(before, after CPUSnapshot) float64 {
	var ticks uint64
	for p, a := range after {
		b := before[p]
		if a >= b {
			ticks += a - b
		}
	}
	return float64(ticks) / float64(ClockTicks())
}

// MemSampler records the highest RSS and PSS of a set of processes while a
// run lasts. A process whose resident set moves within the run (a weft
// sidecar drops its mappings of the executable's pages periodically, and
// they fault back as they are used) is then reported at its highest, not
// wherever the run happens to end.
type MemSampler struct {
	stop chan struct{}
	done chan struct{}
	peak map[int]Mem // written by the sampling goroutine until done
}

// SampleMem reads the memory of pids every interval until Stop.
func SampleMem(pids []int, interval time.Duration) *MemSampler {
	s := &MemSampler{stop: make(chan struct{}), done: make(chan struct{}), peak: map[int]Mem{}}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			for _, p := range pids {
				m, err := ReadMem(p)
				if err != nil {
					continue
				}
				if old, ok := s.peak[p]; ok {
					m = PeakMem(old, m)
				}
				s.peak[p] = m
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the highest figures seen per pid.
func (s *MemSampler) Stop() map[int]Mem {
	close(s.stop)
	<-s.done
	return s.peak
}

// PeakMem is the field-wise maximum of a and b (PSS -1, unknown, loses to
// any known figure).
func PeakMem(a, b Mem) Mem {
	return Mem{RSS: max(a.RSS, b.RSS), Anon: max(a.Anon, b.Anon), File: max(a.File, b.File), PSS: max(a.PSS, b.PSS)}
}
