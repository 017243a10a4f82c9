package load

import "github.com/prometheus/client_golang/prometheus"

// Register adds the meter's gauges to r: the instance's own load as it
// reports it to callers (no labels: one instance per sidecar).
func (m *Meter) Register(r prometheus.Registerer) {
	gauge := func(name, help string, f func(Sample) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(m.Last()) })
	}
	r.MustRegister(
		gauge("weft_instance_headroom_ratio", "Headroom this instance reports to its callers (1 - max(cpu, memory)), 0 to 1.", func(s Sample) float64 { return s.Headroom }),
		gauge("weft_instance_cpu_ratio", "CPU use of this instance's app as a fraction of what it may use; -1 when not measured.", func(s Sample) float64 { return s.CPU }),
		gauge("weft_instance_memory_pressure_ratio", "Memory pressure of this instance (cgroup), 0 to 1; -1 when not measured.", func(s Sample) float64 { return s.Mem }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "weft_instance_in_flight_requests", Help: "Requests the inbound is serving now."},
			func() float64 { return float64(m.inFlight.Load()) }),
	)
}
