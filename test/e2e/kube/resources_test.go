package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/kube/kubetest"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// The CRDs install; the same YAML goes through kubectl and weft's decoder;
// a TrafficPolicy applied with kubectl reaches a sidecar; an invalid one is
// refused in its status with the reason; fixing it is accepted.
func testResources(t *testing.T, c *kubetest.Cluster, cp *harness.Control, cl *client) {
	examples := filepath.Join(repo(t), "deploy", "kubernetes", "examples")
	files, _ := filepath.Glob(filepath.Join(examples, "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no examples in deploy/kubernetes/examples")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resource.Decode(b); err != nil {
			t.Errorf("weft's decoder refuses %s: %v", f, err)
		}
		c.MustKubectl(t, b, "apply", "--dry-run=server", "-f", "-")
	}

	// The client subscribes to orders on its first call.
	_, _ = cl.get("orders")
	policy := func(algorithm string) []byte {
		return []byte("apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: orders, namespace: default}\nspec:\n  service: orders\n  loadBalancer: {algorithm: " + algorithm + "}\n")
	}
	c.MustKubectl(t, policy("random"), "apply", "-f", "-")
	if !harness.Poll(eventually, func() bool {
		d, ok := cl.destination("orders")
		return ok && d.Algorithm == "random"
	}) {
		d, _ := cl.destination("orders")
		t.Fatalf("the client sidecar's orders destination has algorithm %q, want random from the kubectl-applied policy", d.Algorithm)
	}
	waitCondition(t, c, "trafficpolicy/orders", "True", "Accepted")

	// An algorithm the schema allows (a string) but weft refuses.
	c.MustKubectl(t, policy("fastest"), "apply", "-f", "-")
	msg := waitCondition(t, c, "trafficpolicy/orders", "False", "Invalid")
	if !strings.Contains(msg, "fastest") || !strings.Contains(msg, "round_robin") {
		t.Errorf("the Invalid condition's message does not name the bad algorithm and the valid ones: %q", msg)
	}
	// The refused policy no longer applies: the service is back to its default.
	if !harness.Poll(eventually, func() bool {
		d, ok := cl.destination("orders")
		return ok && d.Algorithm == resource.DefaultAlgorithm
	}) {
		t.Errorf("after the policy turned invalid the client still uses %+v", func() string { d, _ := cl.destination("orders"); return d.Algorithm }())
	}

	// A second policy for the same service in another namespace conflicts.
	c.MustKubectl(t, policy("round_robin"), "apply", "-f", "-")
	waitCondition(t, c, "trafficpolicy/orders", "True", "Accepted")
	c.MustKubectl(t, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n"), "apply", "-f", "-")
	c.MustKubectl(t, []byte("apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: orders-too, namespace: other}\nspec: {service: orders}\n"), "apply", "-f", "-")
	msg = waitCondition(t, c, "-n other trafficpolicy/orders-too", "False", "Conflict")
	if !strings.Contains(msg, "TrafficPolicy/orders") {
		t.Errorf("the Conflict message does not name the policy it conflicts with: %q", msg)
	}
	c.MustKubectl(t, nil, "delete", "-n", "other", "trafficpolicy/orders-too")
}

// waitCondition waits for the Accepted condition of obj ("kind/name", with
// a leading "-n NS " for another namespace) to have status and reason, and
// returns its message.
func waitCondition(t *testing.T, c *kubetest.Cluster, obj, status, reason string) string {
	t.Helper()
	args := strings.Fields(obj)
	args = append([]string{"get"}, args...)
	args = append(args, "-o", `jsonpath={.status.conditions[?(@.type=="Accepted")].status}|{.status.conditions[?(@.type=="Accepted")].reason}|{.status.conditions[?(@.type=="Accepted")].message}`)
	var last string
	if !harness.Poll(eventually, func() bool {
		out, err := c.Kubectl(nil, args...)
		last = out
		return err == nil && strings.HasPrefix(out, status+"|"+reason+"|")
	}) {
		t.Fatalf("%s: Accepted condition is %q, want %s/%s", obj, last, status, reason)
	}
	_, msg, _ := strings.Cut(strings.TrimPrefix(last, status+"|"), "|")
	return msg
}

// TestKubernetes runs every Kubernetes scenario against one API server and
// one control plane, in order.
func TestKubernetes(t *testing.T) {
	c := kubetest.Start(t)
	installCRDs(t, c)
	cp := startControl(t, c, injectFlags(t)...)
	cl := startClient(t, cp)
	t.Run("Resources", func(t *testing.T) { testResources(t, c, cp, cl) })
	t.Run("Endpoints", func(t *testing.T) { testEndpoints(t, c, cp, cl) })
	t.Run("Inject", func(t *testing.T) { testInject(t, c, cp, cl) })
}
