package sidecar_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/sidecar"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type running struct {
	cancel context.CancelFunc
	done   chan error
}

func (r running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not stop")
	}
}

func runCtl(t *testing.T) (*control.Server, running) {
	t.Helper()
	s, err := control.New(control.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, running{cancel, done}
}

func runSidecar(t *testing.T, cfg sidecar.Config) (*sidecar.Sidecar, running) {
	t.Helper()
	sc, err := sidecar.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	return sc, running{cancel, done}
}

func TestRequestThroughTwoSidecarsAndCleanStop(t *testing.T) {
	ctl, ctlRun := runCtl(t)

	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.Host+" via "+r.Header.Get("X-Weft-Source"))
	})}
	go appSrv.Serve(app)
	defer appSrv.Close()

	server, serverRun := runSidecar(t, sidecar.Config{Control: ctl.GRPCAddr(), Service: "orders", AppPort: app.Addr().(*net.TCPAddr).Port,
		Inbound: "127.0.0.1:0", Admin: "127.0.0.1:0", Drain: 2 * time.Second})
	// The client trims the (test) binary's pages as weft's does: it keeps
	// working, and its trim goroutine ends with Run.
	client, clientRun := runSidecar(t, sidecar.Config{Control: ctl.GRPCAddr(), Service: "web", Outbound: "127.0.0.1:0", Admin: "127.0.0.1:0",
		TrimExecutable: true})

	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	waitReady := func(admin string) {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if resp, err := hc.Get("http://" + admin + "/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s not ready", admin)
	}
	waitReady(server.AdminAddr())
	waitReady(client.AdminAddr())

	req, _ := http.NewRequest(http.MethodGet, "http://"+client.OutboundAddr()+"/x", nil)
	req.Host = "orders"
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello from orders via web" {
		t.Fatalf("got %d %q; want 200 from the app with Host and x-weft-source kept", resp.StatusCode, body)
	}

	resp, err = hc.Get("http://" + client.AdminAddr() + "/config")
	if err != nil {
		t.Fatal(err)
	}
	var cfg sidecar.ConfigView
	_ = json.NewDecoder(resp.Body).Decode(&cfg)
	resp.Body.Close()
	if !cfg.Control.Connected || len(cfg.Destinations) != 1 || cfg.Destinations[0].Service != "orders" ||
		len(cfg.Destinations[0].Instances) != 1 || cfg.Destinations[0].Instances[0].ID != server.ID() {
		t.Fatalf("client /config = %+v; want one destination orders with the server's instance", cfg)
	}

	// Drain deregisters: the caller's view loses the instance.
	if err := server.Drain(context.Background()); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, _ := client.Discovery().Cached("orders")
		if d != nil && len(d.Instances) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("drained instance still in the caller's view")
		}
		time.Sleep(10 * time.Millisecond)
	}
	serverRun.stop(t)
	clientRun.stop(t)
	ctlRun.stop(t)
}

func TestNewRejectsBadConfig(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tests := []struct {
		name string
		cfg  sidecar.Config
		want string
	}{
		{"no service", sidecar.Config{Control: "127.0.0.1:1"}, "--service"},
		{"bad service", sidecar.Config{Control: "127.0.0.1:1", Service: "Bad_Name"}, "--service"},
		{"bad control", sidecar.Config{Control: "nowhere", Service: "a"}, "--control"},
		{"bad app port", sidecar.Config{Control: "127.0.0.1:1", Service: "a", AppPort: 70000}, "--app-port"},
		{"bad app protocol", sidecar.Config{Control: "127.0.0.1:1", Service: "a", AppProtocol: "spdy"}, "--app-protocol"},
		{"outbound in use", sidecar.Config{Control: "127.0.0.1:1", Service: "a", Outbound: ln.Addr().String()}, "port already in use"},
		{"bad upstream name", sidecar.Config{Control: "127.0.0.1:1", Service: "a", Upstreams: map[string]string{"No!": "127.0.0.1:0"}}, "--upstream"},
		{"bad address", sidecar.Config{Control: "127.0.0.1:1", Service: "a", Admin: "localhost"}, "--admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sidecar.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v; want an error naming %s", err, tt.want)
			}
		})
	}
}
