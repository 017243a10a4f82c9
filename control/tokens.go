package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/weftmesh/weft/dashboard"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/kube/tokenreview"
	"github.com/weftmesh/weft/security/mtls"
	"github.com/weftmesh/weft/security/token"
	"github.com/weftmesh/weft/store"
)

// The local token: an admin token made on first start, kept in the store
// and written, readable by its owner only, to DATA-DIR/token and to the
// user's config directory under each address of this control plane, so the
// CLI, `weft run` and `weft demo` on this machine need no flag.
const localTokenSecret = "local-token"

func (s *Server) newTokens() error {
	var st token.Store
	b, _ := s.store.(*store.Bolt)
	if b != nil {
		st = b
	}
	m, err := token.Open(st)
	if err != nil {
		return err
	}
	s.tokens = m
	s.logins.codes, s.logins.sessions = map[string]grant{}, map[string]grant{}
	var local string
	if b != nil {
		v, err := b.GetSecret(localTokenSecret)
		if err != nil {
			return fmt.Errorf("local token: %w", err)
		}
		local = string(v)
	}
	if _, err := m.Check(local); err != nil {
		if local, _, err = m.Create(token.RoleAdmin, "", "local token (this machine)", 0); err != nil {
			return fmt.Errorf("local token: %w", err)
		}
		if b != nil {
			if err := b.PutSecret(localTokenSecret, []byte(local)); err != nil {
				return fmt.Errorf("local token: %w", err)
			}
		}
	}
	s.localToken = local
	return nil
}

// LocalToken is the admin token of this machine (for embedding: the demo).
func (s *Server) LocalToken() string { return s.localToken }

// localTokenPaths are the files the local token is written to.
func (s *Server) localTokenPaths() []string {
	paths := []string{filepath.Join(s.cfg.DataDir, "token")}
	for _, ln := range []net.Listener{s.httpLn, s.grpcLn} {
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		for _, a := range []string{ln.Addr().String(), "127.0.0.1:" + port, "localhost:" + port} {
			if p, err := token.LocalFile(a); err == nil {
				paths = append(paths, p)
			}
		}
	}
	return paths
}

// writeLocalToken writes the files and returns a func removing those under
// the user's config directory (the one in the data dir stays).
func (s *Server) writeLocalToken() func() {
	token.PruneLocal(512)
	var written []string
	for i, p := range s.localTokenPaths() {
		if err := token.WriteFile(p, s.localToken); err != nil {
			s.log.Warn("local token file not written; CLI commands here need --token", "path", p, "err", err)
			continue
		}
		if i > 0 {
			written = append(written, p)
		}
	}
	written = append(written, s.writeBundles()...)
	return func() {
		for _, p := range written {
			if strings.HasSuffix(p, ".ca.pem") {
				_ = os.Remove(p)
				continue
			}
			if t, _ := token.ReadFile(p); t == s.localToken {
				_ = os.Remove(p)
			}
		}
	}
}

// writeBundles writes the CA bundle and returns the files written under
// the user's config directory. It runs at start and after each step of a
// root rotation, so the CLI and sidecars here trust the roots of the moment.
func (s *Server) writeBundles() []string {
	var written []string
	// The CA bundle: always in the data dir (for --ca-bundle elsewhere);
	// beside the token files of the gRPC addresses when that port is TLS,
	// which is how sidecars here know to verify it.
	bundle := strings.TrimSpace(string(s.sec.ca.BundlePEM()))
	if err := token.WriteFile(filepath.Join(s.cfg.DataDir, "ca.pem"), bundle); err != nil {
		s.log.Warn("CA bundle file not written", "err", err)
	}
	// Beside the HTTP API's token files, always: the CLI verifies an
	// https API by it.
	hport := strconv.Itoa(s.httpLn.Addr().(*net.TCPAddr).Port)
	for _, a := range []string{s.httpLn.Addr().String(), "127.0.0.1:" + hport, "localhost:" + hport} {
		if p, err := token.LocalFile(a); err == nil && token.WriteFile(p+".ca.pem", bundle) == nil {
			written = append(written, p+".ca.pem")
		}
	}
	port := strconv.Itoa(s.grpcLn.Addr().(*net.TCPAddr).Port)
	for _, a := range []string{s.grpcLn.Addr().String(), "127.0.0.1:" + port, "localhost:" + port} {
		p, err := token.LocalFile(a)
		if err != nil {
			continue
		}
		p += ".ca.pem"
		if !s.grpcTLS() {
			_ = os.Remove(p)
			continue
		}
		if err := token.WriteFile(p, bundle); err == nil {
			written = append(written, p)
		}
	}
	return written
}

// checkJoin decides whether a CSR's token may claim service in namespace:
// a join token of this control plane, or, with a ServiceAccount reviewer
// set (weft control --kubernetes), a Kubernetes ServiceAccount token, which
// may claim exactly service = its ServiceAccount's name in its namespace.
func (s *Server) checkJoin(ctx context.Context, secret, namespace, service string) error {
	t, err := s.tokens.Check(secret)
	if errors.Is(err, token.ErrMissing) {
		return errors.New("no join token: give the sidecar --token, WEFT_TOKEN or --token-file (weft token create --service " + service + "), or run it on the control plane's machine, where the local token file is found")
	}
	if rv := s.accounts.Load(); errors.Is(err, token.ErrInvalid) && rv != nil && tokenreview.LooksLike(strings.TrimSpace(secret)) {
		return checkAccount(ctx, *rv, secret, namespace, service)
	}
	if errors.Is(err, token.ErrInvalid) && tokenreview.LooksLike(strings.TrimSpace(secret)) {
		return errors.New("join token: this looks like a Kubernetes ServiceAccount token, but the control plane does not check those: run weft control with --kubernetes (or --kubeconfig), or give the sidecar a join token (weft token create --service " + service + ")")
	}
	if err != nil {
		return fmt.Errorf("join token: %w", err)
	}
	return t.MayJoin(service)
}

// AccountReviewer authenticates Kubernetes ServiceAccount tokens
// (*tokenreview.Reviewer).
type AccountReviewer interface {
	Review(ctx context.Context, secret string) (tokenreview.Account, error)
}

// SetAccountReviewer makes CSRs with a Kubernetes ServiceAccount token
// acceptable (weft control --kubernetes); nil turns that off.
func (s *Server) SetAccountReviewer(r AccountReviewer) {
	if r == nil {
		s.accounts.Store(nil)
		return
	}
	s.accounts.Store(&r)
}

// checkAccount applies the mapping rule: ServiceAccount NS/SA may claim
// service SA in namespace NS (Istio's rule too), nothing else.
func checkAccount(ctx context.Context, rv AccountReviewer, secret, namespace, service string) error {
	acct, err := rv.Review(ctx, secret)
	if err != nil {
		return err
	}
	if namespace == "" {
		namespace = mtls.DefaultNamespace
	}
	if acct.Name != service || acct.Namespace != namespace {
		return fmt.Errorf("the Kubernetes token is for ServiceAccount %s/%s, which may register only service %q in namespace %q, not %q in %q (a pod's ServiceAccount must be named for its service)",
			acct.Namespace, acct.Name, acct.Name, acct.Namespace, service, namespace)
	}
	return nil
}

// withAuth guards the API. With --api-auth (the default) every call needs
// a token — GET and HEAD a read or admin one, everything else admin — as a
// bearer token, or the dashboard's session cookie (see login.go); token
// management and CA rotation need an admin token even without it. Span
// export (POST /v1/traces) takes the sidecars' OTLP token or an admin one
// (checkSpans). Open: /healthz, the dashboard's own pages and assets (no
// data; they must load to ask for a token) and /login (which checks its
// one-time code).
func (s *Server) withAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		always := strings.HasPrefix(p, "/api/v1/tokens") || strings.HasPrefix(p, "/api/v1/ca/rotate")
		if p == "/v1/traces" {
			// Spans come from sidecars with a token of their own (checkSpans).
			if code, msg := s.checkSpans(bearerToken(r.Header.Get("Authorization"))); code != 0 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="weft"`)
				authError(w, code, msg)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if p == "/healthz" || p == "/login" || dashboard.Public(p) || (!always && !s.cfg.Security.APIAuth) {
			next.ServeHTTP(w, r)
			return
		}
		secret, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !bearer || strings.TrimSpace(secret) == "" {
			secret = s.sessionSecret(r)
		}
		t, err := s.tokens.Check(secret)
		if err != nil {
			msg := "API token: " + err.Error()
			if errors.Is(err, token.ErrMissing) {
				msg = "no API token: send Authorization: Bearer TOKEN (the CLI: --token, $WEFT_TOKEN, or the local token file on the control plane's machine; a browser: the URL weft dashboard prints)"
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="weft"`)
			authError(w, http.StatusUnauthorized, msg)
			return
		}
		read := r.Method == http.MethodGet || r.Method == http.MethodHead
		if t.Role == token.RoleAdmin || (t.Role == token.RoleRead && (read || p == "/api/v1/login") && !always) {
			next.ServeHTTP(w, withSecret(r, secret))
			return
		}
		authError(w, http.StatusForbidden, fmt.Sprintf("a %s token may not %s %s: use an admin token", t.Role, r.Method, p))
	})
}

// authError answers in one line of JSON, so curl shows one clear line too.
func authError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(ErrorJSON{Error: msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// TokenRequestJSON is POST /api/v1/tokens.
type TokenRequestJSON struct {
	Role        string `json:"role"` // join (default), admin, read
	Service     string `json:"service,omitempty"`
	TTL         string `json:"ttl,omitempty"` // Go duration; empty: never expires
	Description string `json:"description,omitempty"`
}

// TokenCreatedJSON answers it: the secret, shown once.
type TokenCreatedJSON struct {
	Token string      `json:"token"`
	Info  token.Token `json:"info"`
}

func (s *Server) tokenRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"tokens": s.tokens.List()})
	})
	mux.HandleFunc("POST /api/v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequestJSON
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorJSON{Error: "token request: " + err.Error()})
			return
		}
		if req.Role == "" {
			req.Role = token.RoleJoin
		}
		var ttl time.Duration
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil || d <= 0 {
				writeJSON(w, http.StatusBadRequest, ErrorJSON{Error: fmt.Sprintf("--ttl %q: want a positive duration such as 24h", req.TTL)})
				return
			}
			ttl = d
		}
		secret, t, err := s.tokens.Create(req.Role, req.Service, req.Description, ttl)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorJSON{Error: err.Error()})
			return
		}
		t.Hash = ""
		writeJSON(w, http.StatusCreated, TokenCreatedJSON{Token: secret, Info: t})
	})
	mux.HandleFunc("DELETE /api/v1/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.tokens.Revoke(r.PathValue("id")); err != nil {
			writeJSON(w, http.StatusNotFound, ErrorJSON{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"revoked": r.PathValue("id")})
	})
}
