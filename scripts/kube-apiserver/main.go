// Command kube-apiserver is Kubernetes' own API server, built from the
// pinned k8s.io/kubernetes module for Weft's tests (no kubelet, no cluster:
// just the API over a local etcd).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
