package kube

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/kube/kubetest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// cond is an endpoint's conditions.
type cond struct{ ready, serving, terminating bool }

var readyCond = cond{ready: true, serving: true}

// ordersSlice is an EndpointSlice of service orders with endpoints a and b
// (the two pod addresses) on port, with their conditions.
func ordersSlice(port int, a, b cond) []byte {
	return []byte(fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: orders-1
  namespace: default
  labels: {kubernetes.io/service-name: orders}
addressType: IPv4
ports: [{name: http, port: %d, protocol: TCP}]
endpoints:
- addresses: [%s]
  conditions: {ready: %t, serving: %t, terminating: %t}
  targetRef: {kind: Pod, name: orders-a, namespace: default}
  zone: zone-a
- addresses: [%s]
  conditions: {ready: %t, serving: %t, terminating: %t}
  targetRef: {kind: Pod, name: orders-b, namespace: default}
  zone: zone-b
`, port, podIPs[0], a.ready, a.serving, a.terminating, podIPs[1], b.ready, b.serving, b.terminating))
}

const ordersService = `apiVersion: v1
kind: Service
metadata: {name: orders, namespace: default}
spec:
  selector: {app: orders}
  ports: [{name: http, port: 80}, {name: metrics, port: 9090}]
`

func pod(name string, labels string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default, labels: {%s}}
spec:
  containers: [{name: app, image: orders:1}]
`, name, labels))
}

// An unmeshed Kubernetes service (a Service, its pods, one EndpointSlice
// with two ready endpoints) is called by name through a client sidecar,
// which reaches both endpoints; one turning not ready stops getting
// traffic within a second.
func testEndpoints(t *testing.T, c *kubetest.Cluster, cp *harness.Control, cl *client) {
	a, b, port := twoBackends(t)
	c.MustKubectl(t, []byte(ordersService), "apply", "-f", "-")
	c.MustKubectl(t, pod("orders-a", "app: orders, version: v1"), "apply", "-f", "-")
	c.MustKubectl(t, pod("orders-b", "app: orders, version: v2"), "apply", "-f", "-")
	c.MustKubectl(t, ordersSlice(port, readyCond, readyCond), "apply", "-f", "-")

	seen := map[string]int{}
	var lastErr error
	if !harness.Poll(eventually, func() bool {
		name, err := cl.get("orders")
		if err != nil {
			lastErr = err
			return false
		}
		seen[name]++
		return seen[a.name] > 0 && seen[b.name] > 0
	}) {
		t.Fatalf("the client reached %v through the mesh, want both %s and %s (last error: %v)", seen, a.name, b.name, lastErr)
	}
	// Round robin: both get an equal share.
	seen = map[string]int{}
	for range 20 {
		name, err := cl.get("orders")
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	if seen[a.name] != 10 || seen[b.name] != 10 {
		t.Errorf("20 round-robin calls: %v, want 10 each", seen)
	}

	// The registry shows them with their pods' labels and zones.
	_, body, err := harness.Get(cp.URL + "/api/v1/services")
	if err != nil {
		t.Fatal(err)
	}
	var svcs struct {
		Services []struct {
			Name      string `json:"name"`
			Instances []struct {
				Address, Zone, Version string
				Ready                  bool
				Labels                 map[string]string
			} `json:"instances"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(body), &svcs); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, s := range svcs.Services {
		if s.Name != "orders" {
			continue
		}
		for _, in := range s.Instances {
			want := map[string][2]string{a.addr: {"zone-a", "v1"}, b.addr: {"zone-b", "v2"}}[in.Address]
			if in.Zone != want[0] || in.Version != want[1] || in.Labels["app"] != "orders" || !in.Ready {
				t.Errorf("instance %+v: want zone %s, version %s, label app=orders, ready", in, want[0], want[1])
			}
			found++
		}
	}
	if found != 2 {
		t.Errorf("the registry has %d instances of orders, want 2: %s", found, body)
	}

	// b turns not ready: from a second after the API took the change, no
	// call reaches it.
	c.MustKubectl(t, ordersSlice(port, readyCond, cond{}), "apply", "-f", "-")
	written := time.Now()
	var lastB time.Time
	deadline := written.Add(5 * time.Second)
	for time.Now().Before(deadline) {
		name, err := cl.get("orders")
		if err != nil {
			t.Fatalf("a call failed while b turned not ready: %v", err)
		}
		if name == b.name {
			lastB = time.Now()
		}
	}
	if lastB.IsZero() {
		t.Logf("b got no call once kubectl had written the update")
	} else {
		took := lastB.Sub(written)
		t.Logf("b's last call came %v after the EndpointSlice update", took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("b still got calls %v after it turned not ready, want at most 1s", took)
		}
	}

	// a stops being ready too while b terminates but still serves: with no
	// ready endpoint left, b takes the traffic until it is gone.
	c.MustKubectl(t, ordersSlice(port, cond{}, cond{serving: true, terminating: true}), "apply", "-f", "-")
	var last string
	if !harness.Poll(eventually, func() bool {
		for range 4 {
			name, err := cl.get("orders")
			if err != nil || name != b.name {
				last = fmt.Sprint(name, err)
				return false
			}
		}
		return true
	}) {
		t.Errorf("with only a terminating, serving b: calls still end as %s, want all on %s", last, b.name)
	}
	// Both gone: the mesh says so.
	c.MustKubectl(t, ordersSlice(port, cond{}, cond{terminating: true}), "apply", "-f", "-")
	if !harness.Poll(eventually, func() bool { _, err := cl.get("orders"); return err != nil && strings.Contains(err.Error(), "503") }) {
		t.Errorf("with no endpoint serving, a call does not fail with 503")
	}
}
