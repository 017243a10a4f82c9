package proxy

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/weftmesh/weft/authz"
	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/proxy/h1"
	"github.com/weftmesh/weft/resource"
	routes "github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/security/mtls"
)

// TestRateLimitAfterAuthorization: on both engines a denied request is
// answered 403 and takes no token: once allowed, the first request passes.
func TestRateLimitAfterAuthorization(t *testing.T) {
	deny, err := authz.Compile([]authz.Object{{Name: "nobody", Spec: json.RawMessage(`{"service":"orders","action":"deny"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	allow, err := authz.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, engine := range []string{"fast", "net/http"} {
		t.Run(engine, func(t *testing.T) {
			in := NewInbound("127.0.0.1:1", AppProtocolAuto, nil)
			in.Authz = &Authorizer{}
			in.Authz.Set(deny)
			in.SetRateLimit("orders", &resource.RateLimit{RequestsPerSecond: 0.001, Burst: 1})
			fast := in.Fast()
			send := func() (status int, code string) {
				if engine == "fast" {
					var d h1.Decision
					fast.Route(request(), &d)
					if d.Addr != "" {
						return 200, ""
					}
					for _, f := range d.Header {
						if strings.EqualFold(string(f.Name), HeaderError) {
							code = string(f.Value)
						}
					}
					return d.Status, code
				}
				w := httptest.NewRecorder()
				in.ServeHTTP(w, httptest.NewRequest("GET", "http://orders/x", nil))
				return w.Code, w.Header().Get(HeaderError)
			}
			for range 3 {
				if s, c := send(); s != 403 || c != CodeDenied {
					t.Fatalf("denied request: %d %s, want 403 denied", s, c)
				}
			}
			in.Authz.Set(allow)
			if s, c := send(); c == CodeRateLimited || c == CodeDenied {
				t.Fatalf("first allowed request: %d %s; the denied ones took its token", s, c)
			}
			if s, c := send(); s != 429 || c != CodeRateLimited {
				t.Fatalf("second allowed request: %d %s, want 429 rate_limited (burst 1)", s, c)
			}
		})
	}
}

// TestRouteRateLimit: a Route rule's rateLimit holds for what it matches,
// in place of the service's; other requests keep the service's.
func TestRouteRateLimit(t *testing.T) {
	spec := &resource.RouteSpec{Service: "orders", Rules: []resource.RouteRule{
		{Match: &resource.RouteMatch{Path: &resource.StringMatch{Prefix: "/orders"}}, RateLimit: &resource.RateLimit{RequestsPerSecond: 0.001, Burst: 1}},
		{Match: &resource.RouteMatch{Path: &resource.StringMatch{Prefix: "/free"}}},
	}}
	tab := routes.Compile("orders-route", spec, nil, func(*balancer.Endpoint) string { return "" },
		func([]*balancer.Endpoint) balancer.Picker { return balancer.Empty() }, policy.Default(policy.NewLive()))
	in := NewInbound("127.0.0.1:1", AppProtocolAuto, nil)
	in.SetRateLimits("orders", &resource.RateLimit{RequestsPerSecond: 1e6, Burst: 1000}, tab)
	// The net/http engine (the fast one shares limited; its request's
	// path is the parser's to set).
	limited := func(path string) string {
		w := httptest.NewRecorder()
		in.ServeHTTP(w, httptest.NewRequest("GET", "http://orders"+path, nil))
		if w.Code != 429 {
			return ""
		}
		return w.Body.String()
	}
	if m := limited("/orders/1"); m != "" {
		t.Fatalf("first /orders request limited: %s", m)
	}
	if m := limited("/orders/2"); !strings.Contains(m, "route orders-route rule 0") {
		t.Fatalf("second /orders request: %q, want limited by the rule", m)
	}
	for range 20 {
		if m := limited("/free/x"); m != "" {
			t.Fatalf("/free (the service's 1e6/s): %s", m)
		}
	}
	// A rebuild with the same limits keeps the buckets.
	in.SetRateLimits("orders", &resource.RateLimit{RequestsPerSecond: 1e6, Burst: 1000}, tab)
	if m := limited("/orders/3"); m == "" {
		t.Error("after an unchanged rebuild the rule's bucket was reset")
	}
}

// TestSourceOf: perSource limits key on the verified caller, not on the
// x-weft-source header the caller writes.
func TestSourceOf(t *testing.T) {
	verified := &mtls.Peer{Verified: true, ID: mtls.ID{Service: "web"}}
	for _, tc := range []struct {
		peer   *mtls.Peer
		header string
		want   string
	}{
		{nil, "web", "web"},
		{verified, "admin", "web"},
		{&mtls.Peer{Verified: false, ID: mtls.ID{Service: "web"}}, "other", "other"},
	} {
		if got := sourceOf(tc.peer, tc.header); got != tc.want {
			t.Errorf("sourceOf(%+v, %q) = %q, want %q", tc.peer, tc.header, got, tc.want)
		}
	}
}
