package control

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/weftmesh/weft/kube/tokenreview"
	"github.com/weftmesh/weft/security/token"
)

type fakeReviewer map[string]tokenreview.Account

func (f fakeReviewer) Review(_ context.Context, secret string) (tokenreview.Account, error) {
	if a, ok := f[secret]; ok {
		return a, nil
	}
	return tokenreview.Account{}, tokenreview.ErrRefused
}

// The mapping rule: ServiceAccount NS/SA claims service SA in namespace NS
// and nothing else.
func TestCheckAccount(t *testing.T) {
	rv := fakeReviewer{"shop": {Namespace: "meshed", Name: "shop"}, "dflt": {Namespace: "default", Name: "web"}}
	for _, tc := range []struct {
		secret, ns, svc string
		err             string
	}{
		{"shop", "meshed", "shop", ""},
		{"dflt", "", "web", ""}, // no namespace: default
		{"shop", "meshed", "payments", `ServiceAccount meshed/shop, which may register only service "shop"`},
		{"shop", "other", "shop", `not "shop" in "other"`},
		{"forged", "meshed", "shop", tokenreview.ErrRefused.Error()},
	} {
		err := checkAccount(context.Background(), rv, tc.secret, tc.ns, tc.svc)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s claiming %s/%s: err %v, want %q", tc.secret, tc.ns, tc.svc, err, tc.err)
		}
		if tc.secret == "forged" && !errors.Is(err, tokenreview.ErrRefused) {
			t.Errorf("a refused review lost its cause: %v", err)
		}
	}
}

// checkJoin: join tokens work as ever; a ServiceAccount token is reviewed
// only with a reviewer set, and said to need --kubernetes otherwise.
func TestCheckJoinKubernetes(t *testing.T) {
	m, err := token.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	join, _, err := m.Create(token.RoleJoin, "shop", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{tokens: m}
	const sa = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig"
	ctx := context.Background()
	if err := s.checkJoin(ctx, join, "meshed", "shop"); err != nil {
		t.Errorf("a join token for shop: %v", err)
	}
	if err := s.checkJoin(ctx, sa, "meshed", "shop"); err == nil || !strings.Contains(err.Error(), "--kubernetes") {
		t.Errorf("a ServiceAccount token without a reviewer: %v, want a hint at --kubernetes", err)
	}
	s.SetAccountReviewer(fakeReviewer{sa: {Namespace: "meshed", Name: "shop"}})
	for _, tc := range []struct {
		secret, svc string
		ok          bool
	}{{sa, "shop", true}, {sa, "web", false}, {join, "shop", true}, {join, "web", false}, {"weft_join_x_y", "shop", false}} {
		if err := s.checkJoin(ctx, tc.secret, "meshed", tc.svc); (err == nil) != tc.ok {
			t.Errorf("%.12s… claiming %s: %v, want ok=%v", tc.secret, tc.svc, err, tc.ok)
		}
	}
}
