// Package tokenreview checks Kubernetes ServiceAccount tokens with the API
// server's TokenReview API: a pod's sidecar proves who it is with the
// projected ServiceAccount token the kubelet mounts (bound to the pod, to
// an audience and to a short life), and the control plane asks the API
// server whether it is valid for that audience. The answer names the
// ServiceAccount (system:serviceaccount:NAMESPACE:NAME).
//
// Positive answers are cached briefly (a bounded map, an entry at most a
// minute and never past the token's own expiry), since every stream's
// greeting and every certificate renewal presents the token again.
// Refusals are not cached: a token the API server has not seen yet (a
// fresh rotation) must not stay refused.
package tokenreview

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/kube/client"
)

// DefaultAudience is the audience injected sidecars' tokens are bound to.
const DefaultAudience = "weft"

// Resource is the TokenReview API (cluster-scoped, create only).
var Resource = client.Resource{Group: "authentication.k8s.io", Version: "v1", Resource: "tokenreviews"}

// Account is a ServiceAccount a token authenticates as.
type Account struct {
	Namespace, Name string
}

// Creator is what a Reviewer needs of the API client (*client.Client).
type Creator interface {
	Create(ctx context.Context, r client.Resource, ns string, obj client.Object) (client.Object, error)
}

// Options tune a Reviewer; zero values take the defaults.
type Options struct {
	Audience string        // default DefaultAudience
	TTL      time.Duration // of a cached positive review; default 1 minute
	Max      int           // cached reviews at most; default 4096
	Now      func() time.Time
}

// Reviewer reviews tokens. It is safe for concurrent use.
type Reviewer struct {
	api Creator
	opt Options

	mu    sync.Mutex
	cache map[[32]byte]entry
}

type entry struct {
	acct  Account
	until time.Time
}

// New returns a Reviewer asking api.
func New(api Creator, opt Options) *Reviewer {
	if opt.Audience == "" {
		opt.Audience = DefaultAudience
	}
	if opt.TTL <= 0 {
		opt.TTL = time.Minute
	}
	if opt.Max <= 0 {
		opt.Max = 4096
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Reviewer{api: api, opt: opt, cache: map[[32]byte]entry{}}
}

// Audience is the audience tokens must be bound to.
func (r *Reviewer) Audience() string { return r.opt.Audience }

// LooksLike reports whether secret may be a Kubernetes token (a JWT: three
// base64url parts), so that other tokens are not sent to the API server.
func LooksLike(secret string) bool {
	return strings.Count(secret, ".") == 2 && strings.HasPrefix(secret, "eyJ")
}

// ErrRefused wraps every answer of the API server that does not
// authenticate the token as a ServiceAccount for the audience.
var ErrRefused = errors.New("kubernetes token refused")

// Review returns the ServiceAccount secret authenticates as, for the
// Reviewer's audience. Errors wrapping ErrRefused say why the API server
// refused it; others that it could not be asked.
func (r *Reviewer) Review(ctx context.Context, secret string) (Account, error) {
	secret = strings.TrimSpace(secret)
	key := sha256.Sum256([]byte(secret))
	now := r.opt.Now()
	r.mu.Lock()
	e, ok := r.cache[key]
	r.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.acct, nil
	}
	acct, err := r.ask(ctx, secret)
	if err != nil {
		return Account{}, err
	}
	until := now.Add(r.opt.TTL)
	if exp, ok := expiry(secret); ok && exp.Before(until) {
		until = exp
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= r.opt.Max {
		for k, e := range r.cache {
			if !now.Before(e.until) {
				delete(r.cache, k)
			}
		}
		for k := range r.cache { // still full: drop any
			if len(r.cache) < r.opt.Max {
				break
			}
			delete(r.cache, k)
		}
	}
	r.cache[key] = entry{acct: acct, until: until}
	return acct, nil
}

// Cached is the number of cached reviews (for tests).
func (r *Reviewer) Cached() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}

type reviewStatus struct {
	Status struct {
		Authenticated bool     `json:"authenticated"`
		Error         string   `json:"error"`
		Audiences     []string `json:"audiences"`
		User          struct {
			Username string `json:"username"`
		} `json:"user"`
	} `json:"status"`
}

func (r *Reviewer) ask(ctx context.Context, secret string) (Account, error) {
	req := client.Object{
		"apiVersion": "authentication.k8s.io/v1",
		"kind":       "TokenReview",
		"spec":       map[string]any{"token": secret, "audiences": []any{r.opt.Audience}},
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	obj, err := r.api.Create(ctx, Resource, "", req)
	if err != nil {
		return Account{}, fmt.Errorf("kubernetes token review: %w", err)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return Account{}, fmt.Errorf("kubernetes token review: %w", err)
	}
	var st reviewStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return Account{}, fmt.Errorf("kubernetes token review: %w", err)
	}
	s := st.Status
	if !s.Authenticated {
		why := s.Error
		if why == "" {
			why = "not authenticated"
		}
		return Account{}, fmt.Errorf("%w by the API server (audience %q): %s", ErrRefused, r.opt.Audience, why)
	}
	// An API server that ignores spec.audiences answers with its own
	// (or none); the token must be bound to ours.
	if !slices.Contains(s.Audiences, r.opt.Audience) {
		return Account{}, fmt.Errorf("%w: it is not bound to the audience %q (it is for %q)", ErrRefused, r.opt.Audience, s.Audiences)
	}
	acct, ok := ParseUsername(s.User.Username)
	if !ok {
		return Account{}, fmt.Errorf("%w: it authenticates user %q, not a ServiceAccount (system:serviceaccount:NAMESPACE:NAME)", ErrRefused, s.User.Username)
	}
	return acct, nil
}

// ParseUsername reads a ServiceAccount's username,
// system:serviceaccount:NAMESPACE:NAME.
func ParseUsername(u string) (Account, bool) {
	rest, ok := strings.CutPrefix(u, "system:serviceaccount:")
	if !ok {
		return Account{}, false
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return Account{}, false
	}
	return Account{Namespace: ns, Name: name}, true
}

// expiry reads a JWT's exp claim without verifying it: used only after
// the API server authenticated the token, to cap the cache entry.
func expiry(jwt string) (time.Time, bool) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil || c.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(c.Exp, 0), true
}
