package messaging

import (
	"sync"
	"sync/atomic"

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
	// PublishBatch is messages per publish request (1 for POST
	// /v1/publish), CallbackBatch messages per callback (1 without
	// spec.batch): the batch sizes in use, which set the throughput
	// (bench/README.md, messaging).
	PublishBatch  *prometheus.HistogramVec // topic
	CallbackBatch *prometheus.HistogramVec // topic
	// acksPending reads the publisher's broker acks outstanding, at
	// scrape time only (SetPublishAcksPending).
	acksPending atomic.Pointer[func() int]

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
		PublishBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weft_messages_publish_batch_size",
			Help:    "Messages per publish request from this sidecar's app: 1 for POST /v1/publish, the lines of a POST /v1/publish-batch.",
			Buckets: BatchSizeBuckets,
		}, []string{"topic"}),
		CallbackBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weft_message_callback_batch_size",
			Help:    "Messages per callback to this sidecar's app (every attempt): 1 without the subscription's batch, up to batch.maxMessages with it.",
			Buckets: BatchSizeBuckets,
		}, []string{"topic"}),
		topics: map[string]struct{}{},
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weft_messages_publish_acks_pending",
		Help: "Messages this sidecar has sent to the broker and not yet seen acknowledged (at most 4096; a publish beyond waits for room).",
	}, func() float64 {
		if f := m.acksPending.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	for _, c := range []prometheus.Collector{m.Published, m.PublishFailed, m.Delivered, m.Latency, m.Lag, m.InFlight, m.PublishBatch, m.CallbackBatch, pending} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// BatchSizeBuckets are the buckets of the batch size histograms: up to the
// largest batch either end allows (1000).
var BatchSizeBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}

// SetPublishAcksPending sets what weft_messages_publish_acks_pending
// reports (the publisher's count of acks outstanding).
func (m *Metrics) SetPublishAcksPending(f func() int) { m.acksPending.Store(&f) }

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
