package resource

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const goodSubscription = `apiVersion: weft.dev/v1alpha1
kind: Subscription
metadata:
  name: notifier-orders
spec:
  service: notifier
  topic: order.created
  path: /events/order-created
`

func TestSubscriptionDecode(t *testing.T) {
	withSpec := func(extra string) string { return goodSubscription + extra }
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"minimal", goodSubscription, ""},
		{"every field", withSpec("  maxDeliveries: 3\n  concurrency: 8\n  deadLetterTopic: failed.orders\n  timeout: 2s\n  backoff: {initial: 100ms, max: 5s}\n"), ""},
		{"path with query", strings.Replace(goodSubscription, "/events/order-created", "/events?kind=order", 1), ""},
		{"unknown field", withSpec("  retries: 3\n"), "unknown field"},
		{"missing topic", strings.Replace(goodSubscription, "  topic: order.created\n", "", 1), "spec.topic: must not be empty"},
		{"wildcard topic", strings.Replace(goodSubscription, "order.created", "order.*", 1), "not a valid topic"},
		{"topic with space", strings.Replace(goodSubscription, "order.created", "'order created'", 1), "not a valid topic"},
		{"empty token", strings.Replace(goodSubscription, "order.created", "order..created", 1), "empty token"},
		{"trailing dot", strings.Replace(goodSubscription, "order.created", "order.", 1), "ends with a dot"},
		{"relative path", strings.Replace(goodSubscription, "/events/order-created", "events", 1), "spec.path"},
		{"path with space", strings.Replace(goodSubscription, "/events/order-created", "'/a b'", 1), "spec.path"},
		{"scheme-relative path", strings.Replace(goodSubscription, "/events/order-created", "//evil/x", 1), "spec.path"},
		{"bad service", strings.Replace(goodSubscription, "service: notifier", "service: Notifier_1", 1), "spec.service"},
		{"maxDeliveries too big", withSpec("  maxDeliveries: 1000\n"), "maxDeliveries"},
		{"negative concurrency", withSpec("  concurrency: -1\n"), "concurrency"},
		{"concurrency too big", withSpec("  concurrency: 100000\n"), "concurrency"},
		{"dead letter loop", withSpec("  deadLetterTopic: order.created\n"), "must differ"},
		{"bad dead letter topic", withSpec("  deadLetterTopic: 'a>'\n"), "deadLetterTopic"},
		{"bad timeout", withSpec("  timeout: soon\n"), "spec.timeout"},
		{"timeout too long", withSpec("  timeout: 1h\n"), "more than"},
		{"backoff inverted", withSpec("  backoff: {initial: 5s, max: 1s}\n"), "backoff.max"},
		{"backoff unknown field", withSpec("  backoff: {factor: 3}\n"), "unknown field"},
		{"wrong type", withSpec("  concurrency: many\n"), "concurrency"},
		{"batch", withSpec("  batch: {maxMessages: 100, maxWait: 5ms}\n"), ""},
		{"batch without wait", withSpec("  batch: {maxMessages: 1}\n"), ""},
		{"batch zero wait", withSpec("  batch: {maxMessages: 10, maxWait: 0s}\n"), ""},
		{"batch without maxMessages", withSpec("  batch: {maxWait: 5ms}\n"), "spec.batch.maxMessages: 0 is not between 1 and 1000"},
		{"batch too large", withSpec("  batch: {maxMessages: 5000}\n"), "spec.batch.maxMessages: 5000 is not between 1 and 1000"},
		{"batch wait too long", withSpec("  batch: {maxMessages: 10, maxWait: 10s}\n"), "spec.batch.maxWait: 10s is more than the 1s allowed"},
		{"batch bad wait", withSpec("  batch: {maxMessages: 10, maxWait: soon}\n"), `spec.batch.maxWait: "soon" is not a duration`},
		{"batch negative wait", withSpec("  batch: {maxMessages: 10, maxWait: -1s}\n"), "spec.batch.maxWait"},
		{"batch unknown field", withSpec("  batch: {size: 10}\n"), "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(objs) != 1 || objs[0].Kind != KindSubscription {
				t.Fatalf("got %+v", objs)
			}
		})
	}
}

func TestSubscriptionDefaultsAndTarget(t *testing.T) {
	o, err := DecodeObject([]byte(goodSubscription))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := o.Target(), "service notifier topic order.created"; got != want {
		t.Errorf("Target = %q, want %q", got, want)
	}
	if got := o.Service(); got != "notifier" {
		t.Errorf("Service = %q, want notifier", got)
	}
	s, err := ParseSubscriptionSpec(o.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if s.MaxDeliveries != DefaultMaxDeliveries || s.Concurrency != DefaultConcurrency || s.DeadLetterTopic != "order.created.dlq" {
		t.Errorf("defaults not applied: %+v", s)
	}
	if d := s.TimeoutDuration(); d != DefaultDeliveryTimeout {
		t.Errorf("timeout = %s", d)
	}
	if i, m := s.BackoffDurations(); i != time.Second || m != 30*time.Second {
		t.Errorf("backoff = %s..%s", i, m)
	}
	// WithDefaults is idempotent: the control plane and sidecars that each
	// apply it derive the same consumer.
	a, _ := json.Marshal(s)
	b, _ := json.Marshal(s.WithDefaults())
	if string(a) != string(b) {
		t.Errorf("WithDefaults not idempotent:\n%s\n%s", a, b)
	}
}

func TestSubscriptionConflicts(t *testing.T) {
	other := strings.Replace(goodSubscription, "name: notifier-orders", "name: other", 1)
	if _, err := Decode([]byte(goodSubscription + "---\n" + other)); err == nil || !strings.Contains(err.Error(), "both configure service notifier topic order.created") {
		t.Fatalf("two subscriptions of one service to one topic: err = %v", err)
	}
	// Another topic, or another service, is fine.
	otherTopic := strings.Replace(other, "order.created", "order.paid", 1)
	otherService := strings.Replace(other, "service: notifier", "service: billing", 1)
	if _, err := Decode([]byte(goodSubscription + "---\n" + otherTopic + "---\n" + strings.Replace(otherService, "name: other", "name: other2", 1))); err != nil {
		t.Fatal(err)
	}
}

func TestValidateTopic(t *testing.T) {
	tests := []struct {
		topic string
		ok    bool
	}{
		{"orders", true},
		{"order.created", true},
		{"Order_Created-v2.x", true},
		{"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p", true},
		{"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q", false},
		{strings.Repeat("a", MaxTopicLength), true},
		{strings.Repeat("a", MaxTopicLength+1), false},
		{"", false},
		{".a", false},
		{"a.", false},
		{"a..b", false},
		{"a.*", false},
		{"a.>", false},
		{"$JS.API", false},
		{"a b", false},
		{"é", false},
		{"a\x00b", false},
	}
	for _, tt := range tests {
		err := ValidateTopic(tt.topic)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateTopic(%q) = %v, want ok=%v", tt.topic, err, tt.ok)
		}
	}
}
