package control_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/resource"
)

func tp(name, service, algorithm string) resource.Object {
	spec, _ := json.Marshal(map[string]any{"service": service, "loadBalancer": map[string]any{"algorithm": algorithm}})
	return resource.Object{APIVersion: resource.APIVersion, Kind: resource.KindTrafficPolicy, Metadata: resource.Meta{Name: name}, Spec: spec}
}

func algorithmOf(s *control.Server, service string) string {
	for _, c := range s.Registry().Config(service) {
		var spec resource.TrafficPolicySpec
		_ = json.Unmarshal(c.SpecJson, &spec)
		if spec.LoadBalancer != nil {
			return spec.LoadBalancer.Algorithm
		}
	}
	return ""
}

// External objects go through weft apply's checks, one by one: the valid
// ones take effect, each refused one says why.
func TestSetExternal(t *testing.T) {
	s := start(t)
	// The registry lists only services with instances.
	for _, svc := range []string{"payments", "orders"} {
		s.Registry().Upsert(&pb.Instance{Service: svc, Id: svc + "-1", Address: "127.0.0.1:1", Ready: true}, t)
	}
	if code, body := post(t, "http://"+s.HTTPAddr()+"/api/v1/apply", policy); code != http.StatusOK {
		t.Fatalf("apply: %d %s", code, body)
	}
	errs := s.SetExternal([]resource.Object{
		tp("payments", "payments", "least_request"),
		tp("bad", "users", "fastest"),
		tp("orders-too", "orders", "round_robin"), // orders has a stored policy
		tp("orders", "stock", "random"),           // the stored object's name
		tp("payments", "billing", "random"),       // a second payments
	})
	want := []string{"", "fastest", "both configure service orders", "also applied with weft apply", "another TrafficPolicy/payments"}
	for i, w := range want {
		switch {
		case w == "" && errs[i] != nil:
			t.Errorf("object %d refused: %v", i, errs[i])
		case w != "" && (errs[i] == nil || !strings.Contains(errs[i].Error(), w)):
			t.Errorf("object %d: err %v, want one with %q", i, errs[i], w)
		}
	}
	for i := 2; i < 5; i++ {
		if !errors.Is(errs[i], control.ErrConflict) {
			t.Errorf("object %d: %v is not ErrConflict", i, errs[i])
		}
	}
	if got := algorithmOf(s, "payments"); got != "least_request" {
		t.Errorf("payments' pushed algorithm %q, want least_request from the external policy", got)
	}
	if got := algorithmOf(s, "orders"); got != "random" {
		t.Errorf("orders' pushed algorithm %q, want random from the stored policy", got)
	}
	// weft apply may not take what an external object claims.
	if code, body := post(t, "http://"+s.HTTPAddr()+"/api/v1/apply", strings.ReplaceAll(strings.ReplaceAll(policy, "orders", "pay"), "service: pay", "service: payments")); code != http.StatusConflict {
		t.Errorf("applying a second policy for payments: %d %s, want 409", code, body)
	}
	// Removing the external objects removes their configuration.
	s.SetExternal(nil)
	if got := algorithmOf(s, "payments"); got != "" {
		t.Errorf("payments still configured (%q) after its external policy went", got)
	}
}
