package registry

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	pb "github.com/weftmesh/weft/api/discoveryv1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func inst(svc, id string, ready bool) *pb.Instance {
	return &pb.Instance{Service: svc, Id: id, Address: "127.0.0.1:1", Ready: ready}
}

func recv(t *testing.T, s *Subscriber) *pb.ServiceUpdate {
	t.Helper()
	select {
	case u, ok := <-s.C:
		if !ok {
			t.Fatal("subscriber channel closed")
		}
		return u
	case <-time.After(time.Second):
		t.Fatal("no update within 1s")
	}
	return nil
}

func none(t *testing.T, s *Subscriber) {
	t.Helper()
	select {
	case u := <-s.C:
		t.Fatalf("unexpected update %v", u)
	default:
	}
}

func TestSubscribeResetThenDeltas(t *testing.T) {
	r := New(Options{})
	owner := new(int)
	r.Upsert(inst("orders", "a", true), owner)
	sub := NewSubscriber(0, nil)
	defer r.RemoveSubscriber(sub)
	r.Subscribe(sub, "orders", "ghost")

	u := recv(t, sub)
	if !u.Reset_ || !u.Exists || len(u.Upserts) != 1 || u.Upserts[0].Id != "a" {
		t.Fatalf("first update for orders = %v, want a reset with instance a", u)
	}
	u = recv(t, sub)
	if u.Service != "ghost" || u.Exists || !u.Reset_ {
		t.Fatalf("update for unknown service = %v, want reset with exists=false", u)
	}

	r.Upsert(inst("orders", "b", false), owner)
	u = recv(t, sub)
	if u.Reset_ || len(u.Upserts) != 1 || u.Upserts[0].Id != "b" || u.Version != 2 {
		t.Fatalf("delta = %v, want upsert of b at version 2", u)
	}
	if r.Upsert(inst("orders", "b", false), owner) {
		t.Fatal("upserting an unchanged instance reported a change")
	}
	none(t, sub)

	// Only the owner's removal counts: a stale stream must not remove a
	// re-registered instance.
	if r.Remove("orders", "b", new(int), "stale") {
		t.Fatal("removal by another owner succeeded")
	}
	if !r.Remove("orders", "b", owner, "test") {
		t.Fatal("removal by owner failed")
	}
	u = recv(t, sub)
	if len(u.Removes) != 1 || u.Removes[0] != "b" {
		t.Fatalf("removal delta = %v", u)
	}
	// Other services' subscribers hear nothing of orders.
	other := NewSubscriber(0, nil)
	defer r.RemoveSubscriber(other)
	r.Subscribe(other, "inventory")
	recv(t, other)
	r.Upsert(inst("orders", "c", true), owner)
	recv(t, sub)
	none(t, other)
}

func TestConfigPushOnlyOnChange(t *testing.T) {
	r := New(Options{})
	sub := NewSubscriber(0, nil)
	defer r.RemoveSubscriber(sub)
	r.Upsert(inst("orders", "a", true), nil)
	r.Subscribe(sub, "orders")
	recv(t, sub)

	cfg := map[string][]*pb.ConfigObject{"orders": {{Kind: "TrafficPolicy", Name: "orders", SpecJson: []byte(`{"service":"orders"}`)}}}
	r.SetConfig(cfg)
	u := recv(t, sub)
	if !u.ConfigChanged || len(u.Config) != 1 {
		t.Fatalf("config update = %v", u)
	}
	r.SetConfig(cfg)
	none(t, sub)
	r.SetConfig(nil)
	u = recv(t, sub)
	if !u.ConfigChanged || len(u.Config) != 0 {
		t.Fatalf("config removal = %v", u)
	}
}

func TestSlowSubscriberIsCutOffNotBlocking(t *testing.T) {
	r := New(Options{})
	overflowed := make(chan struct{})
	slow := NewSubscriber(4, func() { close(overflowed) })
	fast := NewSubscriber(1000, nil)
	defer r.RemoveSubscriber(slow)
	defer r.RemoveSubscriber(fast)
	r.Subscribe(slow, "orders")
	r.Subscribe(fast, "orders")
	done := make(chan struct{})
	go func() {
		for i := range 100 {
			r.Upsert(&pb.Instance{Service: "orders", Id: "i", Address: "127.0.0.1:1", Version: string(rune('a' + i%26))}, nil)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("publishing blocked on a slow subscriber")
	}
	select {
	case <-overflowed:
	case <-time.After(time.Second):
		t.Fatal("slow subscriber was not cut off")
	}
	if r.Overflows() != 1 {
		t.Fatalf("Overflows = %d, want 1", r.Overflows())
	}
	n := 0
	for range len(fast.C) {
		<-fast.C
		n++
	}
	if n != 101 { // the reset and 100 deltas
		t.Fatalf("fast subscriber got %d updates, want 101", n)
	}
}

func TestSyncGraceHoldsEmptyServices(t *testing.T) {
	r := New(Options{SyncGrace: time.Hour})
	sub := NewSubscriber(0, nil)
	defer r.RemoveSubscriber(sub)
	r.Subscribe(sub, "orders", "ghost")
	none(t, sub) // held: instances may still be re-registering

	r.Upsert(inst("orders", "a", true), nil)
	u := recv(t, sub)
	if !u.Reset_ || len(u.Upserts) != 1 {
		t.Fatalf("first answer after registration = %v, want a reset with the instance", u)
	}
	none(t, sub)
	r.EndGrace()
	u = recv(t, sub)
	if u.Service != "ghost" || u.Exists {
		t.Fatalf("after grace = %v, want ghost exists=false", u)
	}
}

func names(vs []ServiceView) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

// A service whose last instance goes away disappears from the view
// (weft get services), whether or not someone still subscribes to it, and
// comes back with its next instance.
func TestServiceWithoutInstancesDisappears(t *testing.T) {
	r := New(Options{})
	owner := new(int)
	r.Upsert(inst("orders", "o1", true), owner)
	r.Upsert(inst("web", "w1", true), owner)
	sub := NewSubscriber(0, nil)
	r.Subscribe(sub, "web")
	recv(t, sub)
	if got := names(r.Services()); len(got) != 2 {
		t.Fatalf("services = %v, want orders and web", got)
	}
	r.Remove("orders", "o1", owner, "test")
	r.Remove("web", "w1", owner, "test")
	if got := names(r.Services()); len(got) != 0 {
		t.Fatalf("services after the last instances left = %v, want none", got)
	}
	if u := recv(t, sub); len(u.Removes) != 1 || u.Removes[0] != "w1" {
		t.Fatalf("subscriber got %v, want the removal of w1", u)
	}
	r.mu.Lock()
	_, kept := r.services["web"]
	_, leaked := r.services["orders"]
	r.mu.Unlock()
	if !kept || leaked {
		t.Fatalf("internal: web (subscribed) kept=%v, orders (unused) kept=%v; want true, false", kept, leaked)
	}
	r.Upsert(inst("web", "w2", true), owner)
	if got := names(r.Services()); len(got) != 1 || got[0] != "web" {
		t.Fatalf("services after w2 registered = %v, want [web]", got)
	}
	r.RemoveSubscriber(sub)
}
