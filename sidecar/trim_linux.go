package sidecar

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

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
	// Before dropping the pages, so that what faults back is the working
	// set and not its 64 KiB neighbourhoods (see noFaultAround). Without
	// it (an older kernel, a seccomp filter) the trim still works.
	noFaultAround(regions)
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

// Switching off fault-around for the executable.
//
// A read fault on a file mapping maps not just the page but every page of
// its 64 KiB-aligned neighbourhood already in the page cache (fault-around,
// /sys/kernel/debug/fault_around_bytes). For the weft binary that is what
// most of a sidecar's resident set was: at 1000 req/s (meshbench, weft
// path) a sidecar touches 2.2 MiB of text and 1.6 MiB of read-only data in
// a second (smaps Referenced after clear_refs) but had 6.4 and 7.7 MiB of
// them mapped, refaulted within 2 s of each trim. MADV_RANDOM does not
// stop it (6.18); the kernel does skip fault-around on a range registered
// with userfaultfd for write protection (uffd_disable_fault_around), and
// since Linux 6.7 such a registration with UFFD_FEATURE_WP_ASYNC is allowed
// on any mapping, file-backed included, and needs no handler: the kernel
// resolves write faults itself, and the text and read-only data are never
// written anyway. So the sidecar opens a userfaultfd (UFFD_USER_MODE_ONLY:
// no privilege needed), registers the executable's read-only mappings in
// write-protect mode and keeps the descriptor open for its life (closing
// it would drop the registration). Nothing else changes: no event is ever
// delivered, nothing is write-protected (UFFDIO_WRITEPROTECT is never
// called), and a read fault maps the one page it needs. The cost is one
// minor fault per 4 KiB page of the working set instead of one per 64 KiB
// after each trim (about 1,500 for a sidecar's 6 MiB, once).
var faultAround struct {
	sync.Mutex
	fd  int   // the userfaultfd, 0 until opened
	err error // why not, once it failed
}

// The userfaultfd ABI (linux/userfaultfd.h).
const (
	uffdUserModeOnly   = 1       // userfaultfd(2) flag: user-mode faults only
	uffdAPI            = 0xAA    // uffdio_api.api
	uffdFeatureWPAsync = 1 << 15 // UFFD_FEATURE_WP_ASYNC, Linux 6.7
	uffdioAPI          = 0xc018aa3f
	uffdioRegister     = 0xc020aa00
	uffdRegisterModeWP = 1 << 1
)

type uffdioAPIArg struct{ api, features, ioctls uint64 }

type uffdioRegisterArg struct{ start, len, mode, ioctls uint64 }

// faultAroundErr is why fault-around could not be switched off, nil if
// it was or was not tried yet.
func faultAroundErr() error {
	faultAround.Lock()
	defer faultAround.Unlock()
	return faultAround.err
}

// noFaultAround registers regions with the process's userfaultfd (opening
// it the first time), which switches fault-around off for them. It reports
// why not when it cannot, and remembers that. Registering a range again
// is a no-op.
func noFaultAround(regions []region) error {
	fa := &faultAround
	fa.Lock()
	defer fa.Unlock()
	if fa.err != nil {
		return fa.err
	}
	if fa.fd == 0 {
		fd, err := openWPAsyncUffd()
		if err != nil {
			fa.err = err
			return err
		}
		fa.fd = fd
	}
	for _, r := range regions {
		reg := uffdioRegisterArg{start: uint64(r.start), len: uint64(r.end - r.start), mode: uffdRegisterModeWP}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fa.fd), uffdioRegister, uintptr(unsafe.Pointer(&reg))); errno != 0 {
			return fmt.Errorf("userfaultfd: register %#x-%#x: %w", r.start, r.end, errno)
		}
	}
	return nil
}

// openWPAsyncUffd opens a userfaultfd with asynchronous write protection.
func openWPAsyncUffd() (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly, 0, 0)
	if errno != 0 {
		return 0, fmt.Errorf("userfaultfd: %w", errno)
	}
	api := uffdioAPIArg{api: uffdAPI, features: uffdFeatureWPAsync}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, uffdioAPI, uintptr(unsafe.Pointer(&api))); errno != 0 {
		unix.Close(int(fd))
		return 0, fmt.Errorf("userfaultfd: UFFDIO_API with WP_ASYNC: %w", errno)
	}
	if api.features&uffdFeatureWPAsync == 0 {
		unix.Close(int(fd))
		return 0, errors.New("userfaultfd: no WP_ASYNC")
	}
	return int(fd), nil
}
