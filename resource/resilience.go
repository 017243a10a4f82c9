package resource

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The resilience parts of a TrafficPolicy (and, per rule, of a Route):
// retries, outlier detection, circuit breaking. The sidecar compiles them
// into a destination's snapshot (package policy); this file is their schema
// and validation only.

// Retries says when and how a failed try is tried again.
type Retries struct {
	// Attempts is the number of retries after the first try (Istio's
	// meaning): 2 means up to 3 tries. 0 turns retries off, except that a
	// refused connection is always tried once more on another instance.
	Attempts int `json:"attempts"`
	// RetryOn lists the conditions (see RetryConditions); default
	// connect-failure, reset, gateway-error, unavailable.
	RetryOn []string `json:"retryOn,omitempty"`
	// PerTryTimeout bounds each try's wait for the response head; the
	// request timeout still bounds them all. Default: the request timeout.
	PerTryTimeout string        `json:"perTryTimeout,omitempty"`
	Backoff       *RetryBackoff `json:"backoff,omitempty"`
	Budget        *RetryBudget  `json:"budget,omitempty"`
	// RetryNonIdempotent allows retrying POST, PATCH and other methods that
	// are not idempotent (a refused connection is retried regardless:
	// nothing was sent).
	RetryNonIdempotent bool `json:"retryNonIdempotent,omitempty"`
	// MaxBodyBytes is the largest request body the sidecar holds so it can
	// send it again (default 64 KiB); a request with a bigger or streamed
	// body is only retried when nothing was sent.
	MaxBodyBytes int `json:"maxBodyBytes,omitempty"`
}

// RetryBackoff spaces retries: base × 2^(retry-1), at most max, with a
// random ±jitter fraction.
type RetryBackoff struct {
	Base   string  `json:"base,omitempty"`   // default 25ms
	Max    string  `json:"max,omitempty"`    // default 250ms
	Jitter float64 `json:"jitter,omitempty"` // 0..1, default 0.2 when unset
}

// RetryBudget bounds retries per destination: at most ratio × requests +
// minPerSecond each second, so an outage cannot multiply the load.
type RetryBudget struct {
	Ratio        *float64 `json:"ratio,omitempty"`        // default 0.2
	MinPerSecond *int     `json:"minPerSecond,omitempty"` // default 10
}

// Defaults for retries.
const (
	DefaultRetryBackoffBase     = 25 * time.Millisecond
	DefaultRetryBackoffMax      = 250 * time.Millisecond
	DefaultRetryJitter          = 0.2
	DefaultRetryBudgetRatio     = 0.2
	DefaultRetryBudgetPerSecond = 10
	DefaultRetryMaxBodyBytes    = 64 << 10
	MaxRetryAttempts            = 10
	MaxRetryBodyBytes           = 16 << 20
)

// DefaultRetryOn is what retryOn means when unset.
var DefaultRetryOn = []string{"connect-failure", "reset", "gateway-error", "unavailable"}

// RetryConditions lists the retryOn values (besides retriable-status:<code>)
// and, for gRPC codes, the code they stand for.
var RetryConditions = map[string]int{
	"connect-failure":    -1,
	"reset":              -1,
	"5xx":                -1,
	"gateway-error":      -1,
	"cancelled":          1,
	"unknown":            2,
	"deadline-exceeded":  4,
	"resource-exhausted": 8,
	"internal":           13,
	"unavailable":        14,
}

// RetriableStatusPrefix starts a retryOn value naming one HTTP status.
const RetriableStatusPrefix = "retriable-status:"

func retryConditionNames() string {
	names := make([]string, 0, len(RetryConditions)+1)
	for _, n := range []string{"connect-failure", "reset", "5xx", "gateway-error"} {
		names = append(names, n)
	}
	names = append(names, RetriableStatusPrefix+"<code>")
	for _, n := range []string{"cancelled", "unknown", "deadline-exceeded", "resource-exhausted", "internal", "unavailable"} {
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

// ParseRetriableStatus returns the code of a retriable-status:<code> value.
func ParseRetriableStatus(v string) (int, bool) {
	rest, ok := strings.CutPrefix(v, RetriableStatusPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 100 || n > 599 {
		return 0, false
	}
	return n, true
}

func (r *Retries) validate(field string) error {
	if r == nil {
		return nil
	}
	if r.Attempts < 0 || r.Attempts > MaxRetryAttempts {
		return fmt.Errorf("%s.attempts: %d is not between 0 and %d", field, r.Attempts, MaxRetryAttempts)
	}
	for i, c := range r.RetryOn {
		if _, ok := RetryConditions[c]; ok {
			continue
		}
		if strings.HasPrefix(c, RetriableStatusPrefix) {
			if _, ok := ParseRetriableStatus(c); !ok {
				return fmt.Errorf("%s.retryOn[%d]: %q: want %s<code> with an HTTP status 100-599", field, i, c, RetriableStatusPrefix)
			}
			continue
		}
		return fmt.Errorf("%s.retryOn[%d]: unknown condition %q (valid: %s)", field, i, c, retryConditionNames())
	}
	if r.PerTryTimeout != "" {
		if err := positiveDuration(r.PerTryTimeout); err != nil {
			return fmt.Errorf("%s.perTryTimeout: %w", field, err)
		}
	}
	if b := r.Backoff; b != nil {
		for _, d := range []struct{ name, v string }{{"base", b.Base}, {"max", b.Max}} {
			if d.v == "" {
				continue
			}
			if err := positiveDuration(d.v); err != nil {
				return fmt.Errorf("%s.backoff.%s: %w", field, d.name, err)
			}
		}
		if b.Jitter < 0 || b.Jitter > 1 {
			return fmt.Errorf("%s.backoff.jitter: %g is not between 0 and 1", field, b.Jitter)
		}
		base, max := b.Durations()
		if max < base {
			return fmt.Errorf("%s.backoff.max: %s is less than base %s", field, max, base)
		}
	}
	if b := r.Budget; b != nil {
		if b.Ratio != nil && (*b.Ratio < 0 || *b.Ratio > 1) {
			return fmt.Errorf("%s.budget.ratio: %g is not between 0 and 1", field, *b.Ratio)
		}
		if b.MinPerSecond != nil && (*b.MinPerSecond < 0 || *b.MinPerSecond > 1e6) {
			return fmt.Errorf("%s.budget.minPerSecond: %d is not between 0 and 1000000", field, *b.MinPerSecond)
		}
	}
	if r.MaxBodyBytes < 0 || r.MaxBodyBytes > MaxRetryBodyBytes {
		return fmt.Errorf("%s.maxBodyBytes: %d is not between 0 and %d", field, r.MaxBodyBytes, MaxRetryBodyBytes)
	}
	return nil
}

// Durations returns base and max with their defaults.
func (b *RetryBackoff) Durations() (base, max time.Duration) {
	base, max = DefaultRetryBackoffBase, DefaultRetryBackoffMax
	if b != nil {
		base = durationOr(b.Base, base)
		max = durationOr(b.Max, max)
	}
	return base, max
}

// Values returns ratio and minPerSecond with their defaults.
func (b *RetryBudget) Values() (ratio float64, minPerSecond int) {
	ratio, minPerSecond = DefaultRetryBudgetRatio, DefaultRetryBudgetPerSecond
	if b != nil {
		if b.Ratio != nil {
			ratio = *b.Ratio
		}
		if b.MinPerSecond != nil {
			minPerSecond = *b.MinPerSecond
		}
	}
	return ratio, minPerSecond
}

// OutlierDetection ejects instances that keep failing, passively: from the
// answers real requests get.
type OutlierDetection struct {
	// Consecutive5xx ejects after this many 5xx answers in a row (502,
	// 503, 504 and connect failures included). 0: off. Default 5 when
	// neither threshold is set.
	Consecutive5xx int `json:"consecutive5xx,omitempty"`
	// ConsecutiveGatewayErrors ejects after this many 502/503/504 answers
	// or connect failures in a row. 0: off.
	ConsecutiveGatewayErrors int `json:"consecutiveGatewayErrors,omitempty"`
	// Interval is how often ejections are reviewed (re-admission, the
	// decay of repeat ejections). Default 1s.
	Interval string `json:"interval,omitempty"`
	// BaseEjectionTime is the first ejection's length; the nth in a row
	// lasts n times as long (at most 10×). Default 30s.
	BaseEjectionTime string `json:"baseEjectionTime,omitempty"`
	// MaxEjectionPercent caps the share of instances ejected at once
	// (default 50). When the share rounds down to none, one instance may
	// still be ejected if there are two or more (0 turns ejection off); the
	// last instance is never ejected.
	MaxEjectionPercent *int `json:"maxEjectionPercent,omitempty"`
	// SuccessRate, when set, also ejects instances whose success rate over
	// the last interval is far below their peers'.
	SuccessRate *SuccessRateEjection `json:"successRate,omitempty"`
	// HealthCheck, when set, also probes every instance actively.
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
}

// HealthCheck: each calling sidecar probes every instance of the service
// every Interval — an HTTP GET of Path through the instance's inbound
// sidecar (2xx or 3xx is healthy), or with no Path a TCP connection to the
// inbound — and ejects an instance after UnhealthyThreshold failed probes
// in a row (reason health_check) until HealthyThreshold pass in a row.
type HealthCheck struct {
	Path               string `json:"path,omitempty"`
	Interval           string `json:"interval,omitempty"`           // default 5s
	Timeout            string `json:"timeout,omitempty"`            // default 1s, at most interval
	UnhealthyThreshold int    `json:"unhealthyThreshold,omitempty"` // default 2
	HealthyThreshold   int    `json:"healthyThreshold,omitempty"`   // default 1
}

// Defaults for active health checks.
const (
	DefaultHealthCheckInterval = 5 * time.Second
	DefaultHealthCheckTimeout  = time.Second
	DefaultUnhealthyThreshold  = 2
	DefaultHealthyThreshold    = 1
	MinHealthCheckInterval     = 100 * time.Millisecond
	maxHealthCheckThreshold    = 100
)

func (h *HealthCheck) validate() error {
	if h == nil {
		return nil
	}
	if h.Path != "" && (!strings.HasPrefix(h.Path, "/") || len(h.Path) > 1024 || strings.ContainsAny(h.Path, " \r\n\t")) {
		return fmt.Errorf("healthCheck.path: %q: want an absolute path such as /healthz (no spaces)", h.Path)
	}
	for _, d := range []struct{ name, v string }{{"interval", h.Interval}, {"timeout", h.Timeout}} {
		if d.v == "" {
			continue
		}
		if err := positiveDuration(d.v); err != nil {
			return fmt.Errorf("healthCheck.%s: %w", d.name, err)
		}
	}
	interval, timeout, _, _ := h.Values()
	if interval < MinHealthCheckInterval {
		return fmt.Errorf("healthCheck.interval: %s is less than %s", interval, MinHealthCheckInterval)
	}
	if timeout > interval {
		return fmt.Errorf("healthCheck.timeout: %s is more than interval %s", timeout, interval)
	}
	if h.UnhealthyThreshold < 0 || h.UnhealthyThreshold > maxHealthCheckThreshold {
		return fmt.Errorf("healthCheck.unhealthyThreshold: %d is not between 1 and %d", h.UnhealthyThreshold, maxHealthCheckThreshold)
	}
	if h.HealthyThreshold < 0 || h.HealthyThreshold > maxHealthCheckThreshold {
		return fmt.Errorf("healthCheck.healthyThreshold: %d is not between 1 and %d", h.HealthyThreshold, maxHealthCheckThreshold)
	}
	return nil
}

// Values returns the settings with their defaults.
func (h *HealthCheck) Values() (interval, timeout time.Duration, unhealthy, healthy int) {
	interval = durationOr(h.Interval, DefaultHealthCheckInterval)
	timeout = durationOr(h.Timeout, min(DefaultHealthCheckTimeout, interval))
	unhealthy, healthy = h.UnhealthyThreshold, h.HealthyThreshold
	if unhealthy == 0 {
		unhealthy = DefaultUnhealthyThreshold
	}
	if healthy == 0 {
		healthy = DefaultHealthyThreshold
	}
	return
}

// SuccessRateEjection: once per interval, of the instances that answered
// at least MinRequests tries (and only when at least MinHosts did), those
// whose success rate is below mean − StdevFactor × stdev are ejected,
// within maxEjectionPercent. Envoy's success-rate outlier detection, with
// its defaults.
type SuccessRateEjection struct {
	// MinRequests an instance must have answered in the interval to
	// count (default 100).
	MinRequests int `json:"minRequests,omitempty"`
	// MinHosts instances with enough requests are needed for a verdict
	// (default 3, at least 3).
	MinHosts int `json:"minHosts,omitempty"`
	// StdevFactor: how many standard deviations below the mean a success
	// rate must be (default 1.9).
	StdevFactor float64 `json:"stdevFactor,omitempty"`
}

// Defaults for success-rate ejection.
const (
	DefaultSuccessRateMinRequests = 100
	DefaultSuccessRateMinHosts    = 3
	DefaultSuccessRateStdevFactor = 1.9
)

func (s *SuccessRateEjection) validate() error {
	if s == nil {
		return nil
	}
	if s.MinRequests < 0 || s.MinRequests > 1_000_000 {
		return fmt.Errorf("successRate.minRequests: %d is not between 1 and 1000000 (0: the default 100)", s.MinRequests)
	}
	if s.MinHosts != 0 && (s.MinHosts < 3 || s.MinHosts > 10_000) {
		return fmt.Errorf("successRate.minHosts: %d is not between 3 and 10000 (a mean and deviation need three instances)", s.MinHosts)
	}
	if s.StdevFactor < 0 || s.StdevFactor > 100 || math.IsNaN(s.StdevFactor) {
		return fmt.Errorf("successRate.stdevFactor: %v is not between 0 (default 1.9) and 100", s.StdevFactor)
	}
	return nil
}

// Values returns the settings with their defaults.
func (s *SuccessRateEjection) Values() (minRequests, minHosts int, stdevFactor float64) {
	minRequests, minHosts, stdevFactor = s.MinRequests, s.MinHosts, s.StdevFactor
	if minRequests == 0 {
		minRequests = DefaultSuccessRateMinRequests
	}
	if minHosts == 0 {
		minHosts = DefaultSuccessRateMinHosts
	}
	if stdevFactor == 0 {
		stdevFactor = DefaultSuccessRateStdevFactor
	}
	return
}

// Defaults for outlier detection.
const (
	DefaultConsecutive5xx     = 5
	DefaultOutlierInterval    = time.Second
	DefaultBaseEjectionTime   = 30 * time.Second
	DefaultMaxEjectionPercent = 50
	MaxEjectionMultiplier     = 10
)

func (o *OutlierDetection) validate() error {
	if o == nil {
		return nil
	}
	if o.Consecutive5xx < 0 || o.Consecutive5xx > 1000 {
		return fmt.Errorf("consecutive5xx: %d is not between 0 and 1000", o.Consecutive5xx)
	}
	if o.ConsecutiveGatewayErrors < 0 || o.ConsecutiveGatewayErrors > 1000 {
		return fmt.Errorf("consecutiveGatewayErrors: %d is not between 0 and 1000", o.ConsecutiveGatewayErrors)
	}
	for _, d := range []struct{ name, v string }{{"interval", o.Interval}, {"baseEjectionTime", o.BaseEjectionTime}} {
		if d.v == "" {
			continue
		}
		if err := positiveDuration(d.v); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	if p := o.MaxEjectionPercent; p != nil && (*p < 0 || *p > 100) {
		return fmt.Errorf("maxEjectionPercent: %d is not between 0 and 100", *p)
	}
	if err := o.SuccessRate.validate(); err != nil {
		return err
	}
	return o.HealthCheck.validate()
}

// Values returns the settings with their defaults.
func (o *OutlierDetection) Values() (consecutive5xx, consecutiveGateway int, interval, baseEjection time.Duration, maxPercent int) {
	consecutive5xx, consecutiveGateway = o.Consecutive5xx, o.ConsecutiveGatewayErrors
	if consecutive5xx == 0 && consecutiveGateway == 0 {
		consecutive5xx = DefaultConsecutive5xx
	}
	interval = durationOr(o.Interval, DefaultOutlierInterval)
	baseEjection = durationOr(o.BaseEjectionTime, DefaultBaseEjectionTime)
	maxPercent = DefaultMaxEjectionPercent
	if o.MaxEjectionPercent != nil {
		maxPercent = *o.MaxEjectionPercent
	}
	return
}

// CircuitBreaker bounds what one sidecar sends to a destination at once;
// past a bound (and maxPendingRequests waiting) a request is answered 503
// x-weft-error: overflow at once.
// 0 means no bound.
type CircuitBreaker struct {
	// MaxConnections bounds upstream connections busy at once (an
	// HTTP/1.1 request holds one; HTTP/2 streams share theirs).
	MaxConnections int `json:"maxConnections,omitempty"`
	// MaxPendingRequests bounds requests waiting for a slot when
	// maxRequests or maxConnections is reached; a request beyond it is
	// answered 503 overflow at once (0: none wait).
	MaxPendingRequests int `json:"maxPendingRequests,omitempty"`
	// MaxRequests bounds requests in flight over every protocol.
	MaxRequests int `json:"maxRequests,omitempty"`
}

func (c *CircuitBreaker) validate() error {
	if c == nil {
		return nil
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"maxConnections", c.MaxConnections}, {"maxPendingRequests", c.MaxPendingRequests}, {"maxRequests", c.MaxRequests}} {
		if f.v < 0 || f.v > 1<<30 {
			return fmt.Errorf("%s: %d is not between 0 and %d", f.name, f.v, 1<<30)
		}
	}
	return nil
}

func positiveDuration(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return errors.New(strconv.Quote(s) + " is not a positive duration such as 3s or 500ms")
	}
	return nil
}

// RateLimit bounds the requests each instance of the service accepts; the
// instance's own (inbound) sidecar enforces it and answers the excess 429
// x-weft-error: rate_limited.
type RateLimit struct {
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	// Burst is how many requests may come at once above the rate (default:
	// one second's worth, at least 1).
	Burst int `json:"burst,omitempty"`
	// PerSource gives each calling service its own allowance of the rate.
	PerSource bool `json:"perSource,omitempty"`
}

func (r *RateLimit) validate() error {
	if r == nil {
		return nil
	}
	if r.RequestsPerSecond <= 0 || r.RequestsPerSecond > 1e7 {
		return fmt.Errorf("requestsPerSecond: %g is not above 0 and at most 10000000", r.RequestsPerSecond)
	}
	if r.Burst < 0 || r.Burst > 1e7 {
		return fmt.Errorf("burst: %d is not between 0 and 10000000", r.Burst)
	}
	return nil
}

// BurstOrDefault is the burst with its default.
func (r *RateLimit) BurstOrDefault() int {
	if r.Burst > 0 {
		return r.Burst
	}
	return max(1, int(r.RequestsPerSecond))
}
