package resource

import (
	"strings"
	"testing"
)

// TestTrafficPolicyResilienceErrors: every invalid resilience field is
// rejected with a message naming the field exactly.
func TestTrafficPolicyResilienceErrors(t *testing.T) {
	const head = "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: orders}\nspec:\n  service: orders\n"
	for _, tc := range []struct {
		name, spec, want string
	}{
		{"valid", "  idleTimeout: 1m\n  retries: {attempts: 2, retryOn: [5xx, gateway-error, retriable-status:409, unavailable], perTryTimeout: 1s,\n    backoff: {base: 10ms, max: 1s, jitter: 0.5}, budget: {ratio: 0.1, minPerSecond: 5}, retryNonIdempotent: true, maxBodyBytes: 1024}\n  outlierDetection: {consecutive5xx: 3, consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 34}\n  circuitBreaker: {maxConnections: 10, maxPendingRequests: 5, maxRequests: 20}\n", ""},
		{"idle timeout", "  idleTimeout: never\n", "spec.idleTimeout: \"never\" is not a positive duration"},
		{"attempts", "  retries: {attempts: 11}\n", "spec.retries.attempts: 11 is not between 0 and 10"},
		{"negative attempts", "  retries: {attempts: -1}\n", "spec.retries.attempts: -1"},
		{"unknown condition", "  retries: {attempts: 1, retryOn: [5xx, sometimes]}\n", "spec.retries.retryOn[1]: unknown condition \"sometimes\" (valid: connect-failure, reset, 5xx"},
		{"retriable status", "  retries: {attempts: 1, retryOn: [\"retriable-status:700\"]}\n", "spec.retries.retryOn[0]: \"retriable-status:700\": want retriable-status:<code>"},
		{"per-try timeout", "  retries: {attempts: 1, perTryTimeout: 0s}\n", "spec.retries.perTryTimeout: \"0s\" is not a positive duration"},
		{"backoff base", "  retries: {attempts: 1, backoff: {base: soon}}\n", "spec.retries.backoff.base: \"soon\""},
		{"backoff max below base", "  retries: {attempts: 1, backoff: {base: 1s, max: 10ms}}\n", "spec.retries.backoff.max: 10ms is less than base 1s"},
		{"jitter", "  retries: {attempts: 1, backoff: {jitter: 2}}\n", "spec.retries.backoff.jitter: 2 is not between 0 and 1"},
		{"budget ratio", "  retries: {attempts: 1, budget: {ratio: 1.5}}\n", "spec.retries.budget.ratio: 1.5 is not between 0 and 1"},
		{"budget per second", "  retries: {attempts: 1, budget: {minPerSecond: -1}}\n", "spec.retries.budget.minPerSecond: -1"},
		{"max body", "  retries: {attempts: 1, maxBodyBytes: 99999999999}\n", "spec.retries.maxBodyBytes: 99999999999"},
		{"unknown retries field", "  retries: {attempts: 1, tries: 3}\n", "unknown field \"tries\""},
		{"consecutive5xx", "  outlierDetection: {consecutive5xx: -3}\n", "spec.outlierDetection.consecutive5xx: -3"},
		{"gateway errors", "  outlierDetection: {consecutiveGatewayErrors: 5000}\n", "spec.outlierDetection.consecutiveGatewayErrors: 5000"},
		{"interval", "  outlierDetection: {interval: 1}\n", "field outlierDetection.interval: want string, got number"},
		{"ejection time", "  outlierDetection: {baseEjectionTime: -1s}\n", "spec.outlierDetection.baseEjectionTime: \"-1s\""},
		{"ejection percent", "  outlierDetection: {maxEjectionPercent: 101}\n", "spec.outlierDetection.maxEjectionPercent: 101 is not between 0 and 100"},
		{"success rate valid", "  outlierDetection: {successRate: {minRequests: 20, minHosts: 3, stdevFactor: 1}}\n", ""},
		{"success rate requests", "  outlierDetection: {successRate: {minRequests: -5}}\n", "spec.outlierDetection.successRate.minRequests: -5 is not between 1 and 1000000"},
		{"success rate hosts", "  outlierDetection: {successRate: {minHosts: 2}}\n", "spec.outlierDetection.successRate.minHosts: 2 is not between 3 and 10000"},
		{"success rate factor", "  outlierDetection: {successRate: {stdevFactor: -1}}\n", "spec.outlierDetection.successRate.stdevFactor: -1 is not between 0"},
		{"success rate unknown field", "  outlierDetection: {successRate: {stdev: 1}}\n", "unknown field \"stdev\""},
		{"health check valid", "  outlierDetection: {healthCheck: {path: /healthz, interval: 1s, timeout: 200ms, unhealthyThreshold: 3, healthyThreshold: 2}}\n", ""},
		{"health check tcp", "  outlierDetection: {healthCheck: {interval: 2s}}\n", ""},
		{"health check path", "  outlierDetection: {healthCheck: {path: healthz}}\n", "spec.outlierDetection.healthCheck.path: \"healthz\": want an absolute path"},
		{"health check interval", "  outlierDetection: {healthCheck: {interval: 10ms}}\n", "spec.outlierDetection.healthCheck.interval: 10ms is less than 100ms"},
		{"health check timeout", "  outlierDetection: {healthCheck: {interval: 1s, timeout: 2s}}\n", "spec.outlierDetection.healthCheck.timeout: 2s is more than interval 1s"},
		{"health check bad timeout", "  outlierDetection: {healthCheck: {timeout: never}}\n", "spec.outlierDetection.healthCheck.timeout: \"never\" is not a positive duration"},
		{"health check threshold", "  outlierDetection: {healthCheck: {unhealthyThreshold: -1}}\n", "spec.outlierDetection.healthCheck.unhealthyThreshold: -1 is not between 1 and 100"},
		{"health check healthy threshold", "  outlierDetection: {healthCheck: {healthyThreshold: 101}}\n", "spec.outlierDetection.healthCheck.healthyThreshold: 101 is not between 1 and 100"},
		{"breaker", "  circuitBreaker: {maxRequests: -1}\n", "spec.circuitBreaker.maxRequests: -1"},
		{"breaker connections", "  circuitBreaker: {maxConnections: -2}\n", "spec.circuitBreaker.maxConnections: -2"},
		{"breaker pending", "  circuitBreaker: {maxPendingRequests: -2}\n", "spec.circuitBreaker.maxPendingRequests: -2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(head + tc.spec))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid policy rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
