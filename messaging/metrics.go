package messaging

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// MaxTopicLabels bounds the distinct topic label values one process
// reports; topics past it are counted under "other", so an app publishing
// to ever-new topics cannot grow /metrics without bound.
const MaxTopicLabels = 256

// Delivery results, the "result" label of weft_messages_delivered_total.
const (
	ResultAck        = "ack"
	ResultRetry      = "retry"
	ResultDeadLetter = "deadletter"
)

// Metrics are one sidecar's messaging metrics.
type Metrics struct {
	Published     *prometheus.CounterVec   // topic
	PublishFailed *prometheus.CounterVec   // topic, reason
	Delivered     *prometheus.CounterVec   // topic, result
	Latency       *prometheus.HistogramVec // topic: publish → callback acknowledged
	Lag           *prometheus.GaugeVec     // topic: messages not yet delivered to this service
	InFlight      *prometheus.GaugeVec     // topic: messages held by this instance

	mu     sync.Mutex
	topics map[string]struct{}
}

// NewMetrics creates the collectors and registers them with reg (nil: a
// private registry, e.g. in tests). Registering twice with one registry
// is an error, so a process with several sidecars gives each its own.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_messages_published_total",
			Help: "Messages the broker durably accepted from this sidecar's app.",
		}, []string{"topic"}),
		PublishFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_messages_publish_failed_total",
			Help: "Publishes refused or failed, by reason (the x-weft-error code).",
		}, []string{"topic", "reason"}),
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_messages_delivered_total",
			Help: "Delivery attempts to this sidecar's app, by result: ack, retry (redelivered later) or deadletter.",
		}, []string{"topic", "result"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weft_message_delivery_latency_seconds",
			Help:    "From the publishing sidecar accepting a message to this app acknowledging it.",
			Buckets: prometheus.ExponentialBucketsRange(0.0005, 120, 20),
		}, []string{"topic"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_message_consumer_lag",
			Help: "Messages of the topic this service's subscription has not yet been handed (as of the last delivery).",
		}, []string{"topic"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_message_in_flight",
			Help: "Messages this instance holds: queued for or being delivered to its app.",
		}, []string{"topic"}),
		topics: map[string]struct{}{},
	}
	for _, c := range []prometheus.Collector{m.Published, m.PublishFailed, m.Delivered, m.Latency, m.Lag, m.InFlight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Topic returns the label value for topic: itself, or "other" once
// MaxTopicLabels distinct topics have been seen.
func (m *Metrics) Topic(topic string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.topics[topic]; ok {
		return topic
	}
	if len(m.topics) >= MaxTopicLabels {
		return "other"
	}
	m.topics[topic] = struct{}{}
	return topic
}
