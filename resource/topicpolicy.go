package resource

import (
	"encoding/json"
	"fmt"
	"slices"
)

// KindTopicPolicy says which services may publish to a topic and which may
// subscribe to it. A topic without a policy is open to every service. The
// publishing sidecar refuses a publish by a service not listed (403,
// x-weft-error: denied); a Subscription of a service not listed is refused
// when applied, and a sidecar does not serve a --subscribe flag for it.
const KindTopicPolicy = "TopicPolicy"

// TopicPoliciesService is the reserved service name whose configuration
// carries every TopicPolicy: each sidecar watches it, since a policy
// concerns the services it leaves out as much as those it lists.
const TopicPoliciesService = "weft.topic-policies"

// MaxTopicPolicyServices bounds each list of a TopicPolicy.
const MaxTopicPolicyServices = 256

// TopicPolicySpec is the spec of a TopicPolicy.
type TopicPolicySpec struct {
	// Topic is the topic the policy covers (exactly; its dead letter topic
	// is another topic).
	Topic string `json:"topic"`
	// Publishers are the services that may publish to the topic; omitted:
	// every service; empty ([]): none.
	Publishers []string `json:"publishers,omitempty"`
	// Subscribers are the services that may subscribe to the topic;
	// omitted: every service; empty ([]): none.
	Subscribers []string `json:"subscribers,omitempty"`
}

// ParseTopicPolicySpec decodes a spec strictly and validates it.
func ParseTopicPolicySpec(raw json.RawMessage) (TopicPolicySpec, error) {
	var s TopicPolicySpec
	if err := decodeSpec(raw, &s); err != nil {
		return s, err
	}
	return s, s.Validate()
}

// Validate checks every field; errors name the field (after "spec.").
func (s *TopicPolicySpec) Validate() error {
	if err := ValidateTopic(s.Topic); err != nil {
		return fmt.Errorf("topic: %w", err)
	}
	for _, f := range []struct {
		field string
		list  []string
	}{{"publishers", s.Publishers}, {"subscribers", s.Subscribers}} {
		field, list := f.field, f.list
		if len(list) > MaxTopicPolicyServices {
			return fmt.Errorf("%s: %d services, more than %d", field, len(list), MaxTopicPolicyServices)
		}
		for i, name := range list {
			if err := ValidateName(name); err != nil {
				return fmt.Errorf("%s[%d]: %w", field, i, err)
			}
		}
	}
	return nil
}

// MayPublish reports whether service may publish to the policy's topic.
func (s *TopicPolicySpec) MayPublish(service string) bool {
	return s.Publishers == nil || slices.Contains(s.Publishers, service)
}

// MaySubscribe reports whether service may subscribe to the policy's topic.
func (s *TopicPolicySpec) MaySubscribe(service string) bool {
	return s.Subscribers == nil || slices.Contains(s.Subscribers, service)
}

// checkTopicPolicies refuses a Subscription of a service that its topic's
// TopicPolicy does not list as a subscriber, naming both, whichever of the
// two is being applied.
func checkTopicPolicies(objs []Object) error {
	policies := map[string]struct {
		ref  Ref
		spec TopicPolicySpec
	}{}
	for i := range objs {
		if objs[i].Kind != KindTopicPolicy {
			continue
		}
		spec, err := ParseTopicPolicySpec(objs[i].Spec)
		if err != nil {
			continue // Validate reports it
		}
		policies[spec.Topic] = struct {
			ref  Ref
			spec TopicPolicySpec
		}{objs[i].Ref(), spec}
	}
	if len(policies) == 0 {
		return nil
	}
	for i := range objs {
		if objs[i].Kind != KindSubscription {
			continue
		}
		var sub SubscriptionSpec
		if json.Unmarshal(objs[i].Spec, &sub) != nil {
			continue
		}
		if p, ok := policies[sub.Topic]; ok && !p.spec.MaySubscribe(sub.Service) {
			return fmt.Errorf("%s: service %q may not subscribe to topic %q: %s lists only %v as subscribers", objs[i].Ref(), sub.Service, sub.Topic, p.ref, p.spec.Subscribers)
		}
	}
	return nil
}

func init() {
	registerKind(Kind{
		Name: KindTopicPolicy,
		Spec: func() any { return TopicPolicySpec{} },
		Validate: func(spec json.RawMessage) error {
			_, err := ParseTopicPolicySpec(spec)
			return err
		},
		Target: func(spec json.RawMessage) string {
			var s TopicPolicySpec
			_ = json.Unmarshal(spec, &s)
			return "topic " + s.Topic
		},
		Service: func(json.RawMessage) string { return TopicPoliciesService },
	})
}
