package resource

import (
	"strings"
	"testing"
)

// TestRouteErrors: every invalid Route is rejected with a message naming
// the field exactly.
func TestRouteErrors(t *testing.T) {
	const head = "apiVersion: weft.dev/v1alpha1\nkind: Route\nmetadata: {name: orders}\nspec:\n  service: orders\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
	for _, tc := range []struct{ name, rules, want string }{
		{"valid", `  rules:
  - match: {path: {prefix: /api}, method: GET, headers: [{name: x-canary, exact: "1"}, {name: x-user, regex: "u[0-9]+"}, {name: x-any, present: true}]}
    backends: [{subset: v2, weight: 1}]
    mirror: {subset: v1, percent: 50}
    fault: {delay: {percent: 10, fixed: 50ms}, abort: {percent: 1, status: 503}}
    timeout: 2s
    retries: {attempts: 1}
  - backends: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`, ""},
		{"mirror subset", "  rules:\n  - mirror: {subset: v9, percent: 10}\n", "spec.rules[0].mirror.subset: no subset named \"v9\""},
		{"mirror percent", "  rules:\n  - mirror: {subset: v2, percent: 0}\n", "spec.rules[0].mirror.percent: 0 is not above 0"},
		{"no rules", "  rules: []\n", "spec.rules: a route needs at least one rule"},
		{"bad regex", "  rules:\n  - {}\n  - match: {path: {regex: \"(\"}}\n", "spec.rules[1].match.path.regex: \"(\" does not compile"},
		{"two path kinds", "  rules:\n  - match: {path: {exact: /a, prefix: /b}}\n", "spec.rules[0].match.path: want exactly one of exact, prefix or regex"},
		{"relative path", "  rules:\n  - match: {path: {prefix: api}}\n", "spec.rules[0].match.path: a path starts with /"},
		{"method", "  rules:\n  - match: {method: FETCH}\n", "spec.rules[0].match.method: \"FETCH\" is not an HTTP method"},
		{"header without a kind", "  rules:\n  - match: {headers: [{name: x-a}]}\n", "spec.rules[0].match.headers[0]: want exactly one of exact, prefix, regex or present"},
		{"header name", "  rules:\n  - match: {headers: [{name: \"x a\", present: true}]}\n", "spec.rules[0].match.headers[0].name: \"x a\" is not a header name"},
		{"header regex", "  rules:\n  - match: {headers: [{name: x-a, regex: \"[\"}]}\n", "spec.rules[0].match.headers[0].regex"},
		{"unknown subset", "  rules:\n  - backends: [{subset: v3, weight: 1}]\n", "spec.rules[0].backends[0].subset: no subset named \"v3\" (defined: v1, v2)"},
		{"weight", "  rules:\n  - backends: [{subset: v1, weight: -1}]\n", "spec.rules[0].backends[0].weight: -1"},
		{"zero weights", "  rules:\n  - backends: [{subset: v1, weight: 0}]\n", "spec.rules[0].backends: the weights add up to 0"},
		{"delay percent", "  rules:\n  - fault: {delay: {percent: 101, fixed: 1s}}\n", "spec.rules[0].fault.delay.percent: 101"},
		{"delay fixed", "  rules:\n  - fault: {delay: {percent: 1, fixed: soon}}\n", "spec.rules[0].fault.delay.fixed: \"soon\""},
		{"abort status", "  rules:\n  - fault: {abort: {percent: 1, status: 99}}\n", "spec.rules[0].fault.abort.status: 99"},
		{"abort percent", "  rules:\n  - fault: {abort: {percent: -1, status: 503}}\n", "spec.rules[0].fault.abort.percent: -1"},
		{"rule timeout", "  rules:\n  - timeout: 0s\n", "spec.rules[0].timeout: \"0s\""},
		{"rule retries", "  rules:\n  - retries: {attempts: 99}\n", "spec.rules[0].retries.attempts: 99"},
		{"rule retryOn", "  rules:\n  - {}\n  - retries: {attempts: 1, retryOn: [often]}\n", "spec.rules[1].retries.retryOn[0]: unknown condition \"often\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(head + tc.rules))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid route rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	bad := map[string]string{
		"subset name":     "  subsets: [{name: V1, labels: {a: b}}]\n  rules: [{}]\n",
		"subset twice":    "  subsets: [{name: a, labels: {a: b}}, {name: a, labels: {a: c}}]\n  rules: [{}]\n",
		"subset labels":   "  subsets: [{name: a}]\n  rules: [{}]\n",
		"missing service": "  rules: [{}]\n",
	}
	want := map[string]string{
		"subset name": "spec.subsets[0].name", "subset twice": "spec.subsets[1].name: \"a\" is defined twice",
		"subset labels": "spec.subsets[0].labels: a subset needs at least one label", "missing service": "spec.service",
	}
	for name, spec := range bad {
		svc := "  service: orders\n"
		if name == "missing service" {
			svc = ""
		}
		_, err := Decode([]byte("apiVersion: weft.dev/v1alpha1\nkind: Route\nmetadata: {name: orders}\nspec:\n" + svc + spec))
		if err == nil || !strings.Contains(err.Error(), want[name]) {
			t.Errorf("%s: error %v, want one containing %q", name, err, want[name])
		}
	}
}
