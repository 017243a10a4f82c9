// Package messaging is Weft's publish/subscribe, carried by a NATS JetStream
// broker (embedded in the control plane by default, see messaging/broker).
// An app publishes through its sidecar (messaging/publish) and receives by
// HTTP callback from its sidecar (messaging/deliver); the control plane
// reports on topics and dead letters (messaging/admin). This package holds
// what they share: how topics map onto the one JetStream stream, the message
// header names, the durable consumer each subscription uses, the broker
// connection that follows a changing URL, metrics and trace propagation.
//
//	app ─POST /v1/publish/T─▶ sidecar ─JetStream publish─▶ stream WEFT (subject weft.t.T)
//	stream ─durable consumer per (service, T)─▶ sidecar of S ─POST path─▶ app of S
package messaging

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftmesh/weft/resource"
)

// The broker layout: every topic is a subject under one stream, so a topic
// exists as soon as something is published to it and needs no setup.
const (
	StreamName    = "WEFT"
	SubjectPrefix = "weft.t."
)

// Settings the control plane hands to every sidecar in its Hello.
const (
	// SettingBroker holds the broker URL(s), comma-separated; empty or
	// absent means messaging is off.
	SettingBroker = "broker"
	// SettingMaxMessageBytes is the largest payload a publish may carry.
	SettingMaxMessageBytes = "broker.maxMessageBytes"
)

// Limits.
const (
	DefaultMaxMessageBytes = 1 << 20
	MaxMaxMessageBytes     = 8 << 20
	// HeaderRoom is what the stream and the embedded broker allow on top of
	// the payload limit for headers (the app's, trace context, Weft's).
	HeaderRoom = 64 << 10
	// HeldBytes bounds the message bytes a sidecar holds at once: being
	// published (all publishes together), and pulled for one subscription
	// but not yet settled.
	HeldBytes = 64 << 20
	// MaxAppHeaderBytes bounds the message headers an app sets on publish.
	MaxAppHeaderBytes = 16 << 10
	MaxAppHeaders     = 64
	// StreamMaxAge and StreamMaxBytes bound what the broker keeps; the
	// oldest messages go first when either is reached, consumed or not.
	StreamMaxAge   = 7 * 24 * time.Hour
	StreamMaxBytes = 1 << 30
	// DedupWindow is how long a repeated message id is recognised and
	// dropped (an app retrying a publish whose answer it lost).
	DedupWindow = 2 * time.Minute
	// AckWait is how long the broker waits for an instance to settle a
	// message before giving it to another instance. Sidecars extend it for
	// messages they hold, so this is really how fast the death of an
	// instance is noticed.
	AckWait = 10 * time.Second
	// MaxAckPending bounds the messages out at a subscription's instances.
	MaxAckPending = 20000
	// LocalInactiveThreshold removes a consumer declared only by
	// `--subscribe` flags after its service has been gone this long.
	LocalInactiveThreshold = 7 * 24 * time.Hour
)

// Header names on broker messages. NATS headers are case-sensitive; these
// are the exact keys.
const (
	HdrMsgID       = "Nats-Msg-Id" // JetStream deduplicates on it (per store operation)
	HdrID          = "Weft-Id"     // the message's id, kept through dead letter and replay
	HdrContentType = "Content-Type"
	HdrKey         = "Weft-Key"
	HdrSource      = "Weft-Source"       // the publishing service
	HdrPublishedAt = "Weft-Published-At" // unix nanoseconds at the publishing sidecar
	// Set on a dead letter.
	HdrDLQTopic      = "Weft-Dlq-Topic" // the topic it was dead-lettered from
	HdrDLQSubscriber = "Weft-Dlq-Subscriber"
	HdrDLQAttempts   = "Weft-Dlq-Attempts"
	HdrDLQReason     = "Weft-Dlq-Reason"
	HdrDLQAt         = "Weft-Dlq-At" // RFC 3339
	// HdrReplayFor marks a message replayed from a dead letter topic: only
	// that subscriber gets it; other subscriptions of the topic skip it.
	HdrReplayFor = "Weft-Replay-For"
)

// HTTP headers between an app and its sidecar.
const (
	// On publish (app → sidecar) and delivery (sidecar → app).
	HTTPKey = "X-Weft-Key"
	// HTTPMessageID: on publish, an optional idempotency key (a repeated
	// id within DedupWindow is stored once); on delivery, the message id.
	HTTPMessageID = "X-Weft-Message-Id"
	// HTTPHeaderPrefix marks the app's own message headers: carried from
	// the publish request to the delivery request unchanged.
	HTTPHeaderPrefix = "X-Msg-"
	// On delivery only.
	HTTPTopic       = "X-Weft-Topic"
	HTTPAttempt     = "X-Weft-Attempt"
	HTTPPublishedAt = "X-Weft-Published-At"
	HTTPSource      = "X-Weft-Source"
	HTTPSequence    = "X-Weft-Sequence"
)

// Subject is the broker subject of a topic (already validated).
func Subject(topic string) string { return SubjectPrefix + topic }

// TopicOf returns the topic of a broker subject.
func TopicOf(subject string) (string, bool) {
	t, ok := strings.CutPrefix(subject, SubjectPrefix)
	return t, ok && t != ""
}

// ErrInvalidTopic wraps every topic validation error.
var ErrInvalidTopic = errors.New("invalid topic")

// ValidateTopic checks a topic name (see resource.ValidateTopic).
func ValidateTopic(topic string) error {
	if err := resource.ValidateTopic(topic); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTopic, err)
	}
	return nil
}

// StreamConfig is the one stream's configuration for a payload limit.
func StreamConfig(maxMessageBytes int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Weft messaging: every topic, as subject " + SubjectPrefix + "<topic>",
		Subjects:    []string{SubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      StreamMaxAge,
		MaxBytes:    StreamMaxBytes,
		MaxMsgSize:  int32(maxMessageBytes + HeaderRoom),
		Duplicates:  DedupWindow,
		Replicas:    1,
	}
}

// EnsureStream creates the stream if it does not exist; an existing one is
// left as it is (the control plane owns its configuration).
func EnsureStream(ctx context.Context, js jetstream.JetStream, maxMessageBytes int) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, StreamName)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("looking up stream %s: %w", StreamName, err)
	}
	s, err = js.CreateStream(ctx, StreamConfig(maxMessageBytes))
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.Stream(ctx, StreamName)
	}
	if err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", StreamName, err)
	}
	return s, nil
}

// Where a subscription was declared; recorded in its consumer.
const (
	OriginResource = "resource" // a Subscription applied to the control plane
	OriginLocal    = "local"    // a sidecar's --subscribe flag
)

// ConsumerName is the durable consumer of one (service, topic): readable,
// and unique thanks to a hash of the exact pair (names may not hold '.').
func ConsumerName(service, topic string) string {
	h := xxhash.Sum64String(service + "\x00" + topic)
	return sanitize(service, 60) + "_" + sanitize(topic, 60) + "_" + strconv.FormatUint(h, 16)
}

func sanitize(s string, max int) string {
	b := []byte(s)
	if len(b) > max {
		b = b[:max]
	}
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}

// ConsumerConfig is the durable consumer for a subscription (spec with its
// defaults). The control plane and the service's sidecars all derive it
// from the same spec, so whichever creates it first, the others agree.
// Redelivery is the sidecar's job (it counts attempts and dead-letters), so
// the broker's own MaxDeliver is unlimited.
func ConsumerConfig(service string, spec resource.SubscriptionSpec, origin string) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Durable:       ConsumerName(service, spec.Topic),
		Description:   Description{Service: service, Topic: spec.Topic, DeadLetterTopic: spec.DeadLetterTopic, Origin: origin}.String(),
		FilterSubject: Subject(spec.Topic),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       AckWait,
		MaxDeliver:    -1,
		MaxAckPending: MaxAckPending,
	}
	if origin == OriginLocal {
		cfg.InactiveThreshold = LocalInactiveThreshold
	}
	return cfg
}

// Description is what a consumer's description records about its
// subscription, so the control plane can report on consumers it did not
// create (those of --subscribe flags).
type Description struct {
	Service, Topic, DeadLetterTopic, Origin string
}

const descPrefix = "weft subscription"

func (d Description) String() string {
	return fmt.Sprintf("%s service=%s topic=%s dlq=%s origin=%s", descPrefix, d.Service, d.Topic, d.DeadLetterTopic, d.Origin)
}

// ParseDescription reads a consumer description written by String.
func ParseDescription(s string) (Description, bool) {
	rest, ok := strings.CutPrefix(s, descPrefix+" ")
	if !ok {
		return Description{}, false
	}
	var d Description
	for _, f := range strings.Fields(rest) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "service":
			d.Service = v
		case "topic":
			d.Topic = v
		case "dlq":
			d.DeadLetterTopic = v
		case "origin":
			d.Origin = v
		}
	}
	return d, d.Service != "" && d.Topic != ""
}

// Backoff is the delay before attempt+1 after attempt failed: initial,
// doubled per attempt, capped at max.
func Backoff(attempt int, initial, max time.Duration) time.Duration {
	d := initial
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}
