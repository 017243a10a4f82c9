package sidecar

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Giving memory back after a burst.
//
// Go keeps the heap it grew: spans freed by a collection (and the stacks
// of goroutines that ended) stay mapped for reuse, and the background
// scavenger returns only what lies over about 110% of the heap goal, a
// goal set by the peak. A sidecar that opened 2,000 kept-alive connections
// in a second ran 1,000–2,000 exchanges' goroutines at once (8 KiB of
// stack each until they park, proxy/h1 parkAfter) and then sat idle with
// the heap of that second: +18.4 MiB RSS over 10 connections, of which
// +15.6 MiB anonymous, while what the parked connections really hold is
// about 1.4 KiB each (go run ./bench/idleconns). A fixed GOMEMLIMIT=12MiB
// took that to +7.2 MiB but made the runtime collect continuously under
// load and collapsed throughput.
//
// So every releaseTick (releaseFastTick from a burst until its follow-up)
// the sidecar looks at its own CPU use and heap, and when the process used
// less than releaseQuietCPU of a core since the last look, and either more
// than releaseFree bytes of its heap are free but not returned to the OS
// or it was busy (over releaseBusyCPU) since the last release, it collects
// twice (the second empties the sync.Pools the first only moved to their
// victim caches: conns, buffers) and returns every free page
// (debug.FreeOSMemory), then drops the executable's pages that the burst
// and the collection touched (trimExecutable, when TrimExecutable:
// otherwise they stay mapped until the next periodic trim). With 2,000
// idle connections (go run ./bench/idleconns, two runs each, the binary
// before this in the same runs) the client sidecar went from +18.8 MiB RSS
// over 10 connections (+16.1 MiB anonymous) to -7.5 (+4.4 anonymous), the
// server sidecar from +5.1 (+2.1) to -9.8 (+1.3).
//
// Under steady load it never fires: a process over releaseQuietCPU is not
// quiet, and one that never goes over releaseBusyCPU (a steady trickle)
// releases only a large free heap, which its collections are not using.
// The gap between the two bounds keeps a steady load near either from
// flapping. A release for a burst comes at most once per releaseMinGap: it
// costs one or two milliseconds of CPU (and the minor faults that bring
// back what the next burst uses), so on traffic that starts and stops all
// the time it costs at most a few milliseconds a second. Each is followed by one
// more at the first quiet look releaseAgain later: a burst's connections
// park parkAfter (1 s, proxy/h1) after their last request, and only then
// do their goroutines' stacks and conns come free (about 4 MiB for 1,000
// connections, most of it left after the first release); the looks then
// come every releaseFastTick, so the follow-up lands about 1.5 s after the
// burst. A look costs a getrusage and a runtime/metrics read: once a
// second when nothing happens.
const (
	releaseTick     = time.Second
	releaseFastTick = 250 * time.Millisecond
	releaseFree     = 4 << 20
	releaseQuietCPU = 0.02
	releaseBusyCPU  = 0.05
	releaseMinGap   = time.Second
	releaseAgain    = time.Second
)

// releaser decides when to release; its zero value has never looked.
type releaser struct {
	lastAt, lastRelease time.Time
	lastCPU             time.Duration
	busy                bool      // a look since the last release saw releaseBusyCPU
	again               time.Time // the follow-up release, not before then (zero: none)
}

// due records one look (at now, with the process's total CPU time and the
// heap's free, unreleased bytes) and reports whether to release.
func (r *releaser) due(now time.Time, cpu time.Duration, free uint64) bool {
	prevAt, prevCPU := r.lastAt, r.lastCPU
	r.lastAt, r.lastCPU = now, cpu
	wall := now.Sub(prevAt)
	if prevAt.IsZero() || wall <= 0 {
		return false
	}
	used := float64(cpu-prevCPU) / float64(wall)
	if used > releaseBusyCPU {
		r.busy = true
	}
	if used > releaseQuietCPU {
		return false
	}
	burst := r.busy && now.Sub(r.lastRelease) >= releaseMinGap
	followUp := !r.again.IsZero() && !now.Before(r.again)
	if free < releaseFree && !burst && !followUp {
		return false
	}
	r.again = time.Time{}
	if burst {
		r.again = now.Add(releaseAgain)
	}
	r.lastRelease, r.busy = now, false
	return true
}

// tick is how long to wait for the next look.
func (r *releaser) tick() time.Duration {
	if r.busy || !r.again.IsZero() {
		return releaseFastTick
	}
	return releaseTick
}

// releaseLoop gives free heap back to the OS after a burst, until ctx is
// done (see releaser).
func (s *Sidecar) releaseLoop(ctx context.Context) {
	if _, err := processCPU(); err != nil {
		s.log.Debug("not releasing idle memory", "err", err)
		return
	}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	var r releaser
	g := gcTarget{high: s.cfg.GCPercent}
	t := time.NewTimer(r.tick())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cpu, err := processCPU()
		if err != nil {
			return
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return
		}
		free := sample[0].Value.Uint64()
		if g.high > 0 && sample[1].Value.Kind() == metrics.KindUint64 {
			if pct := g.next(time.Now(), sample[1].Value.Uint64()); pct > 0 {
				debug.SetGCPercent(pct)
			}
		}
		if r.due(time.Now(), cpu, free) {
			s.release(free)
			// The release's own CPU is not load.
			if cpu, err := processCPU(); err == nil {
				r.lastCPU = cpu
			}
		}
		t.Reset(r.tick())
	}
}

// release collects, returns the free heap to the OS and trims the
// executable's pages.
func (s *Sidecar) release(free uint64) {
	start := time.Now()
	runtime.GC()
	debug.FreeOSMemory()
	var trimmed int64
	if s.cfg.TrimExecutable {
		trimmed, _ = trimExecutable()
	}
	s.log.Debug("released idle memory", "free_bytes", free, "trimmed_bytes", trimmed, "took", time.Since(start))
}
