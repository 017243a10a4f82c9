package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// KindSubscription declares that a service wants a topic's messages
// delivered to a path on its app: every instance's sidecar pulls from one
// durable consumer shared by the service and POSTs each message to the app.
const KindSubscription = "Subscription"

// Subscription defaults and bounds. Bounds keep one resource from asking a
// sidecar for unbounded work: concurrency is parallel HTTP calls to the app,
// maxDeliveries × backoff is how long a poison message is held.
const (
	DefaultMaxDeliveries     = 5
	MaxMaxDeliveries         = 100
	DefaultConcurrency       = 1
	MaxConcurrency           = 256
	DefaultDeliveryTimeout   = 10 * time.Second
	MaxDeliveryTimeout       = 5 * time.Minute
	DefaultBackoffInitial    = time.Second
	DefaultBackoffMax        = 30 * time.Second
	MaxBackoff               = 10 * time.Minute
	DeadLetterSuffix         = ".dlq"
	MaxTopicLength           = 255
	MaxTopicTokens           = 16
	MaxSubscriptionPathBytes = 1024
	// MaxBatchMessages bounds a batched callback: the same 1,000 as a
	// publish batch, so an app that takes one takes the other.
	MaxBatchMessages = 1000
	// MaxBatchWait bounds how long a sidecar holds a message back to fill
	// a batch: batching is to save work under load, not to add latency.
	MaxBatchWait = time.Second
)

// SubscriptionSpec is the spec of a Subscription. Zero values mean the
// defaults; WithDefaults fills them in.
type SubscriptionSpec struct {
	// Service is the subscribing service; its instances share the
	// subscription (each message goes to one of them).
	Service string `json:"service"`
	// Topic is the topic delivered.
	Topic string `json:"topic"`
	// Path is where on the app each message is POSTed, e.g. /events/orders.
	Path string `json:"path"`
	// MaxDeliveries is how many attempts a message gets before it goes to
	// the dead letter topic (default 5).
	MaxDeliveries int `json:"maxDeliveries,omitempty"`
	// Concurrency bounds parallel deliveries to one instance's app; messages
	// with the same key are still delivered one at a time (default 1).
	Concurrency int `json:"concurrency,omitempty"`
	// DeadLetterTopic receives messages that exhausted their attempts or
	// that the app refused for good (default Topic + ".dlq").
	DeadLetterTopic string `json:"deadLetterTopic,omitempty"`
	// Timeout bounds one delivery, a Go duration (default 10s).
	Timeout string `json:"timeout,omitempty"`
	// Backoff spaces redeliveries: initial, doubled on every attempt up to max.
	Backoff *BackoffSpec `json:"backoff,omitempty"`
	// Batch, when set, delivers up to MaxMessages messages in one POST
	// (NDJSON, one message per line) instead of one POST each; see
	// docs/messaging.md for the body and the answers.
	Batch *BatchSpec `json:"batch,omitempty"`
}

// BatchSpec turns batched callbacks on. A worker sends what it has queued,
// up to MaxMessages; with MaxWait it first waits up to that long (from the
// batch's first message) for the batch to fill. Unset MaxWait: no waiting,
// so batches are as large as the backlog — one message when the app keeps
// up, MaxMessages when it does not.
type BatchSpec struct {
	MaxMessages int    `json:"maxMessages"`
	MaxWait     string `json:"maxWait,omitempty"`
}

// Wait is the batch's MaxWait (0 when unset).
func (b *BatchSpec) Wait() time.Duration {
	if b == nil || b.MaxWait == "" {
		return 0
	}
	d, _ := time.ParseDuration(b.MaxWait)
	return max(d, 0)
}

func (b *BatchSpec) validate() error {
	if b.MaxMessages < 1 || b.MaxMessages > MaxBatchMessages {
		return fmt.Errorf("batch.maxMessages: %d is not between 1 and %d (set it to turn batched callbacks on)", b.MaxMessages, MaxBatchMessages)
	}
	if b.MaxWait != "" {
		d, err := time.ParseDuration(b.MaxWait)
		if err != nil || d < 0 {
			return fmt.Errorf("batch.maxWait: %q is not a duration such as 5ms or 0s", b.MaxWait)
		}
		if d > MaxBatchWait {
			return fmt.Errorf("batch.maxWait: %s is more than the %s allowed (a message waits that long for its batch to fill)", b.MaxWait, MaxBatchWait)
		}
	}
	return nil
}

// BackoffSpec is an exponential backoff: Initial, doubled up to Max.
type BackoffSpec struct {
	Initial string `json:"initial,omitempty"`
	Max     string `json:"max,omitempty"`
}

// WithDefaults returns the spec with every optional field filled in.
func (s SubscriptionSpec) WithDefaults() SubscriptionSpec {
	if s.MaxDeliveries == 0 {
		s.MaxDeliveries = DefaultMaxDeliveries
	}
	if s.Concurrency == 0 {
		s.Concurrency = DefaultConcurrency
	}
	if s.DeadLetterTopic == "" {
		s.DeadLetterTopic = s.Topic + DeadLetterSuffix
	}
	if s.Timeout == "" {
		s.Timeout = DefaultDeliveryTimeout.String()
	}
	b := BackoffSpec{}
	if s.Backoff != nil {
		b = *s.Backoff
	}
	if b.Initial == "" {
		b.Initial = DefaultBackoffInitial.String()
	}
	if b.Max == "" {
		b.Max = DefaultBackoffMax.String()
	}
	s.Backoff = &b
	return s
}

// TimeoutDuration is the delivery timeout (default when unset or invalid).
func (s *SubscriptionSpec) TimeoutDuration() time.Duration {
	return durationOr(s.Timeout, DefaultDeliveryTimeout)
}

// BackoffDurations returns the initial and maximum backoff.
func (s *SubscriptionSpec) BackoffDurations() (initial, max time.Duration) {
	initial, max = DefaultBackoffInitial, DefaultBackoffMax
	if s.Backoff != nil {
		initial = durationOr(s.Backoff.Initial, initial)
		max = durationOr(s.Backoff.Max, max)
	}
	if max < initial {
		max = initial
	}
	return initial, max
}

func durationOr(s string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	return def
}

// ParseSubscriptionSpec decodes a spec strictly, validates it and returns
// it with its defaults filled in.
func ParseSubscriptionSpec(raw json.RawMessage) (SubscriptionSpec, error) {
	var s SubscriptionSpec
	if err := decodeSpec(raw, &s); err != nil {
		return s, err
	}
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s.WithDefaults(), nil
}

// Validate checks every field; errors name the field (after "spec.").
func (s *SubscriptionSpec) Validate() error {
	if err := ValidateName(s.Service); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if err := ValidateTopic(s.Topic); err != nil {
		return fmt.Errorf("topic: %w", err)
	}
	if err := ValidateSubscriptionPath(s.Path); err != nil {
		return fmt.Errorf("path: %w", err)
	}
	if s.MaxDeliveries < 0 || s.MaxDeliveries > MaxMaxDeliveries {
		return fmt.Errorf("maxDeliveries: %d is not between 1 and %d", s.MaxDeliveries, MaxMaxDeliveries)
	}
	if s.Concurrency < 0 || s.Concurrency > MaxConcurrency {
		return fmt.Errorf("concurrency: %d is not between 1 and %d", s.Concurrency, MaxConcurrency)
	}
	dlq := s.DeadLetterTopic
	if dlq == "" {
		dlq = s.Topic + DeadLetterSuffix
	}
	if err := ValidateTopic(dlq); err != nil {
		if s.DeadLetterTopic == "" {
			return fmt.Errorf("deadLetterTopic: the default, topic + %q: %w; set deadLetterTopic", DeadLetterSuffix, err)
		}
		return fmt.Errorf("deadLetterTopic: %w", err)
	}
	if dlq == s.Topic {
		return errors.New("deadLetterTopic: must differ from topic, or dead letters would be redelivered forever")
	}
	if s.Timeout != "" {
		if err := checkDuration(s.Timeout, MaxDeliveryTimeout); err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
	}
	if b := s.Backoff; b != nil {
		if b.Initial != "" {
			if err := checkDuration(b.Initial, MaxBackoff); err != nil {
				return fmt.Errorf("backoff.initial: %w", err)
			}
		}
		if b.Max != "" {
			if err := checkDuration(b.Max, MaxBackoff); err != nil {
				return fmt.Errorf("backoff.max: %w", err)
			}
		}
		if b.Initial != "" && b.Max != "" && durationOr(b.Max, 0) < durationOr(b.Initial, 0) {
			return fmt.Errorf("backoff.max: %s is less than backoff.initial %s", b.Max, b.Initial)
		}
	}
	if s.Batch != nil {
		if err := s.Batch.validate(); err != nil {
			return err
		}
	}
	return nil
}

func checkDuration(v string, max time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("%q is not a positive duration such as 3s or 500ms", v)
	}
	if d > max {
		return fmt.Errorf("%s is more than the %s allowed", v, max)
	}
	return nil
}

// ValidateTopic checks a topic name: dot-separated tokens of ASCII letters,
// digits, '-' and '_' (so a topic is always one literal NATS subject, never
// a wildcard), at most MaxTopicTokens tokens and MaxTopicLength bytes.
// Topics are case-sensitive.
func ValidateTopic(topic string) error {
	if topic == "" {
		return errors.New("must not be empty")
	}
	if len(topic) > MaxTopicLength {
		return fmt.Errorf("%q is longer than %d bytes", topic[:32]+"…", MaxTopicLength)
	}
	tokens := 1
	prev := byte('.')
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		switch {
		case c == '.':
			if prev == '.' {
				return fmt.Errorf("%q is not a valid topic: empty token (tokens are separated by single dots)", topic)
			}
			tokens++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("%q is not a valid topic: character %q not allowed (letters, digits, '-', '_' and '.' between tokens)", topic, rune(c))
		}
		prev = c
	}
	if prev == '.' {
		return fmt.Errorf("%q is not a valid topic: ends with a dot", topic)
	}
	if tokens > MaxTopicTokens {
		return fmt.Errorf("%q has %d dot-separated tokens, more than %d", topic, tokens, MaxTopicTokens)
	}
	return nil
}

// ValidateSubscriptionPath checks the path messages are POSTed to: an
// absolute path (an optional query is kept), printable ASCII, bounded.
func ValidateSubscriptionPath(p string) error {
	if p == "" {
		return errors.New("must not be empty (e.g. /events/orders)")
	}
	if len(p) > MaxSubscriptionPathBytes {
		return fmt.Errorf("longer than %d bytes", MaxSubscriptionPathBytes)
	}
	if p[0] != '/' || strings.HasPrefix(p, "//") {
		return fmt.Errorf("%q must be a path starting with a single /", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] >= 0x7f || p[i] == '#' {
			return fmt.Errorf("%q: character %q not allowed in a path", p, rune(p[i]))
		}
	}
	if _, err := url.ParseRequestURI(p); err != nil {
		return fmt.Errorf("%q is not a valid request path", p)
	}
	return nil
}

func init() {
	registerKind(Kind{
		Name: KindSubscription,
		Spec: func() any { return SubscriptionSpec{} },
		Validate: func(spec json.RawMessage) error {
			_, err := ParseSubscriptionSpec(spec)
			return err
		},
		Target: func(spec json.RawMessage) string {
			var s SubscriptionSpec
			_ = json.Unmarshal(spec, &s)
			return "service " + s.Service + " topic " + s.Topic
		},
		Service: func(spec json.RawMessage) string {
			var s SubscriptionSpec
			_ = json.Unmarshal(spec, &s)
			return s.Service
		},
	})
}
