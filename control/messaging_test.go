package control_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/messaging"
)

// With --broker off the messaging API says so; with a bad --broker the
// control plane does not start.
func TestMessagingConfig(t *testing.T) {
	if _, err := control.New(control.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), Broker: "localhost:4222"}); err == nil || !strings.Contains(err.Error(), "--broker") {
		t.Fatalf("bad --broker: err = %v", err)
	}
	if _, err := control.New(control.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), MaxMessageBytes: 1 << 30}); err == nil || !strings.Contains(err.Error(), "--max-message-bytes") {
		t.Fatalf("huge --max-message-bytes: err = %v", err)
	}
	if _, err := control.New(control.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), BrokerAddr: "127.0.0.1:0",
		NATS: messaging.ClientFiles{User: "u", Password: "p"}}); err == nil || !strings.Contains(err.Error(), "are for an external NATS") {
		t.Fatalf("--nats-user with the embedded broker: err = %v", err)
	}
	s, err := control.New(control.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), Broker: control.BrokerOff})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for _, path := range []string{"/api/v1/topics", "/api/v1/topics/orders/dlq"} {
		var resp *http.Response
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err = http.Get("http://" + s.HTTPAddr() + path)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(body), "messaging is off") {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
}
