// Package kube connects the control plane to a Kubernetes API server: the
// client configuration (in-cluster, or a kubeconfig) and informers, both
// from kube/client, Weft's own small client (see its doc for why it is not
// client-go). Its sub-packages do the work: kube/resources (Weft's CRDs
// into the control plane, status back), kube/endpoints (Services and
// EndpointSlices into the registry), kube/inject (the sidecar injector).
package kube

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/weftmesh/weft/kube/client"
)

// Config returns the client configuration: from kubeconfig when given,
// else the in-cluster service account.
func Config(kubeconfig string) (*client.Config, error) {
	if kubeconfig != "" {
		c, err := client.FromKubeconfig(kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return c, nil
	}
	c, err := client.InCluster()
	if err != nil {
		return nil, fmt.Errorf("in-cluster Kubernetes config (give --kubeconfig when running outside a pod): %w", err)
	}
	return c, nil
}

// Client returns a client for cfg, with Weft's user agent.
func Client(cfg *client.Config) (*client.Client, error) {
	c := *cfg
	c.UserAgent = "weft-control"
	cl, err := client.New(&c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cl, nil
}

// Common resources.
var (
	Services       = client.Resource{Version: "v1", Resource: "services"}
	Pods           = client.Resource{Version: "v1", Resource: "pods"}
	Namespaces     = client.Resource{Version: "v1", Resource: "namespaces"}
	EndpointSlices = client.Resource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
)

// Resync is how often informers call their handler without a change, so
// a failed status write is retried.
const Resync = 10 * time.Minute

// Informer is an informer of one resource in namespace ns ("" for all)
// that calls onChange on every add, update and delete, and every Resync.
func Informer(c *client.Client, r client.Resource, ns string, log *slog.Logger, onChange func()) *client.Informer {
	inf := client.NewInformer(c, r, ns, log)
	inf.OnChange = onChange
	inf.Resync = Resync
	return inf
}

// Kick is a coalescing wake-up: many Kicks before the loop runs are one.
type Kick chan struct{}

// NewKick returns a Kick.
func NewKick() Kick { return make(Kick, 1) }

// Kick wakes the loop, never blocking.
func (k Kick) Kick() {
	select {
	case k <- struct{}{}:
	default:
	}
}
