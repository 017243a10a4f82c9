package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A cgroup v2 directory of the instance: CPU use from cpu.stat's
// usage_usec against the quota in cpu.max (or every CPU), raised to the
// share of time its tasks waited for a CPU (cpu.pressure, some avg10), so
// that an instance starved by its neighbours counts as busy too; memory
// pressure as the larger of memory.current over memory.max and
// memory.pressure's some avg10.

type cgroupState struct {
	usage uint64 // usage_usec at the last sample
	at    time.Time
}

func (c *cgroupState) sample(dir string, now time.Time, cpus float64) (cpu, mem float64, err error) {
	cpu, mem = -1, -1
	usage, err := statField(filepath.Join(dir, "cpu.stat"), "usage_usec")
	if err != nil {
		c.at = time.Time{}
		return cpu, mem, err
	}
	allowance := cpus
	if b, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 && f[0] != "max" {
			q, err1 := strconv.ParseFloat(f[0], 64)
			p, err2 := strconv.ParseFloat(f[1], 64)
			if err1 == nil && err2 == nil && q > 0 && p > 0 {
				allowance = min(q/p, cpus)
			}
		}
	}
	if !c.at.IsZero() && usage >= c.usage {
		if dt := now.Sub(c.at).Seconds(); dt > 0 {
			cpu = min(float64(usage-c.usage)/1e6/(dt*allowance), 1)
		}
	}
	c.usage, c.at = usage, now
	if cpu >= 0 {
		if p, err := pressure(filepath.Join(dir, "cpu.pressure")); err == nil {
			cpu = max(cpu, p)
		}
	}
	if cur, err := readUint(filepath.Join(dir, "memory.current")); err == nil {
		mem = 0
		if lim, err := readUint(filepath.Join(dir, "memory.max")); err == nil && lim > 0 {
			mem = min(float64(cur)/float64(lim), 1)
		}
		if p, err := pressure(filepath.Join(dir, "memory.pressure")); err == nil {
			mem = max(mem, p)
		}
	}
	return cpu, mem, nil
}

// statField reads "key value" lines (cpu.stat) for key.
func statField(path, key string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
		if ok && string(k) == key {
			return strconv.ParseUint(string(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

// pressure reads a PSI file's "some avg10=N" as a fraction.
func pressure(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		f := strings.Fields(string(line))
		if len(f) < 2 || f[0] != "some" {
			continue
		}
		if v, ok := strings.CutPrefix(f[1], "avg10="); ok {
			p, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return min(max(p/100, 0), 1), nil
		}
	}
	return 0, fmt.Errorf("%s: no some avg10", path)
}

// readUint reads a file holding one number ("max" is an error).
func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// ownCgroup finds this process's cgroup v2 directory: the "0::" line of
// /proc/self/cgroup under the cgroup2 mount in /proc/self/mountinfo.
func ownCgroup(procRoot string) (string, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, "self", "cgroup"))
	if err != nil {
		return "", err
	}
	rel := ""
	for line := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			rel = p
		}
	}
	if rel == "" {
		return "", errors.New("this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")
	}
	f, err := os.Open(filepath.Join(procRoot, "self", "mountinfo"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "id parent major:minor root mountpoint options… - fstype source opts"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if fs := strings.Fields(pre); len(fs) >= 5 {
			return filepath.Join(fs[4], rel), nil
		}
	}
	return "", ErrNoCgroup
}

func checkCgroup(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "cpu.stat")); err != nil {
		return fmt.Errorf("%w (%v)", ErrNoCgroup, err)
	}
	return nil
}
