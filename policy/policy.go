// Package policy holds a destination's compiled traffic policy — timeouts,
// retry rules and backoff, the retry budget, circuit-breaker limits,
// outlier detection — and the live per-destination state those rules act
// on. discovery compiles a Policy from the service's TrafficPolicy into
// every Destination snapshot; the request pipeline (package pipeline) reads
// it on every request with no lock. A Policy is immutable; its Live part
// (budget tokens, breaker counts, outlier detector) is shared by the
// successive snapshots of one destination so that a rebuild does not reset
// it.
package policy

import (
	"time"

	"github.com/weftmesh/weft/resource"
)

// Conditions is a set of retryOn conditions that are not a status code.
type Conditions uint32

const (
	OnConnectFailure Conditions = 1 << iota
	OnReset
	On5xx
	OnGatewayError
)

// defaultConnectRetries keeps what the sidecar always did: a refused
// connection (nothing sent) is tried on up to two more instances.
const defaultConnectRetries = 2

// Policy is one destination's compiled policy. Immutable.
type Policy struct {
	// Timeout bounds the wait for a response head, over every try.
	Timeout time.Duration
	// PerTryTimeout bounds one try's wait (never more than what is left of
	// Timeout); 0 means Timeout.
	PerTryTimeout time.Duration
	// IdleTimeout cuts a response body that stalls this long; 0: never.
	IdleTimeout time.Duration

	// Retries is the number of retries after the first try for the
	// conditions in On, Statuses and GRPC.
	Retries int
	// ConnectRetries is the number of retries of a refused connection.
	ConnectRetries int
	On             Conditions
	Statuses       []int  // retriable-status codes
	GRPC           uint32 // bit n: gRPC status code n is retriable
	BackoffBase    time.Duration
	BackoffMax     time.Duration
	Jitter         float64
	NonIdempotent  bool
	MaxBodyBytes   int

	BudgetRatio     float64
	BudgetPerSecond int

	// Breaker limits; 0 means none.
	MaxConnections, MaxPending, MaxRequests int64

	// Outlier is the destination's outlier detector; nil without outlier
	// detection.
	Outlier *Detector
	// HealthCheck is the active health check to run; nil without one.
	HealthCheck *HealthCheck

	// Live is the state shared by this destination's snapshots.
	Live *Live
}

// Live is a destination's state that outlives snapshots. Its methods are
// safe for concurrent use and take no lock on the request path.
type Live struct {
	Budget  Budget
	Breaker Breaker
	// outlier is kept for the next Compile (the caller serialises those);
	// the request path reads Policy.Outlier.
	outlier *Detector
}

// NewLive returns a destination's live state.
func NewLive() *Live {
	l := &Live{}
	l.Budget.init()
	l.Breaker.wake = make(chan struct{}, 64)
	return l
}

// Default is the policy of a destination without a TrafficPolicy.
func Default(live *Live) *Policy {
	p := defaults(live)
	live.Budget.configure(p.BudgetRatio, p.BudgetPerSecond)
	return p
}

func defaults(live *Live) *Policy {
	return &Policy{Timeout: resource.DefaultTimeout, ConnectRetries: defaultConnectRetries, On: OnConnectFailure,
		BackoffBase: resource.DefaultRetryBackoffBase, BackoffMax: resource.DefaultRetryBackoffMax, Jitter: resource.DefaultRetryJitter,
		MaxBodyBytes: resource.DefaultRetryMaxBodyBytes, BudgetRatio: resource.DefaultRetryBudgetRatio,
		BudgetPerSecond: resource.DefaultRetryBudgetPerSecond, Live: live}
}

// Compile turns a validated spec into a Policy over live (which it
// configures: budget rates, outlier thresholds). Calls for one live must
// not run concurrently.
func Compile(spec *resource.TrafficPolicySpec, live *Live) *Policy {
	p := defaults(live)
	if spec == nil {
		live.outlier = nil
		live.Budget.configure(p.BudgetRatio, p.BudgetPerSecond)
		return p
	}
	p.Timeout = spec.TimeoutDuration()
	if d, err := time.ParseDuration(spec.IdleTimeout); err == nil && d > 0 {
		p.IdleTimeout = d
	}
	if r := spec.Retries; r != nil {
		p.applyRetries(r)
	}
	live.Budget.configure(p.BudgetRatio, p.BudgetPerSecond)
	if cb := spec.CircuitBreaker; cb != nil {
		p.MaxConnections, p.MaxPending, p.MaxRequests = int64(cb.MaxConnections), int64(cb.MaxPendingRequests), int64(cb.MaxRequests)
	}
	if od := spec.OutlierDetection; od != nil {
		c5, cg, interval, base, pct := od.Values()
		if live.outlier == nil {
			live.outlier = newDetector()
		}
		live.outlier.configure(c5, cg, interval, base, pct)
		if hc := od.HealthCheck; hc != nil {
			interval, timeout, unhealthy, healthy := hc.Values()
			p.HealthCheck = &HealthCheck{Path: hc.Path, Interval: interval, Timeout: timeout}
			live.outlier.configureHealth(unhealthy, healthy)
		}
		if sr := od.SuccessRate; sr != nil {
			live.outlier.configureSuccessRate(sr.Values())
		} else {
			live.outlier.configureSuccessRate(0, 0, 0)
		}
		p.Outlier = live.outlier
	} else {
		live.outlier = nil
	}
	return p
}

// Retriable reports whether a try that ended with status (and gRPC status
// grpc, -1 when none) may be retried under p.
func (p *Policy) Retriable(status, grpc int) bool {
	if grpc > 0 && grpc < 32 && p.GRPC&(1<<grpc) != 0 {
		return true
	}
	if status >= 500 && p.On&On5xx != 0 {
		return true
	}
	if (status == 502 || status == 503 || status == 504) && p.On&OnGatewayError != 0 {
		return true
	}
	for _, s := range p.Statuses {
		if s == status {
			return true
		}
	}
	return false
}

// TryTimeout is how long the next try may wait for its response head,
// given the request's deadline.
func (p *Policy) TryTimeout(now, deadline time.Time) time.Duration {
	left := deadline.Sub(now)
	if p.PerTryTimeout > 0 && p.PerTryTimeout < left {
		return p.PerTryTimeout
	}
	return left
}

func (p *Policy) applyRetries(r *resource.Retries) {
	p.Retries = r.Attempts
	p.ConnectRetries = max(r.Attempts, defaultConnectRetries)
	on := r.RetryOn
	if len(on) == 0 {
		on = resource.DefaultRetryOn
	}
	p.On = 0
	for _, c := range on {
		switch c {
		case "connect-failure":
			p.On |= OnConnectFailure
		case "reset":
			p.On |= OnReset
		case "5xx":
			p.On |= On5xx
		case "gateway-error":
			p.On |= OnGatewayError
		default:
			if code, ok := resource.ParseRetriableStatus(c); ok {
				p.Statuses = append(p.Statuses, code)
			} else if g := resource.RetryConditions[c]; g > 0 {
				p.GRPC |= 1 << g
			}
		}
	}
	if p.On&OnConnectFailure == 0 {
		p.ConnectRetries = 0
	}
	if d, err := time.ParseDuration(r.PerTryTimeout); err == nil && d > 0 {
		p.PerTryTimeout = d
	}
	p.BackoffBase, p.BackoffMax = r.Backoff.Durations()
	if r.Backoff != nil && r.Backoff.Jitter > 0 {
		p.Jitter = r.Backoff.Jitter
	}
	p.BudgetRatio, p.BudgetPerSecond = r.Budget.Values()
	p.NonIdempotent = r.RetryNonIdempotent
	if r.MaxBodyBytes > 0 {
		p.MaxBodyBytes = r.MaxBodyBytes
	}
}

// With returns a copy of p with a Route rule's timeout and retries (empty
// and nil keep p's), sharing p's live state. The budget's rates stay the
// destination's: one budget guards one destination.
func (p *Policy) With(timeout string, r *resource.Retries) *Policy {
	q := *p
	if d, err := time.ParseDuration(timeout); err == nil && d > 0 {
		q.Timeout = d
	}
	if r != nil {
		ratio, per := q.BudgetRatio, q.BudgetPerSecond
		q.Statuses, q.GRPC = nil, 0
		q.applyRetries(r)
		q.BudgetRatio, q.BudgetPerSecond = ratio, per
	}
	return &q
}

// HealthCheck is a destination's active health check: an HTTP GET of Path
// through each instance's inbound (or, with no Path, a TCP connection)
// every Interval, each waiting at most Timeout. Results go to
// Detector.ReportHealth.
type HealthCheck struct {
	Path              string
	Interval, Timeout time.Duration
}
