// Package messaging is Weft's publish/subscribe, carried by a NATS JetStream
// broker (embedded in the control plane by default, see messaging/broker).
// An app publishes through its sidecar (messaging/publish) and receives by
// HTTP callback from its sidecar (messaging/deliver); the control plane
// reports on topics and dead letters (messaging/admin). This package holds
// what they share: how topics map onto the one JetStream stream, the message
// header names, the durable consumer each subscription uses, the broker
// connection that follows a changing URL, metrics and trace propagation.
//
//	app ─POST /v1/publish/T─▶ sidecar ─JetStream publish─▶ stream WEFT
//	    subject weft.t.T (keyless) or weft.t.T.~P (key in partition P)
//	stream ─durable consumers per (service, T): one keyless, shared by the
//	    instances; one per partition, delivered by the lease holder─▶
//	    sidecar of S ─POST path─▶ app of S
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

	"github.com/weftmesh/weft/messaging/partition"
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
	// but not yet settled (for a subscription, raised to room for one
	// largest message per pull loop when messages may be that large).
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
	// LeaseTTL is how long an instance holds a partition without renewing
	// its lease, so how long the partitions of an instance that died stay
	// undelivered before another instance takes them over. Holders renew
	// every LeaseTTL/4 and stop delivering LeaseMargin before it runs out.
	LeaseTTL    = 10 * time.Second
	LeaseMargin = 2 * time.Second
)

// LeaseBucket is the key-value bucket (on the broker) holding one lease per
// partition of each subscription: key LeaseKey, value the holder's id.
const LeaseBucket = "weft-partition-leases"

// LeaseKey is the lease of partition p of a (service, topic).
func LeaseKey(service, topic string, p int) string {
	return ConsumerName(service, topic) + ".p" + strconv.Itoa(p)
}

// LeaseBucketConfig is the lease bucket: a lease not renewed within
// LeaseTTL is gone; file-backed, so leases outlive a broker restart and
// nobody takes over a partition whose holder is still delivering.
func LeaseBucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "Weft: which instance delivers each partition of a subscription",
		History:     1,
		TTL:         LeaseTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    1,
	}
}

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

// Subject is the broker subject of a topic's keyless messages (topic
// already validated).
func Subject(topic string) string { return SubjectPrefix + topic }

// PartitionMark starts the last token of a keyed message's subject; topics
// cannot contain it, so the subject still names its topic unambiguously.
const PartitionMark = "~"

// PartitionSubject is the subject of a topic's keyed messages that fall in
// partition p: weft.t.<topic>.~<p>.
func PartitionSubject(topic string, p int) string {
	return SubjectPrefix + topic + "." + PartitionMark + strconv.Itoa(p)
}

// SubjectFor is where a message of topic with ordering key goes: keyed
// messages to their key's partition (delivered by one instance at a time,
// see messaging/partition), keyless ones to the topic's own subject.
func SubjectFor(topic, key string) string {
	if key == "" {
		return Subject(topic)
	}
	return PartitionSubject(topic, partition.Of(key))
}

// TopicOf returns the topic of a broker subject (keyed or not).
func TopicOf(subject string) (string, bool) {
	t, ok := strings.CutPrefix(subject, SubjectPrefix)
	if i := strings.LastIndexByte(t, '.'); i >= 0 && strings.HasPrefix(t[i+1:], PartitionMark) {
		t = t[:i]
	}
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
	return consumerConfig(service, spec, origin, -1)
}

// PartitionConsumerName is the durable consumer of one partition of a
// (service, topic).
func PartitionConsumerName(service, topic string, p int) string {
	return ConsumerName(service, topic) + "_p" + strconv.Itoa(p)
}

// PartitionConsumerConfig is the durable consumer of partition p of a
// subscription: like ConsumerConfig, over the partition's subject. Only
// the instance holding the partition's lease pulls from it.
func PartitionConsumerConfig(service string, spec resource.SubscriptionSpec, origin string, p int) jetstream.ConsumerConfig {
	return consumerConfig(service, spec, origin, p)
}

func consumerConfig(service string, spec resource.SubscriptionSpec, origin string, p int) jetstream.ConsumerConfig {
	d := Description{Service: service, Topic: spec.Topic, DeadLetterTopic: spec.DeadLetterTopic, Origin: origin}
	name, subject := ConsumerName(service, spec.Topic), Subject(spec.Topic)
	if p >= 0 {
		d.Partition = strconv.Itoa(p)
		name, subject = PartitionConsumerName(service, spec.Topic, p), PartitionSubject(spec.Topic, p)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   d.String(),
		FilterSubject: subject,
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
	// Partition is set on the consumer of one partition of the
	// subscription's keyed messages; empty on the keyless one.
	Partition string
}

const descPrefix = "weft subscription"

func (d Description) String() string {
	s := fmt.Sprintf("%s service=%s topic=%s dlq=%s origin=%s", descPrefix, d.Service, d.Topic, d.DeadLetterTopic, d.Origin)
	if d.Partition != "" {
		s += " partition=" + d.Partition
	}
	return s
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
		case "partition":
			d.Partition = v
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

// EnsurePartitionConsumers creates the partition consumers of a
// subscription that do not exist yet, so keyed messages published before
// any instance holds a partition are kept for it. Existing ones are left
// as they are: their holder may have reset them to another start.
func EnsurePartitionConsumers(ctx context.Context, js jetstream.JetStream, service string, spec resource.SubscriptionSpec, origin string) error {
	var errs []error
	for p := range partition.Count {
		_, err := js.CreateConsumer(ctx, StreamName, PartitionConsumerConfig(service, spec, origin, p))
		if err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
			errs = append(errs, fmt.Errorf("consumer of partition %d: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
