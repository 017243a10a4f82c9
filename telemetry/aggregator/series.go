package aggregator

import (
	"time"

	"github.com/weftmesh/weft/telemetry/metrics"
)

// A time series of one service's golden metrics, one point per scrape
// interval, as the dashboard plots it (/api/v1/series). A point's views are
// nil where no request to the service ended in that interval from that
// side. Fields are only ever added.
type (
	SeriesPoint struct {
		At      time.Time `json:"at"`      // end of the interval
		Seconds float64   `json:"seconds"` // its length
		Client  *View     `json:"client"`  // calls to the service, as its callers' sidecars saw them
		Server  *View     `json:"server"`  // as its own sidecars saw them
	}
	Series struct {
		Service  string        `json:"service"`
		Window   string        `json:"window"`
		Interval string        `json:"interval"`
		Points   []SeriesPoint `json:"points"` // oldest first
	}
)

// Series answers service's rate, success rate and latency quantiles per
// scrape interval over the last d, per reporter, oldest first.
func (a *Aggregator) Series(service string, d time.Duration) Series {
	out := Series{Service: service, Window: d.String(), Interval: a.cfg.Interval.String(), Points: []SeriesPoint{}}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last.IsZero() {
		return out
	}
	from := a.last.Add(-d)
	n := len(a.slots)
	for i := range n {
		s := &a.slots[(a.next+i)%n] // the ring from its oldest slot
		if s.at.IsZero() || !s.at.After(from) {
			continue
		}
		var sum [2]sample
		for k, v := range s.data {
			if k.dst == service {
				add(&sum[k.rep&1], v)
			}
		}
		secs := s.at.Sub(s.prev).Seconds()
		out.Points = append(out.Points, SeriesPoint{At: s.at, Seconds: secs,
			Client: view(&sum[metrics.Client], secs), Server: view(&sum[metrics.Server], secs)})
	}
	return out
}
