package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/weftmesh/weft/balancer"
	_ "github.com/weftmesh/weft/balancer/all" // the algorithms a policy may name
)

// KindTrafficPolicy configures how sidecars call one destination service.
const KindTrafficPolicy = "TrafficPolicy"

// DefaultAlgorithm is used when a service has no TrafficPolicy or the policy
// names no algorithm.
const DefaultAlgorithm = "round_robin"

// TrafficPolicySpec is the spec of a TrafficPolicy. New traffic features
// (retries, outlier ejection, subsets…) grow here as optional fields.
type TrafficPolicySpec struct {
	// Service is the destination service the policy applies to.
	Service      string        `json:"service"`
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
	// Timeout bounds the wait for the upstream's response headers (a Go
	// duration such as "3s"), over every try; streaming bodies are not cut
	// (idleTimeout covers a stalled one). Default 15s.
	Timeout string `json:"timeout,omitempty"`
	// IdleTimeout cuts a response body that sends nothing for this long.
	// Default: none.
	IdleTimeout      string            `json:"idleTimeout,omitempty"`
	Retries          *Retries          `json:"retries,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	CircuitBreaker   *CircuitBreaker   `json:"circuitBreaker,omitempty"`
	RateLimit        *RateLimit        `json:"rateLimit,omitempty"`
}

// LoadBalancer chooses the algorithm and, for hash algorithms, the key.
type LoadBalancer struct {
	Algorithm string `json:"algorithm,omitempty"`
	HashKey   string `json:"hashKey,omitempty"`
	// HashBalanceFactor bounds consistent_hash's load: no instance gets
	// more than this × the mean in-flight requests (1 … 100, default
	// 1.25); nil: the default.
	HashBalanceFactor *float64 `json:"hashBalanceFactor,omitempty"`
}

// BuildOptions returns what the policy tells the balancer's builder.
func (s *TrafficPolicySpec) BuildOptions() balancer.BuildOptions {
	var o balancer.BuildOptions
	if s.LoadBalancer != nil && s.LoadBalancer.HashBalanceFactor != nil {
		o.HashBalanceFactor = *s.LoadBalancer.HashBalanceFactor
	}
	return o
}

// HashSource is where a request's hash key comes from.
type HashSource uint8

const (
	HashNone HashSource = iota
	HashHeader
	HashCookie
	HashQuery
	HashSourceIP
)

// HashKey is a parsed hashKey field.
type HashKey struct {
	Source HashSource
	Name   string // header names canonicalised by the caller as needed
}

// ParseHashKey parses "header:NAME", "cookie:NAME", "query:NAME" or "source_ip".
func ParseHashKey(s string) (HashKey, error) {
	if s == "" {
		return HashKey{}, nil
	}
	if s == "source_ip" {
		return HashKey{Source: HashSourceIP}, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return HashKey{}, fmt.Errorf("%q is not a hash key (want header:NAME, cookie:NAME, query:NAME or source_ip)", s)
	}
	if len(name) > 256 {
		return HashKey{}, fmt.Errorf("hash key name is longer than 256 characters")
	}
	switch kind {
	case "header":
		return HashKey{Source: HashHeader, Name: name}, nil
	case "cookie":
		return HashKey{Source: HashCookie, Name: name}, nil
	case "query":
		return HashKey{Source: HashQuery, Name: name}, nil
	}
	return HashKey{}, fmt.Errorf("%q is not a hash key source (want header, cookie, query or source_ip)", kind)
}

// Algorithm returns the configured algorithm or the default.
func (s *TrafficPolicySpec) Algorithm() string {
	if s.LoadBalancer == nil || s.LoadBalancer.Algorithm == "" {
		return DefaultAlgorithm
	}
	return s.LoadBalancer.Algorithm
}

// DefaultTimeout is the response-header timeout when a policy sets none
// (Envoy's route default).
const DefaultTimeout = 15 * time.Second

// TimeoutDuration returns the parsed timeout or DefaultTimeout.
func (s *TrafficPolicySpec) TimeoutDuration() time.Duration {
	if d, err := time.ParseDuration(s.Timeout); err == nil && d > 0 {
		return d
	}
	return DefaultTimeout
}

// ParseTrafficPolicySpec decodes and validates a spec. Errors name the
// field from spec on ("retries.backoff.base: ...").
func ParseTrafficPolicySpec(raw json.RawMessage) (TrafficPolicySpec, error) {
	var s TrafficPolicySpec
	if err := decodeSpec(raw, &s); err != nil {
		return s, err
	}
	if err := ValidateName(s.Service); err != nil {
		return s, fmt.Errorf("service: %w", err)
	}
	if s.Timeout != "" {
		d, err := time.ParseDuration(s.Timeout)
		if err != nil || d <= 0 {
			return s, fmt.Errorf("timeout: %q is not a positive duration such as 3s or 500ms", s.Timeout)
		}
	}
	if lb := s.LoadBalancer; lb != nil {
		alg := s.Algorithm()
		if _, err := balancer.Get(alg); err != nil {
			return s, fmt.Errorf("loadBalancer.algorithm: %w", err)
		}
		if _, err := ParseHashKey(lb.HashKey); err != nil {
			return s, fmt.Errorf("loadBalancer.hashKey: %w", err)
		}
		if balancer.NeedsHashKey(alg) && lb.HashKey == "" {
			return s, errors.New("loadBalancer.hashKey: required for algorithm " + alg + " (header:NAME, cookie:NAME, query:NAME or source_ip)")
		}
		if f := lb.HashBalanceFactor; f != nil {
			if alg != "consistent_hash" {
				return s, fmt.Errorf("loadBalancer.hashBalanceFactor: only for algorithm consistent_hash, not %s", alg)
			}
			if !(*f >= 1 && *f <= 100) {
				return s, fmt.Errorf("loadBalancer.hashBalanceFactor: %g is out of range (want 1 to 100; default %g)", *f, balancer.DefaultHashBalanceFactor)
			}
		}
	}
	if s.IdleTimeout != "" {
		if err := positiveDuration(s.IdleTimeout); err != nil {
			return s, fmt.Errorf("idleTimeout: %w", err)
		}
	}
	if err := s.Retries.validate("retries"); err != nil {
		return s, err
	}
	if err := s.OutlierDetection.validate(); err != nil {
		return s, fmt.Errorf("outlierDetection.%w", err)
	}
	if err := s.CircuitBreaker.validate(); err != nil {
		return s, fmt.Errorf("circuitBreaker.%w", err)
	}
	if err := s.RateLimit.validate(); err != nil {
		return s, fmt.Errorf("rateLimit.%w", err)
	}
	return s, nil
}

func init() {
	registerKind(Kind{
		Name: KindTrafficPolicy,
		Spec: func() any { return TrafficPolicySpec{} },
		Validate: func(spec json.RawMessage) error {
			_, err := ParseTrafficPolicySpec(spec)
			return err
		},
		Target: func(spec json.RawMessage) string {
			return "service " + trafficPolicyService(spec)
		},
		Service: trafficPolicyService,
	})
}

func trafficPolicyService(spec json.RawMessage) string {
	var s TrafficPolicySpec
	_ = json.Unmarshal(spec, &s)
	return s.Service
}
