package mtls

import "github.com/prometheus/client_golang/prometheus"

var (
	descExpiry = prometheus.NewDesc("weft_cert_expiry_timestamp_seconds",
		"When this instance's workload certificate expires (Unix time); absent before the first.", nil, nil)
	descFailures = prometheus.NewDesc("weft_mtls_handshake_failures_total",
		"Refused mTLS handshakes (inbound and outbound) by reason.", []string{"reason"}, nil)
	descHandshakes = prometheus.NewDesc("weft_mtls_handshakes_total",
		"Completed mTLS handshakes; resumed=true for TLS session resumptions.", []string{"resumed"}, nil)
	descPlaintext = prometheus.NewDesc("weft_mtls_plaintext_connections_total",
		"Plaintext connections a permissive inbound listener accepted.", nil, nil)
)

// Collector exposes the Source's figures on /metrics.
func (s *Source) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Source }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descExpiry
	ch <- descFailures
	ch <- descHandshakes
	ch <- descPlaintext
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	if leaf := c.s.Certificate(); leaf != nil {
		ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()))
	}
	for _, r := range Reasons {
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(c.s.Failures(r)), r)
	}
	res := c.s.Resumed.Load()
	ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.CounterValue, float64(c.s.Handshakes.Load()-res), "false")
	ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.CounterValue, float64(res), "true")
	ch <- prometheus.MustNewConstMetric(descPlaintext, prometheus.CounterValue, float64(c.s.Plaintext.Load()))
}
