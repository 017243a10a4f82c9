package kube

import (
	"os/exec"
	"strings"
	"testing"
)

// Bad Kubernetes flags are refused at start, naming the flag.
func TestBadKubeFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--inject"}, "--inject needs --kubernetes"},
		{[]string{"--kubeconfig", "/nonexistent/kubeconfig"}, "--kubeconfig /nonexistent/kubeconfig"},
		{[]string{"--kubernetes"}, "give --kubeconfig when running outside a pod"},
	} {
		dir := t.TempDir()
		args := append([]string{"control", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--broker", "off", "--data-dir", dir}, tc.args...)
		out, err := exec.Command(bins.Weft, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("weft %s: err %v, output %q; want a failure saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
	out, err := exec.Command(bins.Weft, "inject", "-f", "/nonexistent.yaml").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "reading /nonexistent.yaml") {
		t.Errorf("weft inject -f /nonexistent.yaml: %v %q", err, out)
	}
}
