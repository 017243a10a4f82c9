package main

import (
	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/security/ca"
)

// addControlSecurityFlags adds the control plane's mesh-identity flags.
func addControlSecurityFlags(f *pflag.FlagSet, c *control.SecurityConfig) {
	f.StringVar(&c.TrustDomain, "trust-domain", ca.DefaultTrustDomain, "SPIFFE trust domain of every workload identity (spiffe://TD/ns/NS/sa/SERVICE)")
	f.StringVar(&c.CACert, "ca-cert", "", "PEM file of your CA certificate (e.g. an intermediate of your PKI; may hold the chain up to the root); default: a root made on first start and kept in --data-dir")
	f.StringVar(&c.CAKey, "ca-key", "", "PEM file of the --ca-cert key")
	f.DurationVar(&c.CertTTL, "cert-ttl", ca.DefaultLeafTTL, "lifetime of workload certificates (sidecars renew at half of it)")
	f.StringVar(&c.MTLS, "mtls", "permissive", "what sidecars' inbound ports accept: permissive (mutual TLS, which sidecars always use with each other, or plaintext) or strict (mutual TLS only)")
}

// addSecurity adds a sidecar's identity flags.
func (s *sidecarFlags) addSecurity(f *pflag.FlagSet) {
	f.StringVar(&s.cfg.Namespace, "namespace", "default", "namespace of this instance's identity (spiffe://TD/ns/NAMESPACE/sa/SERVICE)")
}
