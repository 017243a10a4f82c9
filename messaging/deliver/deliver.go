// Package deliver is the sidecar's subscriber: for every subscription of
// its service (Subscription resources pushed by the control plane, merged
// with the sidecar's --subscribe flags) it pulls from the subscription's
// durable consumer, shared by all of the service's instances, and POSTs
// each message to the app. The app's answer decides: ack, retry with
// exponential backoff, or dead letter.
//
// Ordering: keyed messages are published to one of partition.Count
// partitions of their topic, and each partition is delivered by one
// instance of the service at a time, the holder of its lease (see
// partitions.go: leases in a key-value bucket on the broker, spread evenly
// over the live instances, handed over through a consumer reset so nothing
// unfinished is overtaken). Within an instance, messages are spread over
// `concurrency` workers by a hash of their key, each worker delivering in
// the order the broker handed them out and retrying a keyed message in
// place, so messages with one key are delivered one at a time, in publish
// order, across all the instances. Keyless messages come from one consumer
// shared by the instances, go to any free worker and are retried through
// the broker.
package deliver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/resource"
)

// Watcher follows the configuration the control plane pushes for a service.
type Watcher interface {
	Watch(service string) (<-chan *discovery.Destination, func())
}

var _ Watcher = (*discovery.Client)(nil)

// Sessions is what the subscriber needs of the broker connection.
type Sessions interface {
	Session() *messaging.Session
	Changed() <-chan struct{}
}

var _ Sessions = (*messaging.Conn)(nil)

// Config configures a Manager.
type Config struct {
	Service string
	// Instance is this instance's id, unique among the service's
	// instances: it names the holder of a partition's lease.
	Instance string
	// AppAddr is the app's host:port; messages are POSTed there.
	AppAddr string
	// Local are the subscriptions of --subscribe flags: topic → path. A
	// Subscription resource for the same topic replaces the flag's.
	Local     map[string]string
	Conn      Sessions
	Discovery Watcher
	// AppReady is closed once the app accepts connections; nothing is
	// pulled before.
	AppReady <-chan struct{}
	// MaxMessageBytes returns the payload limit, used if the stream has to
	// be created (nil: the default).
	MaxMessageBytes func() int
	// Grace bounds deliveries still in flight at shutdown (default 5s);
	// messages not yet handed to the app are given back at once.
	Grace   time.Duration
	Metrics *messaging.Metrics // nil: a private set
	Spans   messaging.Spans    // nil: messaging.DefaultSpans()
	Logger  *slog.Logger

	// Policies, when set, refuse the --subscribe flags whose topic's
	// TopicPolicy leaves this service out (Subscription resources are
	// refused when applied).
	Policies Policies
}

// Policies is what the Manager needs of the mesh's TopicPolicies.
type Policies interface {
	Ready() <-chan struct{}
	Subscribe(topic string) error
}

// Manager runs one subscriber per subscription of the service.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	local map[string]resource.SubscriptionSpec

	mu      sync.Mutex
	running map[string]*running // by topic
}

// Status is one subscription as this sidecar runs it.
type Status struct {
	Topic  string                    `json:"topic"`
	Origin string                    `json:"origin"`
	Spec   resource.SubscriptionSpec `json:"spec"`
}

type running struct {
	spec   resource.SubscriptionSpec
	origin string
	sess   *messaging.Session
	cancel context.CancelFunc
	done   chan struct{}
}

// ParseFlag parses one --subscribe value, TOPIC=/path.
func ParseFlag(v string) (topic, path string, err error) {
	topic, path, ok := strings.Cut(v, "=")
	if !ok {
		return "", "", fmt.Errorf("--subscribe %q: want TOPIC=/path", v)
	}
	if err := resource.ValidateTopic(topic); err != nil {
		return "", "", fmt.Errorf("--subscribe %q: topic: %w", v, err)
	}
	if err := resource.ValidateSubscriptionPath(path); err != nil {
		return "", "", fmt.Errorf("--subscribe %q: path: %w", v, err)
	}
	return topic, path, nil
}

// New validates cfg.
func New(cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Instance == "" {
		host, _ := os.Hostname()
		cfg.Instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 5 * time.Second
	}
	if cfg.Spans == nil {
		cfg.Spans = messaging.DefaultSpans()
	}
	if cfg.Metrics == nil {
		m, err := messaging.NewMetrics(nil)
		if err != nil {
			return nil, err
		}
		cfg.Metrics = m
	}
	if _, _, err := net.SplitHostPort(cfg.AppAddr); err != nil {
		return nil, fmt.Errorf("app address %q: %w", cfg.AppAddr, err)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, local: map[string]resource.SubscriptionSpec{}, running: map[string]*running{}}
	for topic, path := range cfg.Local {
		spec := resource.SubscriptionSpec{Service: cfg.Service, Topic: topic, Path: path}
		if err := spec.Validate(); err != nil {
			return nil, fmt.Errorf("--subscribe %s=%s: %w", topic, path, err)
		}
		m.local[topic] = spec.WithDefaults()
	}
	return m, nil
}

// Subscriptions lists what runs now, by topic.
func (m *Manager) Subscriptions() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Status{}
	for _, t := range slices.Sorted(maps.Keys(m.running)) {
		r := m.running[t]
		out = append(out, Status{Topic: t, Origin: r.origin, Spec: r.spec})
	}
	return out
}

// Run follows the service's subscriptions until ctx ends, then stops every
// subscriber (in-flight deliveries get Grace) and returns.
func (m *Manager) Run(ctx context.Context) error {
	updates, stop := m.cfg.Discovery.Watch(m.cfg.Service)
	defer stop()
	if !m.waitPolicies(ctx) {
		return nil
	}
	var fromResources map[string]resource.SubscriptionSpec
	defer m.stopAll()
	for {
		desired, origins := m.desired(fromResources)
		var sess *messaging.Session
		if len(desired) > 0 {
			sess = m.cfg.Conn.Session() // asks for a connection: lazy until needed
		}
		changed := m.cfg.Conn.Changed()
		m.reconcile(ctx, desired, origins, sess)
		select {
		case <-ctx.Done():
			return nil
		case d := <-updates:
			fromResources = m.fromConfig(d)
		case <-changed:
		}
	}
}

// desired merges the flags' subscriptions with the resources': on the same
// topic the resource wins.
func (m *Manager) desired(fromResources map[string]resource.SubscriptionSpec) (map[string]resource.SubscriptionSpec, map[string]string) {
	out := map[string]resource.SubscriptionSpec{}
	origins := map[string]string{}
	for t, s := range m.local {
		if m.localDenied(t) {
			continue
		}
		out[t], origins[t] = s, messaging.OriginLocal
	}
	for t, s := range fromResources {
		out[t], origins[t] = s, messaging.OriginResource
	}
	return out, origins
}

// waitPolicies waits until the TopicPolicies are known, so that no
// --subscribe flag is served before they are checked.
func (m *Manager) waitPolicies(ctx context.Context) bool {
	if m.cfg.Policies == nil {
		return true
	}
	select {
	case <-m.cfg.Policies.Ready():
		return true
	case <-ctx.Done():
		return false
	}
}

// localDenied reports (and logs) a --subscribe flag its topic's policy
// refuses.
func (m *Manager) localDenied(topic string) bool {
	if m.cfg.Policies == nil {
		return false
	}
	if err := m.cfg.Policies.Subscribe(topic); err != nil {
		m.log.Error("--subscribe refused", "topic", topic, "err", err)
		return true
	}
	return false
}

func (m *Manager) fromConfig(d *discovery.Destination) map[string]resource.SubscriptionSpec {
	out := map[string]resource.SubscriptionSpec{}
	if d == nil {
		return out
	}
	for _, obj := range d.Config {
		if obj.Kind != resource.KindSubscription {
			continue
		}
		spec, err := resource.ParseSubscriptionSpec(json.RawMessage(obj.SpecJson))
		if err != nil {
			m.log.Error("ignoring unreadable subscription", "name", obj.Name, "err", err)
			continue
		}
		if spec.Service != m.cfg.Service {
			continue
		}
		out[spec.Topic] = spec
	}
	return out
}

// reconcile stops subscribers whose spec or session changed or that are no
// longer wanted, then starts the missing ones: build the new, then swap.
func (m *Manager) reconcile(ctx context.Context, desired map[string]resource.SubscriptionSpec, origins map[string]string, sess *messaging.Session) {
	m.mu.Lock()
	var stopping []*running
	for t, r := range m.running {
		d, ok := desired[t]
		if !ok || !sameSpec(d, r.spec) || r.origin != origins[t] || r.sess != sess {
			r.cancel()
			stopping = append(stopping, r)
			delete(m.running, t)
		}
	}
	m.mu.Unlock()
	for _, r := range stopping {
		<-r.done
		m.log.Info("subscription stopped", "topic", r.spec.Topic)
	}
	if sess == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, spec := range desired {
		if _, ok := m.running[t]; ok {
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		r := &running{spec: spec, origin: origins[t], sess: sess, cancel: cancel, done: make(chan struct{})}
		m.running[t] = r
		s := newSubscriber(m, spec, origins[t], sess)
		go func() {
			defer close(r.done)
			s.run(rctx)
		}()
		batch := 0
		if spec.Batch != nil {
			batch = spec.Batch.MaxMessages
		}
		m.log.Info("subscription started", "topic", t, "path", spec.Path, "origin", origins[t],
			"concurrency", spec.Concurrency, "max_deliveries", spec.MaxDeliveries, "dead_letter_topic", spec.DeadLetterTopic,
			"batch_max_messages", batch)
	}
}

func sameSpec(a, b resource.SubscriptionSpec) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	rs := slices.Collect(maps.Values(m.running))
	clear(m.running)
	m.mu.Unlock()
	for _, r := range rs {
		r.cancel()
	}
	for _, r := range rs {
		<-r.done
	}
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ParseFlags parses repeated --subscribe values into topic → path.
func ParseFlags(vs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range vs {
		topic, path, err := ParseFlag(v)
		if err != nil {
			return nil, err
		}
		if _, dup := out[topic]; dup {
			return nil, fmt.Errorf("--subscribe %s given twice", topic)
		}
		out[topic] = path
	}
	return out, nil
}
