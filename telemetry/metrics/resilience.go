package metrics

import (
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Names of the request pipeline's resilience metrics. Labels: reporter
// (client: the caller's sidecar, server: the callee's), source_service,
// destination_service, bounded like the request series.
const (
	RetriesTotal          = "weft_retries_total"
	RetryBudgetExhausted  = "weft_retry_budget_exhausted_total"
	OutlierEjectionsTotal = "weft_outlier_ejections_total"
	OutlierEjected        = "weft_outlier_ejected"
	// OutlierEjectedInstance is 1 for each instance a calling sidecar has
	// ejected now (labels destination_service, instance, reason); the
	// series goes when the instance is re-admitted. The control plane
	// reads it to show ejections in `weft get services` and /api/v1/stats.
	OutlierEjectedInstance = "weft_outlier_ejected_instance"
	LabelInstance          = "instance"
	LabelReason            = "reason"
	// MaxEjectedSeries bounds the ejected-instance series of one sidecar.
	MaxEjectedSeries = 1000
	OverflowTotal    = "weft_circuit_overflow_total"
	RateLimitedTotal = "weft_rate_limited_total"
	FaultsTotal      = "weft_faults_injected_total"
	// MirrorSkippedTotal counts a Route's mirror copies not sent.
	MirrorSkippedTotal = "weft_mirror_skipped_total"
)

// Event is a resilience event the pipeline counts.
type Event uint8

const (
	EventRetry Event = iota
	EventBudgetExhausted
	EventEjection
	EventOverflow
	EventRateLimited
	EventFault
	EventMirrorSkipped
	numEvents
)

var eventNames = [numEvents]string{RetriesTotal, RetryBudgetExhausted, OutlierEjectionsTotal, OverflowTotal, RateLimitedTotal, FaultsTotal, MirrorSkippedTotal}

var eventHelp = [numEvents]string{
	"Requests sent again after a failed try (another instance when one exists).",
	"Retries not sent because the destination's retry budget was spent.",
	"Instances ejected by outlier detection.",
	"Requests answered 503 overflow because a circuit-breaker limit was reached.",
	"Requests answered 429 rate_limited by the destination's inbound sidecar.",
	"Requests delayed or aborted by a Route's fault injection.",
	"Copies a Route's mirror did not send: the body was over the retry buffer limit (maxBodyBytes) or not held whole, or too many copies were in flight.",
}

type eventKey struct {
	ev       Event
	rep      Reporter
	src, dst string
}

type resilience struct {
	vecs    [numEvents]*prometheus.CounterVec
	ejected *prometheus.GaugeVec
	// byInst holds the ejected-instance series set now, per destination
	// (guarded by Recorder.mu).
	byInst    *prometheus.GaugeVec
	instSets  map[string][]EjectedInstance
	instCount int
	cache     atomic.Pointer[map[eventKey]prometheus.Counter]
}

func (r *Recorder) initResilience() {
	labels := []string{LabelReporter, LabelSource, LabelDestination}
	for ev := range numEvents {
		r.res.vecs[ev] = prometheus.NewCounterVec(prometheus.CounterOpts{Name: eventNames[ev], Help: eventHelp[ev]}, labels)
		r.reg.MustRegister(r.res.vecs[ev])
	}
	r.res.ejected = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: OutlierEjected,
		Help: "Instances of a destination ejected by outlier detection now."}, []string{LabelDestination})
	r.reg.MustRegister(r.res.ejected)
	r.res.byInst = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: OutlierEjectedInstance,
		Help: "1 for each instance of a destination ejected by outlier detection now, with the reason."},
		[]string{LabelDestination, LabelInstance, LabelReason})
	r.reg.MustRegister(r.res.byInst)
	r.res.instSets = map[string][]EjectedInstance{}
	empty := map[eventKey]prometheus.Counter{}
	r.res.cache.Store(&empty)
}

// Count records one event. A nil Recorder records nothing.
func (r *Recorder) Count(ev Event, rep Reporter, src, dst string) {
	if r == nil {
		return
	}
	k := eventKey{ev: ev, rep: rep, src: src, dst: dst}
	c := (*r.res.cache.Load())[k]
	if c == nil {
		c = r.slowEvent(k)
	}
	c.Inc()
}

func (r *Recorder) slowEvent(k eventKey) prometheus.Counter {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := *r.res.cache.Load()
	if c := m[k]; c != nil {
		return c
	}
	src, srcOK := r.nameLocked(k.src)
	dst, dstOK := r.nameLocked(k.dst)
	c := r.res.vecs[k.ev].WithLabelValues(k.rep.String(), src, dst)
	if srcOK && dstOK && src == k.src && dst == k.dst && len(m) < r.opts.MaxSeries {
		next := make(map[eventKey]prometheus.Counter, len(m)+1)
		for kk, v := range m {
			next[kk] = v
		}
		// Cloned: a caller's strings may alias its buffers.
		next[eventKey{ev: k.ev, rep: k.rep, src: strings.Clone(k.src), dst: strings.Clone(k.dst)}] = c
		r.res.cache.Store(&next)
	}
	return c
}

// SetEjected sets how many instances of dst are ejected now.
func (r *Recorder) SetEjected(dst string, n int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	name, ok := r.nameLocked(dst)
	r.mu.Unlock()
	if ok {
		r.res.ejected.WithLabelValues(name).Set(float64(n))
	}
}

// EjectedInstance is one instance ejected now and why (a reason code such
// as consecutive_5xx).
type EjectedInstance struct {
	Instance, Reason string
}

// SetEjectedInstances replaces the ejected-instance series of dst with ej
// (none: every series of dst goes). Series past MaxEjectedSeries in all
// are not exported.
func (r *Recorder) SetEjectedInstances(dst string, ej []EjectedInstance) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	name, ok := r.nameLocked(dst)
	if !ok || name != dst {
		return
	}
	for _, e := range r.res.instSets[dst] {
		r.res.byInst.DeleteLabelValues(dst, e.Instance, e.Reason)
		r.res.instCount--
	}
	delete(r.res.instSets, dst)
	var kept []EjectedInstance
	for _, e := range ej {
		if r.res.instCount >= MaxEjectedSeries || len(e.Instance) > 253 || len(e.Reason) > 63 {
			continue
		}
		r.res.byInst.WithLabelValues(dst, e.Instance, e.Reason).Set(1)
		r.res.instCount++
		kept = append(kept, EjectedInstance{Instance: strings.Clone(e.Instance), Reason: strings.Clone(e.Reason)})
	}
	if len(kept) > 0 {
		r.res.instSets[dst] = kept
	}
}
