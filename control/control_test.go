package control_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/discovery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs a control plane on loopback ports and stops it (checking that
// Run returns) when the test ends.
func start(t *testing.T) *control.Server {
	t.Helper()
	s, err := control.New(control.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), LeaseTTL: 2 * time.Second,
		// These streams register without certificates, as a permissive mesh lets them.
		Security: control.SecurityConfig{MTLS: "permissive"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("control plane did not stop")
		}
	})
	return s
}

func client(t *testing.T, addr string, inst *pb.Instance) *discovery.Client {
	t.Helper()
	c := discovery.New(discovery.Config{ControlAddr: addr, Instance: inst})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
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

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/yaml", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const policy = `apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders}
spec:
  service: orders
  loadBalancer: {algorithm: random}
`

func TestRegisterLookupPushDeregister(t *testing.T) {
	s := start(t)
	server := client(t, s.GRPCAddr(), &pb.Instance{Id: "orders-1", Service: "orders", Address: "127.0.0.1:9"})
	caller := client(t, s.GRPCAddr(), nil)

	ctx := context.Background()
	// The first lookup may come before the instance registers: the caller's
	// subscription stays, and the registration reaches it as a delta.
	if _, err := caller.Lookup(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if d, _ := caller.Cached("orders"); d != nil && len(d.Instances) != 0 {
		t.Fatalf("an instance whose app is not ready was registered: %v", d.Instances)
	}
	server.SetReady(true)
	eventually(t, "the instance to become ready at the caller", func() bool {
		d, _ := caller.Cached("orders")
		return len(d.Endpoints) == 1 && d.Endpoints[0].Address == "127.0.0.1:9"
	})

	if code, body := post(t, "http://"+s.HTTPAddr()+"/api/v1/apply", policy); code != http.StatusOK {
		t.Fatalf("apply: %d %s", code, body)
	}
	eventually(t, "the policy to reach the caller", func() bool {
		d, _ := caller.Cached("orders")
		return d.Algorithm == "random"
	})

	if err := server.Deregister(ctx); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	eventually(t, "the instance to leave the caller's view", func() bool {
		d, _ := caller.Cached("orders")
		return len(d.Instances) == 0
	})

	d, err := caller.Lookup(ctx, "nosuch")
	if err != nil || d.Exists {
		t.Fatalf("unknown service: %+v, %v; want exists=false", d, err)
	}
}

func TestApplyIsAllOrNothing(t *testing.T) {
	s := start(t)
	base := "http://" + s.HTTPAddr()
	bad := policy + "---\n" + strings.Replace(strings.Replace(policy, "orders", "inventory", -1), "random", "fastest", 1)
	code, body := post(t, base+"/api/v1/apply", bad)
	if code != http.StatusBadRequest || !strings.Contains(body, "round_robin") {
		t.Fatalf("bad manifest: %d %s; want 400 naming the valid algorithms", code, body)
	}
	resp, err := http.Get(base + "/api/v1/resources")
	if err != nil {
		t.Fatal(err)
	}
	var list control.ResourcesJSON
	_ = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Items) != 0 {
		t.Fatalf("a rejected manifest stored %d objects", len(list.Items))
	}

	if code, body := post(t, base+"/api/v1/apply", policy); code != http.StatusOK || !strings.Contains(body, "created") {
		t.Fatalf("apply: %d %s", code, body)
	}
	// A second policy for the same service conflicts with the stored one.
	other := strings.Replace(policy, "name: orders", "name: orders-two", 1)
	if code, body := post(t, base+"/api/v1/apply", other); code != http.StatusConflict || !strings.Contains(body, "both configure") {
		t.Fatalf("conflicting policy: %d %s; want 409", code, body)
	}
	if code, _ := post(t, base+"/api/v1/delete", other); code != http.StatusNotFound {
		t.Fatalf("deleting a missing object: %d, want 404", code)
	}
	if code, body := post(t, base+"/api/v1/delete", policy); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
}

func TestPortInUse(t *testing.T) {
	s := start(t)
	_, err := control.New(control.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: s.HTTPAddr(), DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "port already in use") || !strings.Contains(err.Error(), "--http-addr") {
		t.Fatalf("err = %v; want a port-in-use error naming --http-addr", err)
	}
}
