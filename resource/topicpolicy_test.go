package resource

import (
	"strings"
	"testing"
)

const goodTopicPolicy = `apiVersion: weft.dev/v1alpha1
kind: TopicPolicy
metadata:
  name: orders
spec:
  topic: order.created
  publishers: [orders]
  subscribers: [notifier, billing]
`

func TestTopicPolicyDecode(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"good", goodTopicPolicy, ""},
		{"publishers only", strings.Replace(goodTopicPolicy, "  subscribers: [notifier, billing]\n", "", 1), ""},
		{"nobody publishes", strings.Replace(goodTopicPolicy, "[orders]", "[]", 1), ""},
		{"wildcard topic", strings.Replace(goodTopicPolicy, "order.created", "order.*", 1), "spec.topic"},
		{"bad publisher", strings.Replace(goodTopicPolicy, "[orders]", "[Orders_1]", 1), "spec.publishers[0]"},
		{"bad subscriber", strings.Replace(goodTopicPolicy, "billing]", "'a b']", 1), "spec.subscribers[1]"},
		{"unknown field", goodTopicPolicy + "  readers: [x]\n", "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Decode error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestTopicPolicyMay(t *testing.T) {
	objs, err := Decode([]byte(goodTopicPolicy))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := ParseTopicPolicySpec(objs[0].Spec)
	open := TopicPolicySpec{Topic: "x"}
	closed := TopicPolicySpec{Topic: "x", Publishers: []string{}, Subscribers: []string{}}
	for _, c := range []struct {
		spec          TopicPolicySpec
		svc           string
		wantPub, wSub bool
	}{
		{s, "orders", true, false},
		{s, "billing", false, true},
		{s, "batch", false, false},
		{open, "batch", true, true},
		{closed, "orders", false, false},
	} {
		if got := c.spec.MayPublish(c.svc); got != c.wantPub {
			t.Errorf("%+v MayPublish(%s) = %v", c.spec, c.svc, got)
		}
		if got := c.spec.MaySubscribe(c.svc); got != c.wSub {
			t.Errorf("%+v MaySubscribe(%s) = %v", c.spec, c.svc, got)
		}
	}
	if got := objs[0].Service(); got != TopicPoliciesService {
		t.Errorf("Service() = %q", got)
	}
}

// A Subscription its topic's policy leaves out is refused, whichever of the
// two comes second; a second policy for one topic conflicts.
func TestTopicPolicyChecksSubscriptions(t *testing.T) {
	sub := func(svc string) string {
		return strings.NewReplacer("notifier-orders", "sub-"+svc, "service: notifier", "service: "+svc).Replace(goodSubscription)
	}
	tests := []struct {
		name, manifest, wantErr string
	}{
		{"listed subscriber", goodTopicPolicy + "---\n" + sub("notifier"), ""},
		{"other topic", goodTopicPolicy + "---\n" + strings.Replace(sub("batch"), "order.created", "order.shipped", 1), ""},
		{"not listed", goodTopicPolicy + "---\n" + sub("batch"), `Subscription/sub-batch: service "batch" may not subscribe to topic "order.created": TopicPolicy/orders lists only [notifier billing]`},
		{"policy after subscription", sub("batch") + "---\n" + goodTopicPolicy, `service "batch" may not subscribe`},
		{"two policies", goodTopicPolicy + "---\n" + strings.Replace(goodTopicPolicy, "name: orders", "name: orders2", 1), "both configure topic order.created"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode([]byte(tt.manifest)) // checks the manifest as a whole
			if err == nil {
				err = CheckConflicts(objs)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("CheckConflicts = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
