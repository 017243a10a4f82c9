package sidecar

import (
	"context"
	"time"
)

// Trimming the executable's pages.
//
// Most of a sidecar's resident set is not its heap but pages of the weft
// binary itself (29 MB, with the control plane, the broker and the CLI in
// it): start-up touches init code, flag parsing and registrations spread
// over the text, and the pclntab and rodata, and each read fault on a file
// mapping maps up to 16 neighbouring page-cache pages (the kernel's
// fault-around, 64 KiB), so a page touched once brings its neighbours.
// Those pages stay mapped for the life of the process. Measured with
// make bench on Linux 6.18 (peak VmRSS per sidecar at 1000 req/s, median
// of 3 rounds): 24.5 and 24.7 MiB before, of which about 19 MiB
// file-backed; 15.7 MiB for the client sidecar and 17.2 for the server
// one (which the control plane also scrapes) when trimmed after start-up
// (bench/README.md). An idle sidecar goes from 21.4 to about 10 MiB.
//
// So once start-up is over, and then every trimInterval, the sidecar drops
// its mappings of the binary's read-only pages (MADV_DONTNEED on the r-xp
// and r--p mappings of /proc/self/exe): the pages stay in the page cache,
// shared with every other process running the binary, and whatever the
// sidecar still uses faults back in as a minor fault. What is resident is
// then the working set, not the start-up. Safety: only private read-only
// mappings of the executable holding no private (copy-on-write) pages are
// touched, so dropping a page can only ever re-read the same file bytes;
// nothing writable and no anonymous memory is touched. A trim costs about
// 2 ms of CPU (BenchmarkTrimExecutable: reading smaps, the madvise, and the
// minor faults that bring the working set back), nothing per request.
//
// The trim also switches fault-around off for those mappings (a
// write-protect userfaultfd registration, noFaultAround in trim_linux.go),
// so that what faults back is the pages in use rather than their 64 KiB
// neighbourhoods: peak VmRSS per sidecar at 1000 req/s (meshbench -paths
// weft,haproxy -rates 1000 -max=false -duration 5s -rounds 1, three
// alternating runs each) went from 19.7 / 19.5 MiB (HAProxy's hops: 14.4)
// to 11.7 / 11.6, of which about 7 MiB file-backed instead of 15, with
// the same CPU per request.
//
// What was measured and not kept: MADV_RANDOM does not stop fault-around
// on 6.18 (one read still maps 16 pages). MADV_COLD and MADV_PAGEOUT left
// an idle sidecar at 21.3 MiB: COLD only ages the pages, and PAGEOUT skips
// pages another process maps (the other weft processes) and would
// otherwise evict them from the page cache everyone shares. Lowering GOGC
// does not help: at 1000 req/s the heap stays under the runtime's 4 MiB
// minimum goal (one collection at most in the first 11 s), so more
// collections free nothing resident and touch more of the pclntab.
const (
	// trimSettle is how long after the first connection to the control
	// plane (start-up's last step: listeners are up by then) the first
	// trim waits, for the Hello and the registration to be processed;
	// trimDelay bounds the wait when the control plane is not reachable.
	trimSettle = 200 * time.Millisecond
	trimDelay  = 2 * time.Second
	// trimInterval is how often the trim repeats, dropping pages that
	// one-off work (the first export, a config change, an admin request)
	// touched since.
	trimInterval = 30 * time.Second
)

// trimLoop trims the executable's pages once start-up is over and then
// every trimInterval until ctx is done.
func (s *Sidecar) trimLoop(ctx context.Context) {
	if !s.startedUp(ctx) {
		return
	}
	t := time.NewTimer(0)
	defer t.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		released, err := trimExecutable()
		if err != nil {
			// Not fatal and not worth repeating: the platform or the
			// sandbox (no /proc) does not allow it.
			s.log.Debug("not trimming the executable's pages", "err", err)
			return
		}
		s.log.Debug("trimmed the executable's pages", "released_bytes", released, "took", time.Since(start))
		if err := faultAroundErr(); err != nil && first {
			s.log.Debug("fault-around stays on for the executable", "err", err)
		}
		first = false
		t.Reset(trimInterval)
	}
}

// startedUp waits until start-up is over: trimSettle after the sidecar
// first connects to the control plane, or trimDelay at most. It reports
// false when ctx ends first.
func (s *Sidecar) startedUp(ctx context.Context) bool {
	deadline := time.NewTimer(trimDelay)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond) // it happens once, within milliseconds
	defer poll.Stop()
	for !s.disc.Connected() {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return true
		case <-poll.C:
		}
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(trimSettle):
		return true
	}
}
