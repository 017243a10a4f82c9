package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// KindRoute splits and shapes the traffic to one service: subsets of its
// instances by label, ordered rules that match requests and send them to
// weighted subsets, with fault injection and per-rule timeout and retries.
// The calling sidecars apply it.
const KindRoute = "Route"

// Bounds on a Route.
const (
	MaxSubsets     = 32
	MaxRouteRules  = 64
	MaxRuleHeaders = 16
	MaxRegexLength = 1024
)

// RouteSpec is the spec of a Route.
type RouteSpec struct {
	Service string      `json:"service"`
	Subsets []Subset    `json:"subsets,omitempty"`
	Rules   []RouteRule `json:"rules"`
}

// Subset is a named set of a service's instances: those carrying every
// label. `weft run --version V` counts as label version=V.
type Subset struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
}

// RouteRule is one rule; the first whose match holds takes the request.
type RouteRule struct {
	Match    *RouteMatch    `json:"match,omitempty"` // none: every request
	Backends []RouteBackend `json:"backends,omitempty"`
	Mirror   *Mirror        `json:"mirror,omitempty"`
	Fault    *Fault         `json:"fault,omitempty"`
	Timeout  string         `json:"timeout,omitempty"`
	Retries  *Retries       `json:"retries,omitempty"`
	// RateLimit bounds the requests this rule's match takes at each
	// instance (its inbound sidecar enforces it, in place of the
	// TrafficPolicy's rateLimit for those requests).
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// RouteMatch holds when every part given holds.
type RouteMatch struct {
	Path    *StringMatch  `json:"path,omitempty"`
	Method  string        `json:"method,omitempty"`
	Headers []HeaderMatch `json:"headers,omitempty"`
}

// StringMatch is one of exact, prefix or regex (RE2, whole value).
type StringMatch struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	Regex  string `json:"regex,omitempty"`
}

// HeaderMatch matches one request header: exact, prefix, regex, or present.
type HeaderMatch struct {
	Name    string `json:"name"`
	Exact   string `json:"exact,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Regex   string `json:"regex,omitempty"`
	Present bool   `json:"present,omitempty"`
}

// RouteBackend is a subset and its share of the rule's requests. With no
// backends a rule goes to every instance.
type RouteBackend struct {
	Subset string `json:"subset"`
	Weight int    `json:"weight"`
}

// Mirror sends a copy of Percent of the rule's requests to Subset; the
// copy's answer is dropped, and the copy never slows or fails the request.
type Mirror struct {
	Subset  string  `json:"subset"`
	Percent float64 `json:"percent"`
}

// Fault delays or aborts a share of a rule's requests.
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay waits Fixed before sending Percent of the requests.
type FaultDelay struct {
	Percent float64 `json:"percent"`
	Fixed   string  `json:"fixed"`
}

// FaultAbort answers Percent of the requests with Status itself
// (x-weft-error: fault_injected).
type FaultAbort struct {
	Percent float64 `json:"percent"`
	Status  int     `json:"status"`
}

// ParseRouteSpec decodes and validates a Route spec; errors name the field
// from spec on ("rules[1].match.path.regex: …").
func ParseRouteSpec(raw json.RawMessage) (RouteSpec, error) {
	var s RouteSpec
	if err := decodeSpec(raw, &s); err != nil {
		return s, err
	}
	return s, s.validate()
}

func (s *RouteSpec) validate() error {
	if err := ValidateName(s.Service); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if len(s.Subsets) > MaxSubsets {
		return fmt.Errorf("subsets: %d subsets, more than the %d allowed", len(s.Subsets), MaxSubsets)
	}
	names := map[string]bool{}
	for i, sub := range s.Subsets {
		f := fmt.Sprintf("subsets[%d]", i)
		if err := ValidateName(sub.Name); err != nil {
			return fmt.Errorf("%s.name: %w", f, err)
		}
		if names[sub.Name] {
			return fmt.Errorf("%s.name: %q is defined twice", f, sub.Name)
		}
		names[sub.Name] = true
		if len(sub.Labels) == 0 {
			return fmt.Errorf("%s.labels: a subset needs at least one label", f)
		}
	}
	if len(s.Rules) == 0 {
		return errors.New("rules: a route needs at least one rule")
	}
	if len(s.Rules) > MaxRouteRules {
		return fmt.Errorf("rules: %d rules, more than the %d allowed", len(s.Rules), MaxRouteRules)
	}
	for i := range s.Rules {
		if err := s.Rules[i].validate(fmt.Sprintf("rules[%d]", i), names); err != nil {
			return err
		}
	}
	return nil
}

func (r *RouteRule) validate(f string, subsets map[string]bool) error {
	if m := r.Match; m != nil {
		if m.Path != nil {
			if err := m.Path.validate(f + ".match.path"); err != nil {
				return err
			}
			if p := m.Path; (p.Exact != "" && !strings.HasPrefix(p.Exact, "/")) || (p.Prefix != "" && !strings.HasPrefix(p.Prefix, "/")) {
				return fmt.Errorf("%s.match.path: a path starts with /", f)
			}
		}
		if m.Method != "" && !validMethod(m.Method) {
			return fmt.Errorf("%s.match.method: %q is not an HTTP method (want e.g. GET, POST)", f, m.Method)
		}
		if len(m.Headers) > MaxRuleHeaders {
			return fmt.Errorf("%s.match.headers: %d headers, more than the %d allowed", f, len(m.Headers), MaxRuleHeaders)
		}
		for j, h := range m.Headers {
			hf := fmt.Sprintf("%s.match.headers[%d]", f, j)
			if h.Name == "" || strings.ContainsAny(h.Name, " :\r\n\t") {
				return fmt.Errorf("%s.name: %q is not a header name", hf, h.Name)
			}
			n := 0
			for _, set := range []bool{h.Exact != "", h.Prefix != "", h.Regex != "", h.Present} {
				if set {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("%s: want exactly one of exact, prefix, regex or present", hf)
			}
			if h.Regex != "" {
				if err := checkRegex(h.Regex); err != nil {
					return fmt.Errorf("%s.regex: %w", hf, err)
				}
			}
		}
	}
	total := 0
	for j, b := range r.Backends {
		bf := fmt.Sprintf("%s.backends[%d]", f, j)
		if !subsets[b.Subset] {
			return fmt.Errorf("%s.subset: no subset named %q (defined: %s)", bf, b.Subset, subsetNames(subsets))
		}
		if b.Weight < 0 || b.Weight > 10000 {
			return fmt.Errorf("%s.weight: %d is not between 0 and 10000", bf, b.Weight)
		}
		total += b.Weight
	}
	if len(r.Backends) > 0 && total == 0 {
		return fmt.Errorf("%s.backends: the weights add up to 0", f)
	}
	if m := r.Mirror; m != nil {
		if !subsets[m.Subset] {
			return fmt.Errorf("%s.mirror.subset: no subset named %q (defined: %s)", f, m.Subset, subsetNames(subsets))
		}
		if m.Percent <= 0 || m.Percent > 100 {
			return fmt.Errorf("%s.mirror.percent: %g is not above 0 and at most 100", f, m.Percent)
		}
	}
	if ft := r.Fault; ft != nil {
		if d := ft.Delay; d != nil {
			if d.Percent < 0 || d.Percent > 100 {
				return fmt.Errorf("%s.fault.delay.percent: %g is not between 0 and 100", f, d.Percent)
			}
			if err := positiveDuration(d.Fixed); err != nil {
				return fmt.Errorf("%s.fault.delay.fixed: %w", f, err)
			}
		}
		if a := ft.Abort; a != nil {
			if a.Percent < 0 || a.Percent > 100 {
				return fmt.Errorf("%s.fault.abort.percent: %g is not between 0 and 100", f, a.Percent)
			}
			if a.Status < 200 || a.Status > 599 {
				return fmt.Errorf("%s.fault.abort.status: %d is not an HTTP status 200-599", f, a.Status)
			}
		}
	}
	if r.Timeout != "" {
		if err := positiveDuration(r.Timeout); err != nil {
			return fmt.Errorf("%s.timeout: %w", f, err)
		}
	}
	if err := r.RateLimit.validate(); err != nil {
		return fmt.Errorf("%s.rateLimit.%w", f, err)
	}
	return r.Retries.validate(f + ".retries")
}

func (m *StringMatch) validate(f string) error {
	n := 0
	for _, v := range []string{m.Exact, m.Prefix, m.Regex} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%s: want exactly one of exact, prefix or regex", f)
	}
	if m.Regex != "" {
		if err := checkRegex(m.Regex); err != nil {
			return fmt.Errorf("%s.regex: %w", f, err)
		}
	}
	return nil
}

func checkRegex(re string) error {
	if len(re) > MaxRegexLength {
		return fmt.Errorf("longer than %d characters", MaxRegexLength)
	}
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("%q does not compile: %w", re, err)
	}
	return nil
}

func validMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodTrace, http.MethodConnect:
		return true
	}
	return false
}

func subsetNames(m map[string]bool) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

// Matches reports whether an instance with these labels and version
// is in the subset.
func (s *Subset) Matches(labels map[string]string, version string) bool {
	for k, v := range s.Labels {
		got, ok := labels[k]
		if !ok && k == "version" {
			got, ok = version, version != ""
		}
		if !ok || got != v {
			return false
		}
	}
	return true
}

func init() {
	registerKind(Kind{
		Name: KindRoute,
		Spec: func() any { return RouteSpec{} },
		Validate: func(spec json.RawMessage) error {
			_, err := ParseRouteSpec(spec)
			return err
		},
		Target:  func(spec json.RawMessage) string { return "service " + routeService(spec) },
		Service: routeService,
	})
}

func routeService(spec json.RawMessage) string {
	var s RouteSpec
	_ = json.Unmarshal(spec, &s)
	return s.Service
}
