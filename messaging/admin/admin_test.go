package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/admin"
	"github.com/weftmesh/weft/messaging/broker"
	"github.com/weftmesh/weft/resource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func subscription(t *testing.T, name, service, topic string) resource.Object {
	t.Helper()
	o, err := resource.DecodeObject([]byte("apiVersion: weft.dev/v1alpha1\nkind: Subscription\nmetadata: {name: " + name +
		"}\nspec: {service: " + service + ", topic: " + topic + ", path: /e}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAdmin(t *testing.T) {
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	conn := messaging.NewConn(messaging.ConnConfig{Access: func() messaging.Access { return messaging.Access{URLs: b.URL()} }, Poll: 10 * time.Millisecond})
	a := admin.New(admin.Config{Conn: conn, BrokerURL: b.URL()})
	a.SetSubscriptions([]resource.Object{subscription(t, "notifier-sub", "notifier", "order.created"), subscription(t, "billing-sub", "billing", "order.created")})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = a.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	nc, err := nats.Connect(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	consumers := func() map[string]string {
		out := map[string]string{}
		s, err := js.Stream(ctx, messaging.StreamName)
		if err != nil {
			return out
		}
		for ci := range s.ListConsumers(ctx).Info() {
			d, _ := messaging.ParseDescription(ci.Config.Description)
			out[d.Service+"/"+d.Topic] = d.Origin
		}
		return out
	}
	eventually(t, "both consumers", func() bool { return len(consumers()) == 2 })
	// A consumer of a --subscribe flag is the sidecars' business.
	local := resource.SubscriptionSpec{Service: "audit", Topic: "order.created", Path: "/x"}.WithDefaults()
	if _, err := js.CreateOrUpdateConsumer(ctx, messaging.StreamName, messaging.ConsumerConfig("audit", local, messaging.OriginLocal)); err != nil {
		t.Fatal(err)
	}
	// Deleting a Subscription deletes its consumer, and only its.
	a.SetSubscriptions([]resource.Object{subscription(t, "notifier-sub", "notifier", "order.created")})
	eventually(t, "billing's consumer gone", func() bool {
		c := consumers()
		return len(c) == 2 && c["notifier/order.created"] == "resource" && c["audit/order.created"] == "local"
	})

	// Publish through the API, dead-letter one by hand, list, replay.
	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/topics/order.created/publish", strings.NewReader(`{"id":1}`))
	req.Header.Set("X-Weft-Message-Id", "o-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("publish: %v %v", resp, err)
	}
	resp.Body.Close()
	// Keyed ones land on partition subjects: still the topic's messages.
	for _, key := range []string{"user-1", "user-2"} {
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/topics/order.created/publish", strings.NewReader(`{"id":2}`))
		req.Header.Set("X-Weft-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("publish with key: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	dl := &nats.Msg{Subject: messaging.Subject("order.created.dlq"), Data: []byte(strings.Repeat("p", 1000)), Header: nats.Header{}}
	dl.Header.Set(messaging.HdrID, "o-1")
	dl.Header.Set(messaging.HdrDLQTopic, "order.created")
	dl.Header.Set(messaging.HdrDLQSubscriber, "notifier")
	dl.Header.Set(messaging.HdrDLQAttempts, "5")
	dl.Header.Set(messaging.HdrDLQReason, "app answered 500")
	if _, err := js.PublishMsg(ctx, dl); err != nil {
		t.Fatal(err)
	}
	var topics admin.TopicsJSON
	getJSON(t, srv.URL+"/api/v1/topics", &topics)
	if !topics.Connected || len(topics.Topics) != 2 || topics.Topics[0].Name != "order.created" || topics.Topics[0].Messages != 3 ||
		topics.Topics[0].DeadLetters != 1 || len(topics.Topics[0].Subscriptions) != 2 {
		t.Fatalf("topics: %+v", topics)
	}
	for _, s := range topics.Topics[0].Subscriptions {
		want := map[string]int{"notifier": 1, "audit": 0}[s.Service]
		if s.DeadLettered != want {
			t.Errorf("%s: %d dead-lettered, want %d", s.Service, s.DeadLettered, want)
		}
	}
	var list admin.DeadLettersJSON
	getJSON(t, srv.URL+"/api/v1/topics/order.created/dlq", &list)
	if list.Total != 1 || len(list.Messages) != 1 {
		t.Fatalf("dlq: %+v", list)
	}
	m := list.Messages[0]
	if m.ID != "o-1" || m.Attempts != 5 || m.Subscriber != "notifier" || !m.Truncated || len(m.Payload) != admin.PayloadPreview || m.Size != 1000 {
		t.Fatalf("dead letter: %+v", m)
	}
	resp, err = http.Post(srv.URL+"/api/v1/topics/order.created/dlq/replay", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var rep admin.ReplayJSON
	json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if rep.Replayed != 1 || rep.Remaining != 0 {
		t.Fatalf("replay: %+v", rep)
	}
	last, err := js.Stream(ctx, messaging.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	got, err := last.GetLastMsgForSubject(ctx, messaging.Subject("order.created"))
	if err != nil || got.Header.Get(messaging.HdrReplayFor) != "notifier" || got.Header.Get(messaging.HdrID) != "o-1" || got.Header.Get(messaging.HdrDLQReason) != "" {
		t.Fatalf("replayed message: %+v %v", got, err)
	}
	// Bad input.
	for _, u := range []string{"/api/v1/topics/a..b/dlq", "/api/v1/topics/t/dlq?limit=0", "/api/v1/topics/t/dlq?limit=x", "/api/v1/topics/t/dlq?dlq=*"} {
		resp, err := http.Get(srv.URL + u)
		if err != nil || resp.StatusCode != 400 {
			t.Errorf("GET %s: %v %v", u, resp.Status, err)
		}
		resp.Body.Close()
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
