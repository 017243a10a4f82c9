package messaging

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/resource"
)

func TestConsumerName(t *testing.T) {
	seen := map[string]string{}
	for _, p := range [][2]string{
		{"orders", "order.created"}, {"orders", "order-created"}, {"orders.v2", "created"}, {"orders", "v2.created"},
		{strings.Repeat("s", 253), strings.Repeat("t", 255)}, {"a", "B"}, {"a", "b"},
	} {
		n := ConsumerName(p[0], p[1])
		if other, dup := seen[n]; dup {
			t.Errorf("%v and %s share consumer name %s", p, other, n)
		}
		seen[n] = p[0] + "/" + p[1]
		if len(n) > 140 || strings.ContainsAny(n, ". *>") {
			t.Errorf("consumer name %q: too long or has a character NATS refuses", n)
		}
	}
}

func TestDescriptionRoundTrip(t *testing.T) {
	d := Description{Service: "notifier", Topic: "order.created", DeadLetterTopic: "order.created.dlq", Origin: OriginLocal}
	got, ok := ParseDescription(d.String())
	if !ok || got != d {
		t.Fatalf("ParseDescription(%q) = %+v %v", d.String(), got, ok)
	}
	for _, s := range []string{"", "some consumer", "weft subscription service=", "weft subscription topic=x"} {
		if _, ok := ParseDescription(s); ok {
			t.Errorf("ParseDescription(%q) ok", s)
		}
	}
}

func TestConsumerConfig(t *testing.T) {
	spec := resource.SubscriptionSpec{Service: "s", Topic: "t.x", Path: "/p"}.WithDefaults()
	local := ConsumerConfig("s", spec, OriginLocal)
	res := ConsumerConfig("s", spec, OriginResource)
	if local.Durable != res.Durable || local.FilterSubject != "weft.t.t.x" || local.MaxDeliver != -1 {
		t.Fatalf("%+v", local)
	}
	if local.InactiveThreshold == 0 || res.InactiveThreshold != 0 {
		t.Errorf("only consumers of --subscribe flags expire: local %s, resource %s", local.InactiveThreshold, res.InactiveThreshold)
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		attempt int
		want    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {6, 30 * time.Second}, {100, 30 * time.Second}}
	for _, tt := range tests {
		if got := Backoff(tt.attempt, time.Second, 30*time.Second); got != tt.want {
			t.Errorf("Backoff(%d) = %s, want %s", tt.attempt, got, tt.want)
		}
	}
}

func TestValidateURLs(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"nats://127.0.0.1:4222", true},
		{"nats://a:1,nats://b:2", true},
		{"tls://h:4443", true},
		{"nats://u:secret@h:4222", true},
		{"", false},
		{"127.0.0.1:4222", false},
		{"http://h:4222", false},
		{"nats://h", false},
		{"nats://a:1,", false},
	}
	for _, tt := range tests {
		err := ValidateURLs(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateURLs(%q) = %v", tt.in, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks a password: %v", err)
		}
	}
	if r := Redact("nats://u:secret@h:1,nats://h2:2"); strings.Contains(r, "secret") {
		t.Errorf("Redact: %s", r)
	}
}

func TestSubjects(t *testing.T) {
	if s := Subject("a.b"); s != "weft.t.a.b" {
		t.Fatal(s)
	}
	if tp, ok := TopicOf("weft.t.a.b"); !ok || tp != "a.b" {
		t.Fatal(tp, ok)
	}
	if _, ok := TopicOf("other.a"); ok {
		t.Fatal("other subject taken for a topic")
	}
}

func TestBudget(t *testing.T) {
	b := NewBudget(100)
	ctx := context.Background()
	if err := b.Acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.Acquire(short, 50); err == nil {
		t.Fatal("acquired more than is free")
	}
	done := make(chan error, 1)
	go func() { done <- b.Acquire(ctx, 50) }()
	time.Sleep(10 * time.Millisecond)
	b.Release(60)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n, err := b.AcquireAll(ctx, 10, 1000)
	if err != nil || n != 50 {
		t.Fatalf("AcquireAll = %d %v, want the 50 free", n, err)
	}
	b.Release(n)
	// At most most: the rest stays free for others.
	if n, err = b.AcquireAll(ctx, 10, 20); err != nil || n != 20 {
		t.Fatalf("AcquireAll(10, 20) = %d %v, want 20", n, err)
	}
	b.Release(n)
	b.Release(50)
	// More than the whole budget takes the whole budget.
	if err := b.Acquire(ctx, 1000); err != nil {
		t.Fatal(err)
	}
}

func TestSubjectsOfKeyedMessages(t *testing.T) {
	for _, tc := range []struct{ topic, key string }{
		{"orders", ""},
		{"order.created", ""},
		{"order.created", "cust-42"},
		{"a.b.c", "x"},
	} {
		subj := SubjectFor(tc.topic, tc.key)
		got, ok := TopicOf(subj)
		if !ok || got != tc.topic {
			t.Errorf("TopicOf(%q) = %q %v, want %q", subj, got, ok, tc.topic)
		}
		if keyed := strings.Contains(subj, "."+PartitionMark); keyed != (tc.key != "") {
			t.Errorf("SubjectFor(%q, %q) = %q", tc.topic, tc.key, subj)
		}
		if tc.key != "" && subj != SubjectFor(tc.topic, tc.key) {
			t.Errorf("one key must always land in one partition")
		}
	}
	// A topic token is never taken for a partition.
	if got, _ := TopicOf(Subject("order.p3")); got != "order.p3" {
		t.Errorf("TopicOf = %q", got)
	}
}

func TestDescriptionKeepsThePartition(t *testing.T) {
	d := Description{Service: "notifier", Topic: "order.created", DeadLetterTopic: "order.created.dlq", Origin: OriginResource, Partition: "7"}
	got, ok := ParseDescription(d.String())
	if !ok || got != d {
		t.Fatalf("ParseDescription(%q) = %+v %v", d.String(), got, ok)
	}
	d.Partition = ""
	if got, _ := ParseDescription(d.String()); got != d || strings.Contains(d.String(), "partition") {
		t.Fatalf("keyless consumer description %q parsed as %+v", d.String(), got)
	}
}
