// Package kube connects the control plane to a Kubernetes API server: the
// client configuration (in-cluster, or a kubeconfig), and informers over the
// dynamic client. Its sub-packages do the work: kube/resources (Weft's CRDs
// into the control plane, status back), kube/endpoints (Services and
// EndpointSlices into the registry), kube/inject (the sidecar injector).
//
// Only client-go's rest, dynamic and tools packages are linked, never the
// typed clientset or typed informers, which would add megabytes of generated
// code for every Kubernetes API to the one binary.
package kube

import (
	"fmt"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Config returns the client configuration: from kubeconfig when given,
// else the in-cluster service account.
func Config(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return c, nil
	}
	c, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster Kubernetes config (give --kubeconfig when running outside a pod): %w", err)
	}
	return c, nil
}

// Client returns a dynamic client for cfg, with Weft's user agent.
func Client(cfg *rest.Config) (*dynamic.DynamicClient, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "weft-control"
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// LogTo sends client-go's own logging (klog) to log.
func LogTo(log *slog.Logger) { klog.SetSlogLogger(log) }

// Common resources.
var (
	Services       = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	Pods           = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	Namespaces     = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	EndpointSlices = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
)

// Informer is a shared informer of one resource through the dynamic client,
// in namespace ns ("" for all). It is what client-go's dynamicinformer
// builds, without that package, which links every typed informer.
func Informer(c dynamic.Interface, gvr schema.GroupVersionResource, ns string) cache.SharedIndexInformer {
	ri := c.Resource(gvr).Namespace(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return ri.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return ri.Watch(ctx, o)
		},
	}
	return cache.NewSharedIndexInformer(lw, &unstructured.Unstructured{}, 10*time.Minute,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// OnChange calls f on every add, update and delete of inf's objects.
func OnChange(inf cache.SharedIndexInformer, f func()) error {
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f() },
		UpdateFunc: func(any, any) { f() },
		DeleteFunc: func(any) { f() },
	})
	return err
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
