package kubetest

import (
	"strings"
	"testing"
)

// The API server answers kubectl with the admin kubeconfig, and stores
// what it is given (etcd behind it works).
func TestStart(t *testing.T) {
	c := Start(t)
	c.MustKubectl(t, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: kubetest}\n"), "apply", "-f", "-")
	out := c.MustKubectl(t, nil, "get", "namespace", "kubetest", "-o", "name")
	if strings.TrimSpace(out) != "namespace/kubetest" {
		t.Fatalf("kubectl get namespace: %q", out)
	}
}
