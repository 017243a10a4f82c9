package resource

import (
	"strings"
	"testing"
)

func TestAuthorizationPolicyValidation(t *testing.T) {
	doc := func(spec string) string {
		return "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\nspec:\n" + spec
	}
	if _, err := Decode([]byte(doc("  service: orders\n  action: allow\n  rules:\n  - services: [web]\n    methods: [GET]\n    paths: [\"/orders/*\", \"/x\", \"*\"]\n    headers: {x-tenant: [acme]}\n"))); err != nil {
		t.Fatalf("valid policy: %v", err)
	}
	for _, tc := range []struct{ spec, want string }{
		{"  service: orders\n  action: permit\n", "spec.action"},
		{"  action: allow\n", "spec.service"},
		{"  service: orders\n  action: allow\n  rules:\n  - paths: [\"orders\"]\n", "spec.rules[0].paths[0]"},
		{"  service: orders\n  action: allow\n  rules:\n  - paths: [\"/a/../b\"]\n", "segments never match"},
		{"  service: orders\n  action: allow\n  rules:\n  - paths: [\"/a%2Fb\"]\n", "decoded"},
		{"  service: orders\n  action: allow\n  rules:\n  - paths: [\"/a/*/b\"]\n", "final"},
		{"  service: orders\n  action: allow\n  rules:\n  - methods: [get]\n", "spec.rules[0].methods[0]"},
		{"  service: orders\n  action: allow\n  rules:\n  - principals: [web]\n", "SPIFFE"},
		{"  service: orders\n  action: allow\n  rules:\n  - services: [Web]\n", "spec.rules[0].services[0]"},
		{"  service: orders\n  action: allow\n  rules:\n  - headers: {x-a: []}\n", "headers.x-a"},
		{"  service: orders\n  action: allow\n  rules:\n  - sources: [web]\n", "sources"},
		{"  service: orders\n  mode: strict\n", "mode"},
	} {
		_, err := Decode([]byte(doc(tc.spec)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %q", tc.spec, err, tc.want)
		}
	}
	if _, err := Decode([]byte("apiVersion: weft.dev/v1alpha1\nkind: PeerAuthentication\nmetadata:\n  name: p\nspec:\n  service: orders\n  mode: lax\n")); err == nil || !strings.Contains(err.Error(), "spec.mode") {
		t.Errorf("PeerAuthentication mode lax: %v", err)
	}
}
