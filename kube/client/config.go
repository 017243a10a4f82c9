package client

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Config says where the API server is and how to authenticate to it.
type Config struct {
	// Host is the API server's base URL, https://HOST:PORT.
	Host string
	// TLS is the client's TLS configuration: the CA the server is trusted
	// by (or InsecureSkipVerify), and the client certificate if any.
	TLS *tls.Config
	// Token is a fixed bearer token; TokenFile one re-read as it rotates
	// (a projected service account token). TokenFile wins when both are set.
	Token     string
	TokenFile string
	// UserAgent is sent with every request.
	UserAgent string
}

// Where a pod's service account is mounted.
const (
	serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// ErrNotInCluster is InCluster's error outside a pod.
var ErrNotInCluster = errors.New("unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined")

// InCluster is the configuration of a pod's service account: the API
// server from KUBERNETES_SERVICE_HOST and _PORT, its CA and the token
// (re-read as the kubelet rotates it) from the mounted service account.
func InCluster() (*Config, error) {
	return inCluster(serviceAccountDir)
}

func inCluster(dir string) (*Config, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, ErrNotInCluster
	}
	tokenFile := filepath.Join(dir, "token")
	if _, err := os.ReadFile(tokenFile); err != nil {
		return nil, fmt.Errorf("service account token: %w", err)
	}
	pool, err := caPool(filepath.Join(dir, "ca.crt"), nil)
	if err != nil {
		return nil, fmt.Errorf("service account CA: %w", err)
	}
	return &Config{
		Host:      "https://" + net.JoinHostPort(host, port),
		TLS:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TokenFile: tokenFile,
	}, nil
}

// The part of a kubeconfig file read here (clientcmd's v1 Config).
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthority     string `json:"certificate-authority"`
			CertificateAuthorityData string `json:"certificate-authority-data"`
			InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
			TLSServerName            string `json:"tls-server-name"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Token                 string         `json:"token"`
			TokenFile             string         `json:"tokenFile"`
			ClientCertificate     string         `json:"client-certificate"`
			ClientCertificateData string         `json:"client-certificate-data"`
			ClientKey             string         `json:"client-key"`
			ClientKeyData         string         `json:"client-key-data"`
			Exec                  map[string]any `json:"exec"`
			AuthProvider          map[string]any `json:"auth-provider"`
			Username              string         `json:"username"`
		} `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
}

// FromKubeconfig reads the current context of a kubeconfig file: its
// cluster's server, CA (file or data) or insecure-skip-tls-verify, and its
// user's token (or tokenFile) or client certificate and key (files or
// data). Relative file names are relative to the kubeconfig's directory,
// as kubectl reads them.
func FromKubeconfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("not a kubeconfig: %w", err)
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if kc.CurrentContext == "" {
		return nil, errors.New("no current-context")
	}
	ctxIdx := -1
	for i := range kc.Contexts {
		if kc.Contexts[i].Name == kc.CurrentContext {
			ctxIdx = i
		}
	}
	if ctxIdx < 0 {
		return nil, fmt.Errorf("current-context %q is not among its contexts", kc.CurrentContext)
	}
	kctx := kc.Contexts[ctxIdx].Context
	cfg := &Config{TLS: &tls.Config{MinVersion: tls.VersionTLS12}}
	found := false
	for _, c := range kc.Clusters {
		if c.Name != kctx.Cluster {
			continue
		}
		found = true
		cl := c.Cluster
		if cl.Server == "" {
			return nil, fmt.Errorf("cluster %q has no server", c.Name)
		}
		cfg.Host = strings.TrimSuffix(cl.Server, "/")
		cfg.TLS.ServerName = cl.TLSServerName
		if cl.InsecureSkipTLSVerify {
			cfg.TLS.InsecureSkipVerify = true
			break
		}
		if cl.CertificateAuthority != "" || cl.CertificateAuthorityData != "" {
			var pemData []byte
			if cl.CertificateAuthorityData != "" {
				if pemData, err = base64.StdEncoding.DecodeString(cl.CertificateAuthorityData); err != nil {
					return nil, fmt.Errorf("cluster %q: certificate-authority-data: %w", c.Name, err)
				}
			}
			if cfg.TLS.RootCAs, err = caPool(rel(cl.CertificateAuthority), pemData); err != nil {
				return nil, fmt.Errorf("cluster %q: %w", c.Name, err)
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("context %q names cluster %q, which is not among its clusters", kc.CurrentContext, kctx.Cluster)
	}
	for _, u := range kc.Users {
		if u.Name != kctx.User {
			continue
		}
		us := u.User
		switch {
		case us.Exec != nil:
			return nil, fmt.Errorf("user %q runs an exec credential plugin, which weft does not run: give it a token or a client certificate", u.Name)
		case us.AuthProvider != nil:
			return nil, fmt.Errorf("user %q uses an auth-provider, which weft does not support: give it a token or a client certificate", u.Name)
		case us.Username != "":
			return nil, fmt.Errorf("user %q uses basic authentication, which weft does not support: give it a token or a client certificate", u.Name)
		}
		cfg.Token, cfg.TokenFile = us.Token, rel(us.TokenFile)
		if us.ClientCertificate != "" || us.ClientCertificateData != "" {
			certPEM, err := fileOrData(rel(us.ClientCertificate), us.ClientCertificateData)
			if err != nil {
				return nil, fmt.Errorf("user %q: client-certificate: %w", u.Name, err)
			}
			keyPEM, err := fileOrData(rel(us.ClientKey), us.ClientKeyData)
			if err != nil {
				return nil, fmt.Errorf("user %q: client-key: %w", u.Name, err)
			}
			cert, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				return nil, fmt.Errorf("user %q: client certificate: %w", u.Name, err)
			}
			cfg.TLS.Certificates = []tls.Certificate{cert}
		}
	}
	return cfg, nil
}

func fileOrData(file, data string) ([]byte, error) {
	if data != "" {
		return base64.StdEncoding.DecodeString(data)
	}
	if file == "" {
		return nil, errors.New("neither a file nor data given")
	}
	return os.ReadFile(file)
}

// caPool is the pool of the PEM certificates in data, else in file.
func caPool(file string, data []byte) (*x509.CertPool, error) {
	if data == nil {
		var err error
		if data, err = os.ReadFile(file); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		name := file
		if name == "" {
			name = "certificate-authority-data"
		}
		return nil, fmt.Errorf("%s holds no PEM certificate", name)
	}
	return pool, nil
}
