package authz

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/weftmesh/weft/resource"
)

// Source is the caller as the inbound sidecar verified it.
type Source struct {
	// Verified: the caller presented a valid mesh certificate. A plaintext
	// caller (permissive mode) matches no services/namespaces/principals.
	Verified           bool
	Service, Namespace string
	Principal          string // the SPIFFE ID
}

// Headers reads request header values (the HTTP/1.1 engine's Request, or
// HTTPHeaders for net/http).
type Headers interface {
	Get(name string) []byte
}

// HTTPHeaders adapts http.Header.
type HTTPHeaders http.Header

// Get implements Headers.
func (h HTTPHeaders) Get(name string) []byte {
	v := http.Header(h).Get(name)
	if v == "" {
		if _, ok := http.Header(h)[http.CanonicalHeaderKey(name)]; !ok {
			return nil
		}
		return []byte{}
	}
	return []byte(v)
}

// Request is what a decision looks at.
type Request struct {
	Source  Source
	Method  []byte
	Target  []byte // path and query as received, origin-form
	Headers Headers
}

// Decision is the outcome. Policy names the policy that decided a denial
// ("" when allowed): a deny policy's name, or DefaultDeny.
type Decision struct {
	Allowed bool
	Policy  string
	Reason  string // why, for the log line: "deny policy matched", …
}

// DefaultDeny is the Policy of a denial because the service has allow
// policies and none matched.
const DefaultDeny = "(no allow policy matched)"

// PathRefused is the Policy of a denial because the path could not be
// normalised (see Normalize): on a service with policies such a request is
// never let through.
const PathRefused = "(path refused)"

// Snapshot is one service's compiled policies. Immutable.
type Snapshot struct {
	deny, allow []*policy
}

type policy struct {
	name  string
	rules []rule // none: matches every request
}

type rule struct {
	services, namespaces, principals []string
	paths                            []pathPat
	methods                          []string
	headers                          []headerMatch
}

type pathPat struct {
	s      string
	prefix bool // "/x/*": s is "/x"
	any    bool // "*"
}

type headerMatch struct {
	name   string
	values []string // "*" among them: any value
}

// Empty reports whether the snapshot has no policies (everything allowed).
func (s *Snapshot) Empty() bool { return s == nil || len(s.deny)+len(s.allow) == 0 }

// Compile builds a snapshot from the config objects of one service; objects
// of other kinds are ignored. A spec that fails validation is an error
// (the control plane validated it, so this means a newer control plane).
func Compile(objs []Object) (*Snapshot, error) {
	s := &Snapshot{}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Name < objs[j].Name })
	for _, o := range objs {
		spec, err := resource.ParseAuthorizationPolicySpec(o.Spec)
		if err != nil {
			return nil, fmt.Errorf("AuthorizationPolicy %s: spec.%w", o.Name, err)
		}
		p := &policy{name: o.Name}
		for _, r := range spec.Rules {
			p.rules = append(p.rules, compileRule(r))
		}
		if spec.Action == resource.AuthzDeny {
			s.deny = append(s.deny, p)
		} else {
			s.allow = append(s.allow, p)
		}
	}
	return s, nil
}

// Object is one AuthorizationPolicy as the sidecar receives it.
type Object struct {
	Name string
	Spec json.RawMessage
}

func compileRule(r resource.AuthzRule) rule {
	out := rule{services: r.Services, namespaces: r.Namespaces, principals: r.Principals, methods: r.Methods}
	for _, p := range r.Paths {
		switch {
		case p == "*":
			out.paths = append(out.paths, pathPat{any: true})
		case strings.HasSuffix(p, "/*"):
			out.paths = append(out.paths, pathPat{s: strings.TrimSuffix(p, "/*"), prefix: true})
		default:
			out.paths = append(out.paths, pathPat{s: strings.TrimSuffix(p, "/")})
		}
	}
	names := make([]string, 0, len(r.Headers))
	for n := range r.Headers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out.headers = append(out.headers, headerMatch{name: n, values: r.Headers[n]})
	}
	return out
}

// Evaluate decides one request. scratch is a buffer the caller keeps
// between requests (per connection) so normalising allocates nothing.
func (s *Snapshot) Evaluate(r *Request, scratch *[]byte) Decision {
	if s.Empty() {
		return Decision{Allowed: true}
	}
	path, err := Normalize(*scratch, r.Target)
	*scratch = path[:0]
	if err != nil {
		return Decision{Policy: PathRefused, Reason: "path refused: " + err.Error()}
	}
	for _, p := range s.deny {
		if p.matches(r, path, true) {
			return Decision{Policy: p.name, Reason: "deny policy matched"}
		}
	}
	if len(s.allow) == 0 {
		return Decision{Allowed: true}
	}
	for _, p := range s.allow {
		if p.matches(r, path, false) {
			return Decision{Allowed: true}
		}
	}
	return Decision{Policy: DefaultDeny, Reason: "no allow policy matched"}
}

func (p *policy) matches(r *Request, path []byte, fold bool) bool {
	if len(p.rules) == 0 {
		return true
	}
	for i := range p.rules {
		if p.rules[i].matches(r, path, fold) {
			return true
		}
	}
	return false
}

func (ru *rule) matches(r *Request, path []byte, fold bool) bool {
	src := &r.Source
	if len(ru.services) > 0 && !(src.Verified && contains(ru.services, src.Service)) {
		return false
	}
	if len(ru.namespaces) > 0 && !(src.Verified && contains(ru.namespaces, src.Namespace)) {
		return false
	}
	if len(ru.principals) > 0 && !(src.Verified && contains(ru.principals, src.Principal)) {
		return false
	}
	if len(ru.methods) > 0 && !containsBytes(ru.methods, r.Method) {
		return false
	}
	if len(ru.paths) > 0 {
		ok := false
		for i := range ru.paths {
			if ru.paths[i].match(path, fold) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range ru.headers {
		h := &ru.headers[i]
		v := r.Headers.Get(h.name)
		if v == nil {
			return false
		}
		ok := false
		for _, want := range h.values {
			if want == "*" || string(v) == want {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (pp *pathPat) match(path []byte, fold bool) bool {
	if pp.any {
		return true
	}
	n := len(pp.s)
	if pp.prefix {
		// "/x/*" matches "/x", "/x/" and everything below "/x/".
		if len(path) < n || !eq(path[:n], pp.s, fold) {
			return false
		}
		return len(path) == n || path[n] == '/'
	}
	// Exact, with or without one trailing slash.
	if len(path) > 1 && path[len(path)-1] == '/' {
		path = path[:len(path)-1]
	}
	if pp.s == "" { // the pattern "/"
		return len(path) == 1 && path[0] == '/'
	}
	return len(path) == n && eq(path, pp.s, fold)
}

func eq(b []byte, s string, fold bool) bool {
	if !fold {
		return string(b) == s
	}
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

func containsBytes(list []string, v []byte) bool {
	for _, s := range list {
		if s == string(v) {
			return true
		}
	}
	return false
}

// DenyAll is a snapshot denying every request under the policy name; the
// sidecar installs it when the service's policies cannot be compiled, so a
// policy it does not understand fails closed.
func DenyAll(name string) *Snapshot {
	return &Snapshot{deny: []*policy{{name: name}}}
}
