// Package aggregator is the control plane's embedded metrics backend: it
// scrapes every registered sidecar's admin /metrics on an interval, turns
// the cumulative counters and histograms into per-interval deltas, and keeps
// a rolling window of them (15 minutes at 10 s by default), from which it
// answers per-service and per-edge rates, success rates and latency
// quantiles — client-side and server-side — for /api/v1/stats and
// /api/v1/topology (`weft stat`, `weft top`).
//
//	registry ──targets──▶ Aggregator ──GET /metrics──▶ sidecars
//	                          │ deltas per interval (ring of slots)
//	                          ▼
//	                   Stats(window), Topology(window)
//
// Scraping rather than push: a sidecar keeps no backend state and pays
// nothing when the control plane is away (its counters are cumulative, so a
// missed scrape loses resolution, not counts); and the numbers `weft stat`
// shows come from the same endpoint Prometheus reads.
package aggregator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/weftmesh/weft/telemetry/metrics"
)

// Defaults for Config.
const (
	DefaultInterval = 10 * time.Second
	DefaultRetain   = 15 * time.Minute
	DefaultMaxKeys  = 10_000
	maxScrapeBytes  = 16 << 20
	maxConcurrent   = 8
)

// Target is one sidecar to scrape.
type Target struct {
	Service  string
	Instance string
	Admin    string // host:port of its admin listener
}

// Config configures an Aggregator.
type Config struct {
	// Targets lists the sidecars to scrape now (the registry's instances).
	Targets  func() []Target
	Interval time.Duration
	// Retain is how far back the rolling window reaches.
	Retain time.Duration
	// MaxKeys bounds distinct (reporter, source, destination) keys kept
	// per interval; the rest are folded into one "other" key.
	MaxKeys int
	Client  *http.Client
	Logger  *slog.Logger
}

// Aggregator is safe for concurrent use.
type Aggregator struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	started time.Time
	insts   map[string]*instance // by instance id and admin address
	slots   []slot               // ring, len = Retain/Interval + 1
	next    int                  // where the next slot goes
	last    time.Time            // time of the last round
	status  ScrapeStatus
	// ejections holds what each sidecar of the last round reported
	// ejected (by instance id and admin address): its last successful
	// scrape's, while it stays a target.
	ejections map[string][]Ejection
}

type key struct {
	rep      metrics.Reporter
	src, dst string
}

// sample holds cumulative (per instance) or delta (per slot) counts.
type sample struct {
	requests, failures float64
	count              float64                               // histogram observations
	buckets            [len(metrics.DurationBuckets)]float64 // cumulative, le = DurationBuckets[i]
}

type instance struct {
	values map[key]*sample
	seen   time.Time
}

type slot struct {
	at, prev time.Time
	data     map[key]*sample
}

// New returns an Aggregator; Run scrapes.
func New(cfg Config) *Aggregator {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Retain <= 0 {
		cfg.Retain = DefaultRetain
	}
	if cfg.Retain < cfg.Interval {
		cfg.Retain = cfg.Interval
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Targets == nil {
		cfg.Targets = func() []Target { return nil }
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{
			Timeout: min(cfg.Interval, 5*time.Second),
			Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     2*cfg.Interval + time.Second,
				DisableCompression:  true,
			},
		}
	}
	n := int(cfg.Retain/cfg.Interval) + 1
	return &Aggregator{cfg: cfg, log: cfg.Logger, started: time.Now(), insts: map[string]*instance{},
		slots: make([]slot, n), status: ScrapeStatus{Interval: cfg.Interval.String()}}
}

// Run scrapes every Interval until ctx is done.
func (a *Aggregator) Run(ctx context.Context) error {
	a.mu.Lock()
	a.started = time.Now()
	a.mu.Unlock()
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.Scrape(ctx)
		}
	}
}

type result struct {
	t       Target
	values  map[key]*sample
	ejected []Ejection
	start   float64 // process start time (unix seconds), 0 if unknown
	err     error
}

// Scrape runs one round: every target, at most maxConcurrent at a time,
// then folds the deltas into a new slot.
func (a *Aggregator) Scrape(ctx context.Context) {
	targets := a.cfg.Targets()
	results := make([]result, len(targets))
	sem := make(chan struct{}, maxConcurrent)
	var wg sync.WaitGroup
	for i, t := range targets {
		results[i].t = t
		if t.Admin == "" {
			results[i].err = errors.New("no admin address")
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i].values, results[i].ejected, results[i].start, results[i].err = a.scrapeOne(ctx, t.Admin)
		}()
	}
	wg.Wait()
	a.fold(time.Now(), results)
}

func (a *Aggregator) scrapeOne(ctx context.Context, admin string) (map[key]*sample, []Ejection, float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, nil, 0, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
	resp, err := a.cfg.Client.Do(req)
	if err != nil {
		return nil, nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	dec := expfmt.NewDecoder(io.LimitReader(resp.Body, maxScrapeBytes), expfmt.ResponseFormat(resp.Header))
	out := map[key]*sample{}
	var ejected []Ejection
	var start float64
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, nil, 0, fmt.Errorf("decoding /metrics: %w", err)
		}
		switch mf.GetName() {
		case metrics.RequestsTotal:
			for _, m := range mf.GetMetric() {
				k, failed, ok := labels(m)
				if !ok || len(out) >= a.cfg.MaxKeys && out[k] == nil {
					continue
				}
				s := get(out, k)
				v := m.GetCounter().GetValue()
				s.requests += v
				if failed {
					s.failures += v
				}
			}
		case metrics.RequestDuration:
			for _, m := range mf.GetMetric() {
				k, _, ok := labels(m)
				if !ok || len(out) >= a.cfg.MaxKeys && out[k] == nil {
					continue
				}
				s := get(out, k)
				h := m.GetHistogram()
				s.count += float64(h.GetSampleCount())
				for _, b := range h.GetBucket() {
					if i := bucketIndex(b.GetUpperBound()); i >= 0 {
						s.buckets[i] += float64(b.GetCumulativeCount())
					}
				}
			}
		case metrics.OutlierEjectedInstance:
			for _, m := range mf.GetMetric() {
				if e, ok := ejectionOf(m); ok && len(ejected) < metrics.MaxEjectedSeries {
					ejected = append(ejected, e)
				}
			}
		case "process_start_time_seconds":
			if ms := mf.GetMetric(); len(ms) > 0 {
				start = ms[0].GetGauge().GetValue()
			}
		}
	}
	return out, ejected, start, nil
}

// ejectionOf reads one weft_outlier_ejected_instance series (1 while
// ejected; the caller fields are the scraped sidecar's, filled by fold).
func ejectionOf(m *dto.Metric) (Ejection, bool) {
	var e Ejection
	for _, lp := range m.GetLabel() {
		switch lp.GetName() {
		case metrics.LabelDestination:
			e.Service = lp.GetValue()
		case metrics.LabelInstance:
			e.Instance = lp.GetValue()
		case metrics.LabelReason:
			e.Reason = lp.GetValue()
		}
	}
	ok := m.GetGauge().GetValue() > 0 && e.Service != "" && e.Instance != "" &&
		len(e.Service) <= 63 && len(e.Instance) <= 253 && len(e.Reason) <= 63
	return e, ok
}

func get(m map[key]*sample, k key) *sample {
	s := m[k]
	if s == nil {
		s = &sample{}
		m[k] = s
	}
	return s
}

// labels reads a request series' key and whether it counts as a failure:
// a 5xx status, or a gRPC status other than OK.
func labels(m *dto.Metric) (key, bool, bool) {
	var k key
	var code, grpc, rep string
	for _, lp := range m.GetLabel() {
		switch lp.GetName() {
		case metrics.LabelReporter:
			rep = lp.GetValue()
		case metrics.LabelSource:
			k.src = lp.GetValue()
		case metrics.LabelDestination:
			k.dst = lp.GetValue()
		case metrics.LabelCode:
			code = lp.GetValue()
		case metrics.LabelGRPCStatus:
			grpc = lp.GetValue()
		}
	}
	switch rep {
	case "client":
		k.rep = metrics.Client
	case "server":
		k.rep = metrics.Server
	default:
		return k, false, false
	}
	if len(k.src) > 63 || len(k.dst) > 63 {
		return k, false, false
	}
	failed := (len(code) == 3 && code[0] == '5') || (grpc != "" && grpc != "0")
	return k, failed, true
}

func bucketIndex(le float64) int {
	for i, b := range metrics.DurationBuckets {
		if math.Abs(b-le) <= b*1e-9 {
			return i
		}
	}
	return -1
}

// fold turns a round's cumulative values into one slot of deltas.
func (a *Aggregator) fold(now time.Time, results []result) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delta := map[key]*sample{}
	failed := 0
	ejections := map[string][]Ejection{}
	for _, r := range results {
		id := r.t.Instance + "@" + r.t.Admin
		if r.err != nil {
			if e := a.ejections[id]; e != nil {
				ejections[id] = e // its last word, while it is still a target
			}
			failed++
			a.log.Debug("scrape failed", "service", r.t.Service, "instance", r.t.Instance, "admin", r.t.Admin, "err", r.err)
			if in := a.insts[id]; in != nil {
				in.seen = now // still registered: keep its baseline
			}
			continue
		}
		prev := a.insts[id]
		if prev == nil {
			// A sidecar that started after this aggregator is counted from
			// zero; an older one (the control plane restarted) is only a
			// baseline, or its whole history would land in one interval.
			prev = &instance{}
			if r.start > 0 && r.start >= float64(a.started.Add(-a.cfg.Interval).UnixNano())/1e9 {
				prev.values = map[key]*sample{}
			}
		}
		if prev.values != nil {
			for k, cur := range r.values {
				d := sub(cur, prev.values[k])
				if d.requests == 0 && d.count == 0 {
					continue
				}
				if len(delta) >= a.cfg.MaxKeys && delta[k] == nil {
					k = key{rep: k.rep, src: metrics.Other, dst: metrics.Other}
				}
				add(get(delta, k), &d)
			}
		}
		a.insts[id] = &instance{values: r.values, seen: now}
		for i := range r.ejected {
			r.ejected[i].CallerService, r.ejected[i].CallerInstance = r.t.Service, r.t.Instance
		}
		if len(r.ejected) > 0 {
			ejections[id] = r.ejected
		}
	}
	a.ejections = ejections
	// Forget instances gone from the registry for the whole window. Kept
	// that long so one that comes back (a lease lost and renewed) continues
	// from its baseline instead of being counted again from zero.
	for id, in := range a.insts {
		if now.Sub(in.seen) > a.cfg.Retain {
			delete(a.insts, id)
		}
	}
	prev := a.last
	if prev.IsZero() {
		prev = a.started
	}
	a.slots[a.next] = slot{at: now, prev: prev, data: delta}
	a.next = (a.next + 1) % len(a.slots)
	a.last = now
	a.status.Targets, a.status.Failed, a.status.Last = len(results), failed, now
}

// sub is cur - prev, or cur when a counter went down (the sidecar restarted
// under the same id).
func sub(cur, prev *sample) sample {
	if prev == nil {
		return *cur
	}
	d := sample{requests: cur.requests - prev.requests, failures: cur.failures - prev.failures, count: cur.count - prev.count}
	reset := d.requests < 0 || d.failures < 0 || d.count < 0
	for i := range d.buckets {
		d.buckets[i] = cur.buckets[i] - prev.buckets[i]
		reset = reset || d.buckets[i] < 0
	}
	if reset {
		return *cur
	}
	return d
}

func add(dst, s *sample) {
	dst.requests += s.requests
	dst.failures += s.failures
	dst.count += s.count
	for i := range dst.buckets {
		dst.buckets[i] += s.buckets[i]
	}
}

// The JSON API's wire types. Latencies are milliseconds; successRate is a
// fraction (0..1). A nil view means no request in the window from that
// side. Fields are only ever added.
type (
	View struct {
		Requests    float64 `json:"requests"`
		RPS         float64 `json:"rps"`
		SuccessRate float64 `json:"successRate"`
		P50Ms       float64 `json:"p50Ms"`
		P95Ms       float64 `json:"p95Ms"`
		P99Ms       float64 `json:"p99Ms"`
	}
	// ServiceStats: Client is calls to the service as its callers' sidecars
	// saw them; Server as its own sidecars saw them.
	ServiceStats struct {
		Service string `json:"service"`
		Client  *View  `json:"client"`
		Server  *View  `json:"server"`
		// Ejected lists the service's instances that callers' outlier
		// detection has ejected now (at the last scrape), one entry per
		// caller that ejected it.
		Ejected []Ejection `json:"ejected,omitempty"`
	}
	// Ejection: CallerInstance (of CallerService) has ejected Instance of
	// Service, for Reason (consecutive_5xx, consecutive_gateway_errors,
	// success_rate).
	Ejection struct {
		Service        string `json:"service"`
		Instance       string `json:"instance"`
		Reason         string `json:"reason"`
		CallerService  string `json:"callerService"`
		CallerInstance string `json:"callerInstance"`
	}
	EdgeStats struct {
		Source      string `json:"source"`
		Destination string `json:"destination"`
		Client      *View  `json:"client"`
		Server      *View  `json:"server"`
	}
	ScrapeStatus struct {
		Interval string    `json:"interval"`
		Targets  int       `json:"targets"`
		Failed   int       `json:"failed"`
		Last     time.Time `json:"last"`
	}
	Stats struct {
		Window        string         `json:"window"`
		WindowSeconds float64        `json:"windowSeconds"` // the time the data covers
		Services      []ServiceStats `json:"services"`
		Edges         []EdgeStats    `json:"edges"`
		Scrape        ScrapeStatus   `json:"scrape"`
	}
	TopologyEdge struct {
		Source      string  `json:"source"`
		Destination string  `json:"destination"`
		RPS         float64 `json:"rps"`
		SuccessRate float64 `json:"successRate"`
		P99Ms       float64 `json:"p99Ms"`
		Reporter    string  `json:"reporter"` // whose numbers: client, or server when no caller-side data
	}
	Topology struct {
		Window   string         `json:"window"`
		Services []string       `json:"services"`
		Edges    []TopologyEdge `json:"edges"`
	}
)

// window sums the slots of the last d and returns the time they cover.
func (a *Aggregator) window(d time.Duration) (map[key]*sample, float64, ScrapeStatus) {
	a.mu.Lock()
	defer a.mu.Unlock()
	sum := map[key]*sample{}
	if a.last.IsZero() {
		return sum, 0, a.status
	}
	from := a.last.Add(-d)
	var earliest time.Time
	for _, s := range a.slots {
		if s.at.IsZero() || !s.at.After(from) {
			continue
		}
		if earliest.IsZero() || s.prev.Before(earliest) {
			earliest = s.prev
		}
		for k, v := range s.data {
			add(get(sum, k), v)
		}
	}
	if earliest.IsZero() {
		return sum, 0, a.status
	}
	return sum, a.last.Sub(earliest).Seconds(), a.status
}

// Stats answers per service and per edge for the last d.
func (a *Aggregator) Stats(d time.Duration) Stats {
	sum, secs, status := a.window(d)
	out := Stats{Window: d.String(), WindowSeconds: secs, Services: []ServiceStats{}, Edges: []EdgeStats{}, Scrape: status}
	type pair struct{ src, dst string }
	edges := map[pair]*[2]sample{}
	services := map[string]*[2]sample{}
	for k, v := range sum {
		e := edges[pair{k.src, k.dst}]
		if e == nil {
			e = &[2]sample{}
			edges[pair{k.src, k.dst}] = e
		}
		add(&e[k.rep&1], v)
		s := services[k.dst]
		if s == nil {
			s = &[2]sample{}
			services[k.dst] = s
		}
		add(&s[k.rep&1], v)
	}
	ejected := a.Ejections()
	for name := range ejected {
		if services[name] == nil {
			services[name] = &[2]sample{}
		}
	}
	for name, s := range services {
		out.Services = append(out.Services, ServiceStats{Service: name, Client: view(&s[metrics.Client], secs), Server: view(&s[metrics.Server], secs), Ejected: ejected[name]})
	}
	for p, e := range edges {
		out.Edges = append(out.Edges, EdgeStats{Source: p.src, Destination: p.dst, Client: view(&e[metrics.Client], secs), Server: view(&e[metrics.Server], secs)})
	}
	sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Service < out.Services[j].Service })
	sort.Slice(out.Edges, func(i, j int) bool {
		if out.Edges[i].Source != out.Edges[j].Source {
			return out.Edges[i].Source < out.Edges[j].Source
		}
		return out.Edges[i].Destination < out.Edges[j].Destination
	})
	return out
}

// Topology answers the edges of the last d with their rates, from the
// callers' side where the caller is scraped, else from the callee's.
func (a *Aggregator) Topology(d time.Duration) Topology {
	st := a.Stats(d)
	out := Topology{Window: st.Window, Services: []string{}, Edges: []TopologyEdge{}}
	seen := map[string]bool{}
	for _, e := range st.Edges {
		v, rep := e.Client, "client"
		if v == nil {
			v, rep = e.Server, "server"
		}
		if v == nil {
			continue
		}
		out.Edges = append(out.Edges, TopologyEdge{Source: e.Source, Destination: e.Destination, RPS: v.RPS, SuccessRate: v.SuccessRate, P99Ms: v.P99Ms, Reporter: rep})
		for _, s := range []string{e.Source, e.Destination} {
			if !seen[s] {
				seen[s] = true
				out.Services = append(out.Services, s)
			}
		}
	}
	sort.Strings(out.Services)
	sort.SliceStable(out.Edges, func(i, j int) bool { return out.Edges[i].RPS > out.Edges[j].RPS })
	return out
}

func view(s *sample, secs float64) *View {
	if s.requests <= 0 {
		return nil
	}
	v := &View{Requests: s.requests, SuccessRate: 1 - s.failures/s.requests}
	if secs > 0 {
		v.RPS = s.requests / secs
	}
	v.P50Ms = quantile(0.50, s) * 1000
	v.P95Ms = quantile(0.95, s) * 1000
	v.P99Ms = quantile(0.99, s) * 1000
	return v
}

// quantile estimates the q-quantile (seconds) from cumulative buckets the
// way Prometheus's histogram_quantile does: linear within the bucket, the
// highest finite bound for observations past it.
func quantile(q float64, s *sample) float64 {
	total := s.count
	if total <= 0 {
		return 0
	}
	rank := q * total
	b := metrics.DurationBuckets
	for i := range b {
		if s.buckets[i] >= rank {
			lower, below := 0.0, 0.0
			if i > 0 {
				lower, below = b[i-1], s.buckets[i-1]
			}
			in := s.buckets[i] - below
			if in <= 0 {
				return b[i]
			}
			return lower + (b[i]-lower)*(rank-below)/in
		}
	}
	return b[len(b)-1]
}

// Ejections returns, by destination service, the instances the sidecars
// scraped last reported ejected, sorted by instance then caller.
func (a *Aggregator) Ejections() map[string][]Ejection {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string][]Ejection{}
	for _, es := range a.ejections {
		for _, e := range es {
			out[e.Service] = append(out[e.Service], e)
		}
	}
	for _, es := range out {
		sort.Slice(es, func(i, j int) bool {
			if es[i].Instance != es[j].Instance {
				return es[i].Instance < es[j].Instance
			}
			return es[i].CallerInstance < es[j].CallerInstance
		})
	}
	return out
}
