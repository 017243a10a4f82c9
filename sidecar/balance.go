package sidecar

import (
	"context"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/load"
)

// What the sidecar adds for load-aware balancing: the meter of its own
// instance (reported on every response its inbound sends), and the view of
// what it learnt of its destinations' endpoints (admin and metrics).

// newLoad builds the instance's meter and plugs it into the inbound
// (cfg.LoadCgroup was resolved by New).
func (s *Sidecar) newLoad() {
	s.load = load.New(load.Config{PID: s.cfg.AppPID, Cgroup: s.cfg.LoadCgroup, Logger: s.log.With("component", "load")})
	s.in.Load = s.load.Append
	s.in.LoadTracker = s.load
	s.load.Register(s.metrics.Registry())
}

// runLoad samples the meter until ctx is done (an instance only), and
// pushes the load through the control plane for idle callers.
func (s *Sidecar) runLoad(ctx context.Context, goRun func(string, func() error)) {
	if s.load != nil {
		goRun("load", func() error { s.load.Run(ctx); return nil })
		goRun("load push", func() error { s.pushLoad(ctx); return nil })
	}
}

// The control plane's copy of the load is refreshed only when the headroom
// moved by loadPushDelta since the last push, and at most every
// loadPushEvery: each push is one update to every subscriber of the
// service, so the fan-out stays bounded by instances / 5 s however busy
// the mesh. Callers in conversation with an instance learn from its
// responses instead, at once.
const (
	loadPushDelta = 0.2
	loadPushEvery = 5 * time.Second
)

func (s *Sidecar) pushLoad(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, at := 1.0, time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h := s.load.Last().Headroom
			if math.Abs(h-last) < loadPushDelta || now.Sub(at) < loadPushEvery {
				continue
			}
			s.disc.SetLoad(string(s.load.Append(nil)))
			last, at = h, now
		}
	}
}

// SetAppPID tells the sidecar its app's process id, whose process tree's
// CPU use it then reports (weft run calls it once the app has started).
func (s *Sidecar) SetAppPID(pid int) {
	if s.load != nil {
		s.load.SetPID(pid)
	}
}

// EndpointView is what the sidecar knows of one endpoint it balances over
// (GET /config).
type EndpointView struct {
	ID       string  `json:"id"`
	Address  string  `json:"address"`
	State    string  `json:"state"` // ready | not_ready
	InFlight int64   `json:"inFlight"`
	RTTMs    float64 `json:"rttMs"`    // peak-EWMA of the time to response head
	Failures int     `json:"failures"` // consecutive
	// Headroom as the balancer uses it (stale reports decayed towards 1);
	// Load is the last report, LoadAgeMs its age (omitted when none came).
	Headroom  float64              `json:"headroom"`
	Load      *balancer.LoadReport `json:"load,omitempty"`
	LoadAgeMs int64                `json:"loadAgeMs,omitempty"`
	Zone      string               `json:"zone,omitempty"`
}

func endpointView(ep *balancer.Endpoint, now int64) EndpointView {
	v := EndpointView{InFlight: ep.InFlight.Load(), RTTMs: ep.RTT(now) / 1e6, Failures: ep.Failures(), Headroom: ep.Headroom(now), Zone: ep.Zone}
	if r, age, ok := ep.LastLoad(now); ok {
		v.Load, v.LoadAgeMs = &r, age.Milliseconds()
	}
	return v
}

// maxEndpointSeries bounds the per-endpoint series of one scrape.
const maxEndpointSeries = 1000

// endpointCollector exports, at scrape time, what the balancers know of the
// current endpoints of every destination: no series outlives its endpoint,
// and at most maxEndpointSeries are written.
type endpointCollector struct{ s *Sidecar }

var (
	descHeadroom = prometheus.NewDesc("weft_endpoint_headroom_ratio",
		"Headroom a destination's instance last reported (x-weft-load), as the balancer uses it.", []string{"destination_service", "instance"}, nil)
	descRTT = prometheus.NewDesc("weft_endpoint_rtt_seconds",
		"Peak-EWMA of the time to response head from a destination's instance, as least_request uses it.", []string{"destination_service", "instance"}, nil)
)

func (c endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHeadroom
	ch <- descRTT
}

func (c endpointCollector) Collect(ch chan<- prometheus.Metric) {
	now := balancer.Mono()
	n := 0
	for _, d := range c.s.disc.Destinations() {
		for _, ep := range d.Endpoints {
			if n >= maxEndpointSeries {
				return
			}
			n++
			if _, _, ok := ep.LastLoad(now); ok {
				ch <- prometheus.MustNewConstMetric(descHeadroom, prometheus.GaugeValue, ep.Headroom(now), d.Service, ep.ID)
			}
			if rtt := ep.RTT(now); rtt > 0 {
				ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, rtt/1e9, d.Service, ep.ID)
			}
		}
	}
}
