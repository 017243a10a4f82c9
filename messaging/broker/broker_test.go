package broker

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, addr, dir string) (*Broker, context.CancelFunc, chan error) {
	t.Helper()
	b, err := New(Config{Addr: addr, StoreDir: dir, MaxPayload: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	return b, cancel, done
}

// A message stored before a restart is there after it: the store is on
// disk under StoreDir.
func TestPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	b, stop, done := start(t, "127.0.0.1:0", dir)
	addr := strings.TrimPrefix(b.URL(), "nats://")
	publish(t, b.URL())
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	b, stop, done = start(t, addr, dir)
	defer func() { stop(); <-done }()
	nc, err := nats.Connect(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if string(m.Data) != "hello" {
		t.Fatalf("after restart: data %q", m.Data)
	}
}

func publish(t *testing.T, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
}

func TestBadAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tests := []struct{ addr, want string }{
		{ln.Addr().String(), "--broker-addr " + ln.Addr().String() + ": port already in use"},
		{"localhost", "not a host:port"},
		{"127.0.0.1:x", "not a port number"},
	}
	for _, tt := range tests {
		_, err := New(Config{Addr: tt.addr, StoreDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q) = %v, want %q", tt.addr, err, tt.want)
		}
	}
}

// With a password (given to the server as a bcrypt hash), a client without
// it or with another is refused.
func TestPassword(t *testing.T) {
	b, err := New(Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Username: "weft", Password: "0123456789abcdef0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, c := range []struct {
		opts []nats.Option
		ok   bool
	}{
		{nil, false},
		{[]nats.Option{nats.UserInfo("weft", "guess")}, false},
		{[]nats.Option{nats.UserInfo("weft", "0123456789abcdef0123456789abcdef")}, true},
	} {
		nc, err := nats.Connect(b.URL(), append(c.opts, nats.Timeout(5*time.Second))...)
		if c.ok != (err == nil) || !c.ok && !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Errorf("connect %v: %v", c.opts, err)
		}
		if err == nil {
			nc.Close()
		}
	}
}
