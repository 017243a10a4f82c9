package policy

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/resource"
)

// Detector is a destination's passive outlier detection: it counts each
// instance's consecutive failures from the answers real requests get and
// ejects an instance whose count reaches a threshold, for baseEjectionTime
// × the number of times in a row it was ejected. Ejection does not change
// a snapshot in place: the detector signals its owner (discovery), which
// builds a snapshot without the ejected instances and, once their time is
// up, one with them again.
type Detector struct {
	consecutive5xx, consecutiveGateway atomic.Int64
	interval, base                     atomic.Int64 // nanoseconds
	maxPercent                         atomic.Int64
	// Success-rate ejection: off while srMinRequests is 0 (then the
	// request path counts nothing for it).
	srMinRequests, srMinHosts atomic.Int64
	srFactor                  atomic.Uint64 // math.Float64bits
	swept                     atomic.Int64  // success-rate ejections not yet taken (SweptEjections)
	// Active health checks: probes failed (passed) in a row to eject
	// (re-admit); guarded by mu.
	hcUnhealthy, hcHealthy int

	mu      sync.Mutex
	stats   map[string]*Stat // by instance id
	total   int              // instances known at the last rebuild
	changed func()           // set by the owner; called without mu held, must not block
	review  time.Time
}

// Stat is one instance's counters. The request path reaches it through
// the snapshot's Stats map; only atomics are touched there.
type Stat struct {
	ID         string
	Address    string
	c5xx, cgw  atomic.Int64
	reqs, fail atomic.Int64 // this interval's tries and failures (success-rate ejection only)
	ejected    atomic.Bool
	until      time.Time // guarded by Detector.mu
	since      time.Time // guarded by Detector.mu
	reason     string    // guarded by Detector.mu
	code       string    // guarded by Detector.mu: the reason's code
	multiplier int       // guarded by Detector.mu
	ejections  int64     // guarded by Detector.mu
	hcFails    int       // guarded by Detector.mu: health probes failed in a row
	hcPasses   int       // guarded by Detector.mu: … passed in a row
}

func newDetector() *Detector { return &Detector{stats: map[string]*Stat{}} }

// configureSuccessRate turns success-rate ejection on (minRequests > 0)
// or off.
func (d *Detector) configureSuccessRate(minRequests, minHosts int, factor float64) {
	d.srMinHosts.Store(int64(minHosts))
	d.srFactor.Store(math.Float64bits(factor))
	d.srMinRequests.Store(int64(minRequests))
}

func (d *Detector) configure(c5, cg int, interval, base time.Duration, pct int) {
	d.consecutive5xx.Store(int64(c5))
	d.consecutiveGateway.Store(int64(cg))
	d.interval.Store(int64(interval))
	d.base.Store(int64(base))
	d.maxPercent.Store(int64(pct))
}

// OnChange sets the function called when the set of ejected instances
// changes; it must not block.
func (d *Detector) OnChange(f func()) {
	d.mu.Lock()
	d.changed = f
	d.mu.Unlock()
}

// Interval is how often Sweep should run.
func (d *Detector) Interval() time.Duration { return time.Duration(d.interval.Load()) }

// Track returns the stat of every id/address pair (creating missing ones,
// dropping those of instances gone), for the owner's next snapshot.
func (d *Detector) Track(ids, addrs []string) map[string]*Stat {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]*Stat, len(ids))
	for i, id := range ids {
		st := d.stats[id]
		if st == nil || st.Address != addrs[i] {
			st = &Stat{ID: id, Address: addrs[i]}
		}
		out[id] = st
	}
	d.stats = out
	d.total = len(ids)
	return out
}

// Ejected reports whether the instance is out of rotation.
func (st *Stat) Ejected() bool { return st.ejected.Load() }

// Report records one try's outcome at st: fivexx for any 5xx, gateway for
// 502/503/504 or a failed connection (which also counts as 5xx). It
// reports whether this answer ejected the instance.
func (d *Detector) Report(st *Stat, fivexx, gateway bool, now time.Time) bool {
	if st == nil {
		return false
	}
	if d.srMinRequests.Load() > 0 {
		st.reqs.Add(1)
		if fivexx || gateway {
			st.fail.Add(1)
		}
	}
	if !fivexx && !gateway {
		// Load first: a success rarely needs to write (no cache-line
		// ping-pong between the cores serving one destination).
		if st.c5xx.Load() != 0 {
			st.c5xx.Store(0)
		}
		if st.cgw.Load() != 0 {
			st.cgw.Store(0)
		}
		return false
	}
	n5 := st.c5xx.Add(1)
	ng := int64(0)
	if gateway {
		ng = st.cgw.Add(1)
	} else if st.cgw.Load() != 0 {
		st.cgw.Store(0)
	}
	reason, code := "", ""
	if t := d.consecutive5xx.Load(); t > 0 && n5 >= t {
		reason, code = fmt.Sprintf("%d consecutive 5xx", n5), ReasonConsecutive5xx
	} else if t := d.consecutiveGateway.Load(); t > 0 && ng >= t {
		reason, code = fmt.Sprintf("%d consecutive gateway errors", ng), ReasonConsecutiveGateway
	}
	if reason == "" || st.ejected.Load() {
		return false
	}
	return d.eject(st, reason, code, now)
}

// Reason codes: why an instance was ejected, as a bounded label value
// (the metric weft_outlier_ejected_instance, `weft get services`).
const (
	ReasonConsecutive5xx     = "consecutive_5xx"
	ReasonConsecutiveGateway = "consecutive_gateway_errors"
	ReasonSuccessRate        = "success_rate"
	ReasonHealthCheck        = "health_check"
)

func (d *Detector) eject(st *Stat, reason, code string, now time.Time) bool {
	d.mu.Lock()
	if !d.ejectLocked(st, reason, code, now) {
		d.mu.Unlock()
		return false
	}
	f := d.changed
	d.mu.Unlock()
	if f != nil {
		f()
	}
	return true
}

// ejectLocked ejects st unless it is ejected already, gone, or
// maxEjectionPercent (or the last instance) forbids; d.mu is held.
func (d *Detector) ejectLocked(st *Stat, reason, code string, now time.Time) bool {
	if st.ejected.Load() || d.stats[st.ID] != st {
		return false
	}
	ejected := 0
	for _, s := range d.stats {
		if s.ejected.Load() {
			ejected++
		}
	}
	allowed := d.total * int(d.maxPercent.Load()) / 100
	if allowed == 0 && d.maxPercent.Load() > 0 && d.total > 1 {
		allowed = 1
	}
	if ejected >= allowed || ejected+1 >= d.total {
		return false
	}
	st.multiplier = min(st.multiplier+1, resource.MaxEjectionMultiplier)
	st.ejections++
	st.since = now
	st.until = now.Add(time.Duration(d.base.Load()) * time.Duration(st.multiplier))
	st.reason, st.code = reason, code
	st.c5xx.Store(0)
	st.cgw.Store(0)
	st.ejected.Store(true)
	return true
}

// Sweep re-admits instances whose ejection is over and, once per
// interval, lowers the multiplier of instances not ejected (so an
// instance that stays healthy starts from baseEjectionTime again) and,
// with success-rate ejection, ejects the instances far below their
// peers' success rate. It reports whether the set of ejected instances
// changed.
func (d *Detector) Sweep(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := false
	decay := now.After(d.review)
	if decay {
		d.review = now.Add(time.Duration(d.interval.Load()))
	}
	for _, st := range d.stats {
		switch {
		case st.ejected.Load() && st.code == ReasonHealthCheck:
			// Back only when its probes pass (ReportHealth).
		case st.ejected.Load() && !now.Before(st.until):
			st.ejected.Store(false)
			st.c5xx.Store(0)
			st.cgw.Store(0)
			changed = true
		case !st.ejected.Load() && decay && st.multiplier > 0 && now.Sub(st.until) > time.Duration(d.base.Load()):
			st.multiplier--
		}
	}
	if decay && d.srMinRequests.Load() > 0 && d.successRateLocked(now) {
		changed = true
	}
	return changed
}

// successRateLocked ejects, of the instances in rotation with at least
// minRequests tries this interval (when at least minHosts have), those
// whose success rate is below mean − factor × stdev, lowest first, within
// maxEjectionPercent; then starts the next interval's counts. d.mu is
// held.
func (d *Detector) successRateLocked(now time.Time) bool {
	type rate struct {
		st   *Stat
		rate float64
	}
	minReq := d.srMinRequests.Load()
	var rates []rate
	sum := 0.0
	for _, st := range d.stats {
		n, f := st.reqs.Swap(0), st.fail.Swap(0)
		if st.ejected.Load() || n < minReq {
			continue
		}
		r := 1 - float64(f)/float64(n)
		rates = append(rates, rate{st, r})
		sum += r
	}
	if int64(len(rates)) < d.srMinHosts.Load() || len(rates) < 3 {
		return false
	}
	mean := sum / float64(len(rates))
	variance := 0.0
	for _, r := range rates {
		variance += (r.rate - mean) * (r.rate - mean)
	}
	stdev := math.Sqrt(variance / float64(len(rates)))
	factor := math.Float64frombits(d.srFactor.Load())
	threshold := mean - factor*stdev
	slices.SortFunc(rates, func(a, b rate) int { return cmp.Compare(a.rate, b.rate) })
	changed := false
	for _, r := range rates {
		if r.rate >= threshold {
			break
		}
		reason := fmt.Sprintf("success rate %.1f%% below %.1f%% (mean %.1f%% - %g × stdev %.1f%%)",
			100*r.rate, 100*threshold, 100*mean, factor, 100*stdev)
		if d.ejectLocked(r.st, reason, ReasonSuccessRate, now) {
			d.swept.Add(1)
			changed = true
		}
	}
	return changed
}

func (d *Detector) configureHealth(unhealthy, healthy int) {
	d.mu.Lock()
	d.hcUnhealthy, d.hcHealthy = unhealthy, healthy
	d.mu.Unlock()
}

// ReportHealth records one active health probe of instance id: after
// unhealthyThreshold failures in a row the instance is ejected (reason
// health_check, why the last probe failed) until healthyThreshold probes
// pass in a row. It reports whether the set of ejected instances changed;
// the owner then rebuilds the snapshot.
func (d *Detector) ReportHealth(id string, healthy bool, why string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.stats[id]
	if st == nil {
		return false
	}
	if !healthy {
		st.hcFails++
		st.hcPasses = 0
		if st.hcFails < max(d.hcUnhealthy, 1) || st.ejected.Load() {
			return false
		}
		if !d.ejectLocked(st, "health check failed "+strconv.Itoa(st.hcFails)+" times in a row: "+why, ReasonHealthCheck, now) {
			return false
		}
		st.until = time.Time{} // until its probes pass
		d.swept.Add(1)
		return true
	}
	st.hcPasses++
	st.hcFails = 0
	if !st.ejected.Load() || st.code != ReasonHealthCheck || st.hcPasses < max(d.hcHealthy, 1) {
		return false
	}
	st.ejected.Store(false)
	st.c5xx.Store(0)
	st.cgw.Store(0)
	return true
}

// SweptEjections returns how many instances Sweep (success rate) or
// ReportHealth ejected
// since the last call, for the ejections counter.
func (d *Detector) SweptEjections() int { return int(d.swept.Swap(0)) }

// Ejection is one ejected instance, for the admin view.
type Ejection struct {
	ID        string    `json:"id"`
	Address   string    `json:"address"`
	Reason    string    `json:"reason"`
	Code      string    `json:"code"` // the reason's code: consecutive_5xx, consecutive_gateway_errors, success_rate
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until"`
	Ejections int64     `json:"ejections"` // times ejected so far
}

// Ejections lists the instances ejected now, by id.
func (d *Detector) Ejections() []Ejection {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Ejection
	for _, st := range d.stats {
		if st.ejected.Load() {
			out = append(out, Ejection{ID: st.ID, Address: st.Address, Reason: st.reason, Code: st.code, Since: st.since, Until: st.until, Ejections: st.ejections})
		}
	}
	slices.SortFunc(out, func(a, b Ejection) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}
