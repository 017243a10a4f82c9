package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// KindAuthorizationPolicy says which callers may call a service: enforced
// by the destination's inbound sidecar, on the caller's verified identity
// (its mTLS certificate) and the request. Deny policies win; when a
// service has allow policies, a request none of them matches is denied.
const KindAuthorizationPolicy = "AuthorizationPolicy"

// Authorization actions.
const (
	AuthzAllow = "allow"
	AuthzDeny  = "deny"
)

// Bounds, so one policy cannot make a sidecar's per-request check long.
const (
	MaxAuthzRules   = 64
	MaxAuthzValues  = 64 // per list in a rule
	MaxAuthzPathLen = 1024
)

// AuthorizationPolicySpec is the spec of an AuthorizationPolicy.
type AuthorizationPolicySpec struct {
	// Service is the destination service the policy protects.
	Service string `json:"service"`
	// Action is allow or deny.
	Action string `json:"action"`
	// Rules: the policy applies to a request matching any rule. No rules:
	// every request (deny-all, or allow-all).
	Rules []AuthzRule `json:"rules,omitempty"`
}

// AuthzRule matches a request when every field given matches (a field's
// values are alternatives).
type AuthzRule struct {
	// Services are calling services (from their certificate's SPIFFE ID).
	Services []string `json:"services,omitempty"`
	// Namespaces are calling namespaces.
	Namespaces []string `json:"namespaces,omitempty"`
	// Principals are full SPIFFE IDs, spiffe://TD/ns/NS/sa/SERVICE.
	Principals []string `json:"principals,omitempty"`
	// Paths are exact paths ("/orders"), prefixes ending in "/*"
	// ("/orders/*" matches "/orders/" and below, and "/orders"), or "*".
	// They are matched against the normalised request path (see package
	// authz): percent-decoded, dot-segments resolved, duplicate slashes
	// merged; case-sensitive.
	Paths []string `json:"paths,omitempty"`
	// Methods are HTTP methods (upper case), e.g. GET.
	Methods []string `json:"methods,omitempty"`
	// Headers must all be present with one of the values given ("*": any
	// value). Names are case-insensitive.
	Headers map[string][]string `json:"headers,omitempty"`
}

// ParseAuthorizationPolicySpec decodes a spec strictly and validates it.
func ParseAuthorizationPolicySpec(raw json.RawMessage) (AuthorizationPolicySpec, error) {
	var s AuthorizationPolicySpec
	if err := decodeSpec(raw, &s); err != nil {
		return s, err
	}
	return s, s.Validate()
}

// Validate checks every field; errors name the field (after "spec.").
func (s *AuthorizationPolicySpec) Validate() error {
	if err := ValidateName(s.Service); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if s.Action != AuthzAllow && s.Action != AuthzDeny {
		return fmt.Errorf("action: %q: want allow or deny", s.Action)
	}
	if len(s.Rules) > MaxAuthzRules {
		return fmt.Errorf("rules: at most %d", MaxAuthzRules)
	}
	for i, r := range s.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("rules[%d].%w", i, err)
		}
	}
	return nil
}

func (r *AuthzRule) validate() error {
	lists := []struct {
		name string
		vals []string
	}{{"services", r.Services}, {"namespaces", r.Namespaces}, {"principals", r.Principals}, {"paths", r.Paths}, {"methods", r.Methods}}
	for _, l := range lists {
		if len(l.vals) > MaxAuthzValues {
			return fmt.Errorf("%s: at most %d values", l.name, MaxAuthzValues)
		}
	}
	for j, v := range r.Services {
		if err := ValidateName(v); err != nil {
			return fmt.Errorf("services[%d]: %w", j, err)
		}
	}
	for j, v := range r.Namespaces {
		if err := ValidateName(v); err != nil {
			return fmt.Errorf("namespaces[%d]: %w", j, err)
		}
	}
	for j, v := range r.Principals {
		if !strings.HasPrefix(v, "spiffe://") || len(v) > 2048 {
			return fmt.Errorf("principals[%d]: %q: want a SPIFFE ID spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE", j, v)
		}
	}
	for j, p := range r.Paths {
		if err := validateAuthzPath(p); err != nil {
			return fmt.Errorf("paths[%d]: %q: %w", j, p, err)
		}
	}
	for j, m := range r.Methods {
		if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " \t/") || len(m) > 32 {
			return fmt.Errorf("methods[%d]: %q: want an upper-case HTTP method such as GET", j, m)
		}
	}
	if len(r.Headers) > MaxAuthzValues {
		return fmt.Errorf("headers: at most %d", MaxAuthzValues)
	}
	for name, vals := range r.Headers {
		if name == "" || strings.ContainsAny(name, " \t:\r\n") || http.CanonicalHeaderKey(name) == "" {
			return fmt.Errorf("headers: %q is not a header name", name)
		}
		if len(vals) == 0 || len(vals) > MaxAuthzValues {
			return fmt.Errorf("headers.%s: want 1 to %d values (\"*\": any)", name, MaxAuthzValues)
		}
	}
	return nil
}

// validateAuthzPath: a policy path is written in its normalised form, so
// that what it names is what the normaliser produces (a pattern with "..",
// "//", "%" or "\" could never match, and would look like it protects
// something).
func validateAuthzPath(p string) error {
	if p == "*" {
		return nil
	}
	if !strings.HasPrefix(p, "/") {
		return errors.New(`must start with "/" (or be "*")`)
	}
	if len(p) > MaxAuthzPathLen {
		return fmt.Errorf("longer than %d bytes", MaxAuthzPathLen)
	}
	body := strings.TrimSuffix(p, "/*")
	if strings.Contains(body, "*") {
		return errors.New(`"*" is allowed only as a final "/*" (prefix) or alone`)
	}
	if strings.ContainsAny(body, "%\\?#;") {
		return errors.New(`write the path decoded, without '%', '\', '?', '#' or ';'`)
	}
	if strings.Contains(body, "//") {
		return errors.New(`"//" never matches a normalised path`)
	}
	for _, seg := range strings.Split(body, "/") {
		if seg == "." || seg == ".." {
			return errors.New(`"." and ".." segments never match a normalised path`)
		}
	}
	return nil
}

func init() {
	registerKind(Kind{
		Name: KindAuthorizationPolicy,
		Spec: func() any { return AuthorizationPolicySpec{} },
		Validate: func(spec json.RawMessage) error {
			_, err := ParseAuthorizationPolicySpec(spec)
			return err
		},
		Service: func(spec json.RawMessage) string {
			var s AuthorizationPolicySpec
			_ = json.Unmarshal(spec, &s)
			return s.Service
		},
	})
}
