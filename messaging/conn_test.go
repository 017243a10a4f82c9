package messaging_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/broker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startBroker(t *testing.T) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// The URL arrives late, then changes: the connection follows.
func TestConnFollowsURL(t *testing.T) {
	a, b := startBroker(t), startBroker(t)
	var url atomic.Value
	url.Store("")
	c := messaging.NewConn(messaging.ConnConfig{Access: func() messaging.Access { return messaging.Access{URLs: url.Load().(string)} }, Lazy: true, Poll: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = c.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	short, stop := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := c.Wait(short)
	stop()
	if !errors.Is(err, messaging.ErrNoBroker) {
		t.Fatalf("no URL yet: err = %v, want ErrNoBroker", err)
	}
	url.Store(a.URL())
	wctx, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	s, err := c.Wait(wctx)
	if err != nil || s.URL != a.URL() {
		t.Fatalf("Wait = %v %v, want a session on %s", s, err, a.URL())
	}
	changed := c.Changed()
	url.Store(b.URL())
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("no change after the URL changed")
	}
	s, err = c.Wait(wctx)
	if err != nil || s.URL != b.URL() {
		t.Fatalf("after the change: %v %v", s, err)
	}
}

// An unreachable broker: Wait ends with ErrBrokerUnavailable naming it.
func TestConnUnreachable(t *testing.T) {
	c := messaging.NewConn(messaging.ConnConfig{Access: func() messaging.Access { return messaging.Access{URLs: "nats://127.0.0.1:1"} }, Poll: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wctx, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	defer stop()
	_, err := c.Wait(wctx)
	if !errors.Is(err, messaging.ErrBrokerUnavailable) {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}

// Credentials that change under the same URL (the control plane handing
// out new ones) replace the session too.
func TestConnFollowsCredentials(t *testing.T) {
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Username: "weft", Password: "right"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	var access atomic.Pointer[messaging.Access]
	access.Store(&messaging.Access{URLs: b.URL(), User: "weft", Password: "wrong"})
	c := messaging.NewConn(messaging.ConnConfig{Access: func() messaging.Access { return *access.Load() }, Poll: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = c.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Wait(short)
	stop()
	if !errors.Is(err, messaging.ErrBrokerUnavailable) {
		t.Fatalf("wrong password: err = %v, want ErrBrokerUnavailable", err)
	}
	access.Store(&messaging.Access{URLs: b.URL(), User: "weft", Password: "right"})
	wctx, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	s, err := c.Wait(wctx)
	if err != nil || s.Access.Password != "right" {
		t.Fatalf("after the password changed: %v %v", s, err)
	}
}
