// Package topicpolicy is a sidecar's view of the mesh's TopicPolicies:
// which services may publish to and subscribe to each topic. The control
// plane pushes every TopicPolicy as the configuration of the reserved
// service resource.TopicPoliciesService; Run follows it and swaps in an
// immutable snapshot, which the publish endpoint and the subscriber read
// without locks.
package topicpolicy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/resource"
)

// Watcher is what Run needs of the discovery client.
type Watcher interface {
	Watch(service string) (<-chan *discovery.Destination, func())
}

var _ Watcher = (*discovery.Client)(nil)

// policy is one topic's, with its object's name for messages.
type policy struct {
	name string
	spec resource.TopicPolicySpec
}

// Policies is safe for concurrent use.
type Policies struct {
	service string
	log     *slog.Logger
	snap    atomic.Pointer[map[string]policy] // by topic
	ready   chan struct{}
	once    sync.Once
}

// New returns the policies as seen by service's sidecar; none are known
// (and Publish waits) until Run has had the control plane's first answer.
func New(service string, log *slog.Logger) *Policies {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Policies{service: service, log: log, ready: make(chan struct{})}
	empty := map[string]policy{}
	p.snap.Store(&empty)
	return p
}

// Run follows the control plane's TopicPolicies until ctx ends.
func (p *Policies) Run(ctx context.Context, w Watcher) error {
	updates, stop := w.Watch(resource.TopicPoliciesService)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case d := <-updates:
			if d != nil {
				p.set(d)
			}
		}
	}
}

func (p *Policies) set(d *discovery.Destination) {
	next := map[string]policy{}
	for _, o := range d.Config {
		if o.Kind != resource.KindTopicPolicy {
			continue
		}
		spec, err := resource.ParseTopicPolicySpec(json.RawMessage(o.SpecJson))
		if err != nil {
			// Validated when applied: a policy this sidecar cannot read
			// closes its topic rather than opening it.
			p.log.Error("TopicPolicy not understood; its topic is closed to this service", "name", o.Name, "err", err)
			spec = resource.TopicPolicySpec{Topic: topicOf(o.SpecJson), Publishers: []string{}, Subscribers: []string{}}
		}
		next[spec.Topic] = policy{name: o.Name, spec: spec}
	}
	p.snap.Store(&next)
	p.once.Do(func() { close(p.ready) })
	p.log.Info("topic policies updated", "policies", len(next))
}

func topicOf(raw []byte) string {
	var s struct {
		Topic string `json:"topic"`
	}
	_ = json.Unmarshal(raw, &s)
	return s.Topic
}

// Publish says whether this service may publish to topic: nil, or an error
// wrapping messaging.ErrDenied that names the policy. Until the control
// plane's policies are known it waits, up to ctx, and then fails (not
// denied: unknown).
func (p *Policies) Publish(ctx context.Context, topic string) error {
	select {
	case <-p.ready:
	default:
		select {
		case <-p.ready:
		case <-ctx.Done():
			return fmt.Errorf("the control plane's topic policies are not known yet (%w)", ctx.Err())
		}
	}
	pol, ok := (*p.snap.Load())[topic]
	if !ok || pol.spec.MayPublish(p.service) {
		return nil
	}
	return fmt.Errorf("%w: TopicPolicy/%s does not list service %q among the publishers of topic %q", messaging.ErrDenied, pol.name, p.service, topic)
}

// Subscribe says whether this service may subscribe to topic, by the
// policies known now.
func (p *Policies) Subscribe(topic string) error {
	pol, ok := (*p.snap.Load())[topic]
	if !ok || pol.spec.MaySubscribe(p.service) {
		return nil
	}
	return fmt.Errorf("%w: TopicPolicy/%s does not list service %q among the subscribers of topic %q", messaging.ErrDenied, pol.name, p.service, topic)
}

// Ready returns a channel closed once the policies are first known.
func (p *Policies) Ready() <-chan struct{} { return p.ready }
