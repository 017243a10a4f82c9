package control

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/weftmesh/weft/kube/tokenreview"
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
