package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/kube/endpoints"
	"github.com/weftmesh/weft/kube/resources"
)

// kubeFlags are `weft control`'s Kubernetes flags.
type kubeFlags struct {
	enabled    bool
	kubeconfig string
	namespace  string
}

func (k *kubeFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&k.enabled, "kubernetes", false, "also take Weft resources (the weft.dev CRDs) and Services with their EndpointSlices from the Kubernetes API, and write the resources' status back; in-cluster config unless --kubeconfig")
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file of the Kubernetes API (implies --kubernetes)")
	f.StringVar(&k.namespace, "kube-namespace", "", "watch only this namespace (default: all)")
}

// start starts the Kubernetes side of the control plane, owned by ctx; the
// returned wait blocks until it has stopped. Nothing runs when disabled.
func (k *kubeFlags) start(ctx context.Context, s *control.Server, log *slog.Logger) (wait func(), err error) {
	if !k.enabled && k.kubeconfig == "" {
		return func() {}, nil
	}
	cfg, err := kube.Config(k.kubeconfig)
	if err != nil {
		return nil, err
	}
	kube.LogTo(log.With("component", "client-go"))
	client, err := kube.Client(cfg)
	if err != nil {
		return nil, err
	}
	rw, err := resources.New(resources.Options{Client: client, Sink: s, Namespace: k.namespace,
		Logger: log.With("component", "kube-resources")})
	if err != nil {
		return nil, err
	}
	ed, err := endpoints.New(endpoints.Options{Client: client, Registry: s.Registry(), Namespace: k.namespace,
		Logger: log.With("component", "kube-endpoints")})
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{"resources": rw.Run, "endpoints": ed.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				log.Error("kubernetes "+name, "err", err)
			}
		})
	}
	log.Info("watching kubernetes", "host", cfg.Host, "namespace", k.namespace)
	return wg.Wait, nil
}
