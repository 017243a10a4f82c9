package load

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The app's process tree from /proc: the app and every descendant (a shell
// script's children, a server's workers). The tree is found by reading every
// process's parent from /proc/N/stat, every treeRescan samples (a host has
// a few hundred processes: about a millisecond); between rescans only the
// members' own stat files are read. CPU time is utime+stime of the members
// alive at both samples, so a child that lives and dies between two samples
// is missed: a measure of a steadily busy app, which is what balancing
// needs.

// CPU time alone under-reads an app starved by its neighbours: spinning on
// every CPU of a saturated host it gets, and so uses, only a part of them.
// So the sampler also counts, ten times a second, the tree's threads that
// are runnable (state R: running or waiting for a CPU), and the CPU figure
// is the larger of the time used and that demand, in CPUs over the CPUs
// there are. An idle server's threads sleep; a saturated one's are R
// however little CPU it is given.

// treeRescan: the tree is looked for again every this many samples.
const treeRescan = 5

// maxTree bounds the members followed.
const maxTree = 4096

// clockTicks is USER_HZ, the unit of /proc/N/stat's times: 100 on every
// Linux architecture Go builds for (sysconf(_SC_CLK_TCK) without cgo).
const clockTicks = 100

type procState struct {
	root    int
	members []int
	last    map[int]uint64 // CPU ticks per member at the last sample
	at      time.Time

	runnable, probes int // runnable threads seen over probes since the last sample
}

// maxProbeThreads bounds the stat files one probe reads (an app with
// thousands of threads): past it, the count is scaled from those read.
const maxProbeThreads = 256

// probe counts the members' runnable threads once.
func (p *procState) probe(procRoot string) {
	read, seen, runnable := 0, 0, 0
	for _, m := range p.members {
		dir := filepath.Join(procRoot, strconv.Itoa(m), "task")
		tasks, err := os.ReadDir(dir)
		if err != nil {
			tasks = nil
		}
		if len(tasks) == 0 {
			seen++
			if read < maxProbeThreads {
				read++
				if st, err := readState(filepath.Join(procRoot, strconv.Itoa(m), "stat")); err == nil && st == 'R' {
					runnable++
				}
			}
			continue
		}
		for _, t := range tasks {
			seen++
			if read == maxProbeThreads {
				continue
			}
			read++
			if st, err := readState(filepath.Join(dir, t.Name(), "stat")); err == nil && st == 'R' {
				runnable++
			}
		}
	}
	if read > 0 {
		p.runnable += runnable * seen / read
	}
	p.probes++
}

// readState returns the state letter of a stat file.
func readState(path string) (byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, errStat
	}
	return b[i+2], nil
}

// sample returns the tree's CPU use since the last sample as a fraction
// of cpus CPUs (-1 on the first sample).
func (p *procState) sample(procRoot string, pid int, now time.Time, cpus float64, rescan bool) (float64, error) {
	if pid != p.root {
		*p = procState{root: pid}
		rescan = true
	}
	if rescan || len(p.members) == 0 {
		p.members = tree(procRoot, pid)
	}
	cur := make(map[int]uint64, len(p.members))
	var delta uint64
	for _, m := range p.members {
		ticks, _, err := readStat(procRoot, m)
		if err != nil {
			if m == pid {
				p.last, p.at = nil, time.Time{}
				return -1, fmt.Errorf("app process %d: %w", pid, err)
			}
			continue // exited
		}
		cur[m] = ticks
		if old, ok := p.last[m]; ok && ticks >= old {
			delta += ticks - old
		}
	}
	first := p.at.IsZero()
	dt := now.Sub(p.at).Seconds()
	p.last, p.at = cur, now
	demand := 0.0
	if p.probes > 0 {
		demand = float64(p.runnable) / float64(p.probes) / cpus
	}
	p.runnable, p.probes = 0, 0
	if first || dt <= 0 {
		return -1, nil
	}
	return min(max(float64(delta)/clockTicks/(dt*cpus), demand), 1), nil
}

// tree lists pid and its descendants (pid alone when /proc cannot be read).
func tree(procRoot string, pid int) []int {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return []int{pid}
	}
	children := map[int][]int{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		if _, ppid, err := readStat(procRoot, n); err == nil {
			children[ppid] = append(children[ppid], n)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out) && len(out) < maxTree; i++ {
		out = append(out, children[out[i]]...)
	}
	return out[:min(len(out), maxTree)]
}

var errStat = errors.New("unreadable stat")

// readStat reads utime+stime and the parent of a process from
// /proc/N/stat: "pid (comm) state ppid … utime stime …", where comm may
// hold spaces and parentheses, so fields count from the last ')'.
func readStat(procRoot string, pid int) (ticks uint64, ppid int, err error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errStat
	}
	f := bytes.Fields(b[i+1:])
	// f[0] state, f[1] ppid, … f[11] utime, f[12] stime.
	if len(f) < 13 {
		return 0, 0, errStat
	}
	pp, err1 := strconv.Atoi(string(f[1]))
	ut, err2 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err3 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, errStat
	}
	return ut + st, pp, nil
}
