package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// trimExecutable drops this process's mappings of the executable's
// read-only pages (see trimLoop) and returns how many resident bytes they
// held.
func trimExecutable() (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return 0, fmt.Errorf("stat /proc/self/exe: %w", err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	regions, err := exeRegions(f, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	f.Close()
	if err != nil {
		return 0, err
	}
	if len(regions) == 0 {
		return 0, fmt.Errorf("no read-only mapping of the executable (inode %d) in /proc/self/smaps", st.Ino)
	}
	var released int64
	for _, r := range regions {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("madvise %#x-%#x: %w", r.start, r.end, errno)
		}
		released += r.rss
	}
	return released, nil
}

// region is one mapping that may be trimmed.
type region struct {
	start, end uintptr
	rss        int64 // bytes
}

// exeRegions reads smaps (proc(5)) and returns the mappings of the file
// (major:minor, inode) that are private and read-only (r-xp, r--p) and
// hold no anonymous page. An anonymous page in a file mapping is a private
// copy (a relocation in a position-independent executable, a debugger's
// breakpoint): dropping it would bring back the file's bytes, so such a
// mapping is left alone.
func exeRegions(smaps io.Reader, major, minor uint32, ino uint64) ([]region, error) {
	var (
		out []region
		cur *region // the current mapping, if a candidate
		ok  bool    // cur has no anonymous page so far
	)
	flush := func() {
		if cur != nil && ok {
			out = append(out, *cur)
		}
		cur = nil
	}
	sc := bufio.NewScanner(smaps)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		key, val, isField := strings.Cut(line, ":")
		if isField && !strings.Contains(key, " ") && !strings.Contains(key, "-") {
			if cur == nil {
				continue
			}
			switch key {
			case "Rss":
				cur.rss = kB(val)
			case "Anonymous":
				if kB(val) != 0 {
					ok = false
				}
			}
			continue
		}
		// A mapping's header: start-end perms offset major:minor inode [path].
		flush()
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if f[1] != "r-xp" && f[1] != "r--p" {
			continue
		}
		if n, err := strconv.ParseUint(f[4], 10, 64); err != nil || n != ino {
			continue
		}
		maj, mnr, found := strings.Cut(f[3], ":")
		if !found || !hexIs(maj, major) || !hexIs(mnr, minor) {
			continue
		}
		lo, hi, found := strings.Cut(f[0], "-")
		if !found {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		cur, ok = &region{start: uintptr(start), end: uintptr(end)}, true
	}
	flush()
	return out, sc.Err()
}

func hexIs(s string, v uint32) bool {
	n, err := strconv.ParseUint(s, 16, 32)
	return err == nil && uint32(n) == v
}

// kB parses a smaps value ("  8828 kB") into bytes; -1 if malformed.
func kB(v string) int64 {
	f := strings.Fields(v)
	if len(f) == 0 {
		return -1
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return -1
	}
	return n << 10
}
