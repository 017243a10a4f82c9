package topicpolicy_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/topicpolicy"
	"github.com/weftmesh/weft/resource"
)

type watcher struct {
	service string
	ch      chan *discovery.Destination
}

func (w *watcher) Watch(service string) (<-chan *discovery.Destination, func()) {
	w.service = service
	return w.ch, func() {}
}

func TestPolicies(t *testing.T) {
	p := topicpolicy.New("batch", nil)
	w := &watcher{ch: make(chan *discovery.Destination, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx, w) }()
	defer func() { cancel(); <-done }()

	// Unknown yet: a publish waits, then fails without saying denied.
	short, stop := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := p.Publish(short, "orders.created")
	stop()
	if err == nil || errors.Is(err, messaging.ErrDenied) {
		t.Fatalf("Publish before the policies are known = %v; want a not-known error", err)
	}

	w.ch <- &discovery.Destination{Config: []*pb.ConfigObject{
		{Kind: resource.KindTopicPolicy, Name: "orders", SpecJson: []byte(`{"topic":"orders.created","publishers":["orders"],"subscribers":["notifier"]}`)},
		{Kind: resource.KindTopicPolicy, Name: "broken", SpecJson: []byte(`{"topic":"broken","bogus":1}`)},
		{Kind: resource.KindTopicPolicy, Name: "batch", SpecJson: []byte(`{"topic":"batch.done","publishers":["batch"]}`)},
	}}
	<-p.Ready()
	if w.service != resource.TopicPoliciesService {
		t.Fatalf("watched %q", w.service)
	}
	for _, c := range []struct {
		topic            string
		pubOK, subOK     bool
		pubWant, subWant string
	}{
		{"orders.created", false, false, `TopicPolicy/orders does not list service "batch" among the publishers`, "among the subscribers"},
		{"batch.done", true, true, "", ""},
		{"open.topic", true, true, "", ""},
		{"broken", false, false, "TopicPolicy/broken", "TopicPolicy/broken"}, // unreadable: closed, not open
	} {
		err := p.Publish(context.Background(), c.topic)
		if (err == nil) != c.pubOK || err != nil && (!errors.Is(err, messaging.ErrDenied) || !strings.Contains(err.Error(), c.pubWant)) {
			t.Errorf("Publish(%s) = %v", c.topic, err)
		}
		err = p.Subscribe(c.topic)
		if (err == nil) != c.subOK || err != nil && !strings.Contains(err.Error(), c.subWant) {
			t.Errorf("Subscribe(%s) = %v", c.topic, err)
		}
	}
}
