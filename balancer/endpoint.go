package balancer

import (
	"math"
	"time"
)

// What an Endpoint learns from the requests sent to it, for the latency- and
// load-aware pickers: a peak-EWMA of its response time (Observe), a count of
// consecutive failures, and the last load report its sidecar sent back
// (ReportLoad). Everything is atomics, written by the request pipeline and
// read by Pick, with no lock and no allocation.

// epoch anchors Mono: time.Since reads the monotonic clock.
var epoch = time.Now()

// Mono is the clock the estimates are kept on: monotonic nanoseconds since
// the process started. Pickers read it once per Pick and pass it to the
// accessors below; tests pass their own instants.
func Mono() int64 { return int64(time.Since(epoch)) }

// RTTDecay is the time constant of the response-time estimate, Finagle's and
// Linkerd's 10 s: an observation is forgotten to 1/e in 10 s of wall time,
// however many requests come meanwhile, and an endpoint that stops being
// picked sees its estimate decay towards zero at that rate, so that it is
// tried again.
const RTTDecay = 10 * time.Second

// failurePenalty is the least response time a failed attempt counts as: a
// refused connection or an instant 503 must make an endpoint look worse, not
// faster, than its peers.
const failurePenalty = 50 * time.Millisecond

// maxRTT caps the estimate, so that failures doubling it cannot overflow it.
const maxRTT = float64(30 * time.Second)

// Observe records one finished exchange with this endpoint: the time to its
// response head and whether the attempt failed. The request pipeline calls
// it once per attempt; latency-aware pickers read what it keeps. It must not
// block or allocate.
func (e *Endpoint) Observe(rtt time.Duration, failed bool) { e.ObserveAt(Mono(), rtt, failed) }

// ObserveAt is Observe at a given Mono instant.
//
// The estimate is a peak-EWMA: a sample above the estimate replaces it at
// once (a slowing endpoint is avoided from its first slow answer); a sample
// below it is blended in with weight 1-exp(-Δt/RTTDecay), Δt being the time
// since the previous update. A failed attempt counts as at least twice the
// estimate and at least failurePenalty.
func (e *Endpoint) ObserveAt(now int64, rtt time.Duration, failed bool) {
	r := float64(max(rtt, 1))
	if failed {
		e.fails.Add(1)
	} else if e.fails.Load() != 0 {
		e.fails.Store(0)
	}
	for {
		ob := e.rtt.Load()
		old := math.Float64frombits(ob)
		if failed {
			r = max(r, 2*old, float64(failurePenalty))
		}
		next := r
		if old > 0 && r < old {
			dt := float64(max(now-e.rttAt.Load(), 0))
			w := math.Exp(-dt / float64(RTTDecay))
			next = old*w + r*(1-w)
		}
		next = min(next, maxRTT)
		if e.rtt.CompareAndSwap(ob, math.Float64bits(next)) {
			e.rttAt.Store(now)
			return
		}
	}
}

// RTT returns the response-time estimate in nanoseconds as of now, decayed
// towards zero since its last update (0: never observed).
func (e *Endpoint) RTT(now int64) float64 {
	est := math.Float64frombits(e.rtt.Load())
	if est == 0 {
		return 0
	}
	if dt := now - e.rttAt.Load(); dt > 0 {
		est *= math.Exp(-float64(dt) / float64(RTTDecay))
	}
	return est
}

// Failures is the number of consecutive attempts that failed, 0 after a
// success.
func (e *Endpoint) Failures() int { return int(e.fails.Load()) }

// ReportLoad records the value of a LoadHeader the endpoint sent. The
// pipeline calls it with the raw header value; it must not block or
// allocate, and ignores values it cannot read.
func (e *Endpoint) ReportLoad(v []byte) { e.ReportLoadAt(Mono(), v) }

// ReportLoadAt is ReportLoad at a given Mono instant.
func (e *Endpoint) ReportLoadAt(now int64, v []byte) {
	r, ok := ParseLoad(v)
	if !ok {
		return
	}
	e.load.Store(r.pack())
	e.loadAt.Store(now)
}

// Load reports fresher than LoadFresh are taken as they are; older ones
// decay towards neutral (full headroom) with time constant LoadDecay, so an
// instance whose reports stopped (idle callers, a restart) is neither
// avoided nor preferred for long on stale news.
const (
	LoadFresh = 3 * time.Second
	LoadDecay = 5 * time.Second
)

// LastLoad returns the endpoint's last load report and its age, ok false when
// it never sent one.
func (e *Endpoint) LastLoad(now int64) (r LoadReport, age time.Duration, ok bool) {
	p := e.load.Load()
	if p == 0 {
		return LoadReport{}, 0, false
	}
	return unpackLoad(p), time.Duration(max(now-e.loadAt.Load(), 0)), true
}

// Headroom is the endpoint's reported headroom (0: saturated … 1: idle) as
// of now, after staleness decay; 1 when it never reported.
func (e *Endpoint) Headroom(now int64) float64 {
	p := e.load.Load()
	if p == 0 {
		return 1
	}
	h := unpackLoad(p).Headroom
	if age := now - e.loadAt.Load(); age > int64(LoadFresh) {
		h = 1 - (1-h)*math.Exp(-float64(age-int64(LoadFresh))/float64(LoadDecay))
	}
	return h
}
