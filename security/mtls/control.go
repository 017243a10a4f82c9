package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ControlPath is the SPIFFE ID path of the control plane's own
// certificate: spiffe://<trust-domain>/control.
const ControlPath = "/control"

// ControlClientConfig is a sidecar's TLS configuration for its stream to
// the control plane: the server must present a certificate chaining to
// bundlePEM (the mesh CA, as the control plane wrote it to DATA-DIR/ca.pem)
// with the URI SAN spiffe://<any trust domain>/control.
func ControlClientConfig(bundlePEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := bundlePEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("CA bundle: no PEM certificate in it")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The identity is the SPIFFE URI, checked below, not a hostname.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("control plane sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("control plane certificate: %w", err)
			}
			for _, u := range leaf.URIs {
				if u.Scheme == "spiffe" && u.Path == ControlPath {
					return nil
				}
			}
			return errors.New("control plane certificate: no spiffe://…/control URI SAN")
		},
	}, nil
}

// ControlClientConfigFile is ControlClientConfig from a PEM file.
func ControlClientConfigFile(path string) (*tls.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ControlClientConfig(b)
}

// ControlConfig is a TLS configuration for reaching the control plane's
// HTTPS API (span export) from a sidecar: the server must present a
// certificate chaining to the trust bundle of the moment with the URI SAN
// spiffe://<this trust domain>/control.
func (s *Source) ControlConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // the identity is the SPIFFE URI, checked below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("control plane sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.roots.Load(), Intermediates: inter, CurrentTime: s.now(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("control plane certificate: %w", err)
			}
			want := "spiffe://" + s.TrustDomain() + ControlPath
			for _, u := range leaf.URIs {
				if u.String() == want {
					return nil
				}
			}
			return fmt.Errorf("control plane certificate: no %s URI SAN", want)
		},
	}
}
