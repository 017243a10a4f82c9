package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/bind"
	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/kube/client"
	"github.com/weftmesh/weft/kube/endpoints"
	"github.com/weftmesh/weft/kube/inject"
	"github.com/weftmesh/weft/kube/resources"
	"github.com/weftmesh/weft/kube/tokenreview"
)

// kubeFlags are `weft control`'s Kubernetes flags.
type kubeFlags struct {
	enabled    bool
	kubeconfig string
	namespace  string

	// The sidecar injector.
	inject         bool
	webhookAddr    string
	webhookURL     string
	webhookService string
	webhookPort    int
	webhookCertDir string
	webhookHosts   []string
	webhookName    string
	failurePolicy  string
	sidecar        inject.Config
}

func (k *kubeFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&k.enabled, "kubernetes", false, "also take Weft resources (the weft.dev CRDs) and Services with their EndpointSlices from the Kubernetes API, and write the resources' status back; in-cluster config unless --kubeconfig")
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file of the Kubernetes API (implies --kubernetes)")
	f.StringVar(&k.namespace, "kube-namespace", "", "watch only this namespace (default: all)")
	f.BoolVar(&k.inject, "inject", false, "serve the sidecar injector (a mutating admission webhook for pods in namespaces, or pods, labelled weft.dev/inject=enabled) and register it with the API server")
	f.StringVar(&k.webhookAddr, "webhook-addr", ":15443", "where the injector listens (HTTPS)")
	f.StringVar(&k.webhookURL, "webhook-url", "", "how the API server reaches the injector from outside the cluster: https://HOST:PORT (the path is "+inject.Path+")")
	f.StringVar(&k.webhookService, "webhook-service", "", "how the API server reaches the injector in the cluster: NAMESPACE/NAME of the control plane's Service")
	f.IntVar(&k.webhookPort, "webhook-service-port", 443, "the port of --webhook-service that leads to --webhook-addr")
	f.StringVar(&k.webhookCertDir, "webhook-cert-dir", "", "directory with tls.crt, tls.key (and ca.crt) for the injector, e.g. a mounted cert-manager secret (default: a self-signed certificate made at start)")
	f.StringArrayVar(&k.webhookHosts, "webhook-host", nil, "DNS name or IP in the self-signed certificate (repeatable; default: the --webhook-service's names, or --webhook-url's host)")
	f.StringVar(&k.webhookName, "webhook-config-name", inject.DefaultConfigName, "name of the MutatingWebhookConfiguration the control plane keeps")
	f.StringVar(&k.failurePolicy, "webhook-failure-policy", "Fail", "when the injector cannot be reached: Fail (the pod is not created) or Ignore (created without the sidecar)")
	f.StringVar(&k.sidecar.Image, "sidecar-image", "", "the weft image injected sidecars run (required with --inject)")
	f.StringVar(&k.sidecar.Control, "sidecar-control", "", "the control plane's gRPC address as pods reach it, e.g. weft-control.weft-system.svc:15010 (required with --inject)")
	f.StringVar(&k.sidecar.ImagePullPolicy, "sidecar-image-pull-policy", "IfNotPresent", "imagePullPolicy of injected sidecars")
	f.StringVar(&k.sidecar.TokenAudience, "token-audience", tokenreview.DefaultAudience, "audience of the projected ServiceAccount tokens sidecars prove their service with (checked with a TokenReview; ServiceAccount NS/SA may register only service SA in namespace NS)")
}

// injector builds the injector's server from the flags.
func (k *kubeFlags) injector(kc *client.Client, log *slog.Logger) (*inject.Server, error) {
	if k.sidecar.Image == "" {
		return nil, errors.New("--inject needs --sidecar-image")
	}
	if k.sidecar.Control == "" {
		return nil, errors.New("--inject needs --sidecar-control (the control plane's gRPC address as pods reach it)")
	}
	reg := inject.Registration{Name: k.webhookName, URL: k.webhookURL, ServicePort: k.webhookPort, FailurePolicy: k.failurePolicy}
	hosts := k.webhookHosts
	switch {
	case k.webhookURL != "" && k.webhookService != "":
		return nil, errors.New("give --webhook-url or --webhook-service, not both")
	case k.webhookURL != "":
		u, err := url.Parse(k.webhookURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("--webhook-url %q: want https://HOST:PORT", k.webhookURL)
		}
		u.Path = inject.Path
		reg.URL = u.String()
		if len(hosts) == 0 {
			hosts = []string{u.Hostname()}
		}
	case k.webhookService != "":
		ns, name, ok := strings.Cut(k.webhookService, "/")
		if !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("--webhook-service %q: want NAMESPACE/NAME", k.webhookService)
		}
		reg.ServiceNamespace, reg.ServiceName = ns, name
		if len(hosts) == 0 {
			hosts = []string{name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"}
		}
	default:
		return nil, errors.New("--inject needs --webhook-service (in the cluster) or --webhook-url (outside it)")
	}
	switch k.failurePolicy {
	case "Fail", "Ignore":
	default:
		return nil, fmt.Errorf("--webhook-failure-policy %q: want Fail or Ignore", k.failurePolicy)
	}
	var cert tls.Certificate
	var err error
	if k.webhookCertDir != "" {
		cert, reg.CABundle, err = inject.LoadCert(k.webhookCertDir)
	} else {
		cert, reg.CABundle, err = inject.SelfSigned(hosts)
	}
	if err != nil {
		return nil, err
	}
	ln, err := bind.TCP("--webhook-addr", k.webhookAddr)
	if err != nil {
		return nil, err
	}
	return &inject.Server{Listener: ln, Cert: cert, Config: k.sidecar, Client: kc, Registration: reg,
		Logger: log.With("component", "injector")}, nil
}

// start starts the Kubernetes side of the control plane, owned by ctx; the
// returned wait blocks until it has stopped. Nothing runs when disabled.
func (k *kubeFlags) start(ctx context.Context, s *control.Server, log *slog.Logger) (wait func(), err error) {
	if !k.enabled && k.kubeconfig == "" {
		if k.inject {
			return nil, errors.New("--inject needs --kubernetes (or --kubeconfig)")
		}
		return func() {}, nil
	}
	cfg, err := kube.Config(k.kubeconfig)
	if err != nil {
		return nil, err
	}
	kc, err := kube.Client(cfg)
	if err != nil {
		return nil, err
	}
	rw, err := resources.New(resources.Options{Client: kc, Sink: s, Namespace: k.namespace,
		Logger: log.With("component", "kube-resources")})
	if err != nil {
		return nil, err
	}
	ed, err := endpoints.New(endpoints.Options{Client: kc, Registry: s.Registry(), Namespace: k.namespace,
		Logger: log.With("component", "kube-endpoints")})
	if err != nil {
		return nil, err
	}
	// Sidecars in pods prove their service with a ServiceAccount token.
	s.SetAccountReviewer(tokenreview.New(kc, tokenreview.Options{Audience: k.sidecar.TokenAudience}))
	runs := map[string]func(context.Context) error{"resources": rw.Run, "endpoints": ed.Run}
	if k.inject {
		inj, err := k.injector(kc, log)
		if err != nil {
			return nil, err
		}
		runs["injector"] = inj.Run
	}
	var wg sync.WaitGroup
	for name, run := range runs {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				log.Error("kubernetes "+name, "err", err)
			}
		})
	}
	log.Info("watching kubernetes", "host", cfg.Host, "namespace", k.namespace)
	return wg.Wait, nil
}
