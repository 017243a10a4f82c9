package tokenreview

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/kube/client"
)

// fakeAPI answers TokenReviews from a table of tokens (a unit test's fake;
// test/e2e/kube checks against a real API server).
type fakeAPI struct {
	answers map[string]client.Object
	calls   int
}

func (f *fakeAPI) Create(_ context.Context, r client.Resource, ns string, obj client.Object) (client.Object, error) {
	f.calls++
	if r != Resource || ns != "" {
		return nil, fmt.Errorf("unexpected create of %v in %q", r, ns)
	}
	spec := obj["spec"].(map[string]any)
	if a := spec["audiences"].([]any); len(a) != 1 || a[0] != "weft" {
		return nil, fmt.Errorf("audiences %v, want [weft]", a)
	}
	if ans, ok := f.answers[spec["token"].(string)]; ok {
		return ans, nil
	}
	return client.Object{"status": map[string]any{"authenticated": false, "error": "invalid bearer token"}}, nil
}

func answer(user string, aud ...string) client.Object {
	a := []any{}
	for _, s := range aud {
		a = append(a, s)
	}
	return client.Object{"status": map[string]any{"authenticated": true, "audiences": a, "user": map[string]any{"username": user}}}
}

func jwt(exp int64) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(fmt.Appendf(nil, `{"exp":%d}`, exp)) + ".sig"
}

func TestReview(t *testing.T) {
	api := &fakeAPI{answers: map[string]client.Object{
		"good":     answer("system:serviceaccount:shop-ns:shop", "weft"),
		"otheraud": answer("system:serviceaccount:shop-ns:shop", "https://kubernetes.default.svc"),
		"user":     answer("alice", "weft"),
		"badsa":    answer("system:serviceaccount:onlyns", "weft"),
	}}
	r := New(api, Options{})
	for _, tc := range []struct {
		token string
		want  Account
		err   string
	}{
		{"good", Account{"shop-ns", "shop"}, ""},
		{"nope", Account{}, "invalid bearer token"},
		{"otheraud", Account{}, `not bound to the audience "weft"`},
		{"user", Account{}, `user "alice", not a ServiceAccount`},
		{"badsa", Account{}, "not a ServiceAccount"},
	} {
		got, err := r.Review(context.Background(), tc.token)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("%s: %v, %v; want %v", tc.token, got, err, tc.want)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err %v, want ErrRefused saying %q", tc.token, err, tc.err)
		}
	}
	if r.Cached() != 1 {
		t.Errorf("%d cached reviews, want 1 (refusals are not cached)", r.Cached())
	}
}

func TestCache(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	short := jwt(now.Add(71 * time.Second).Unix()) // 10 s after it is reviewed below
	api := &fakeAPI{answers: map[string]client.Object{
		"a": answer("system:serviceaccount:ns:a", "weft"), "b": answer("system:serviceaccount:ns:b", "weft"),
		"c": answer("system:serviceaccount:ns:c", "weft"), short: answer("system:serviceaccount:ns:s", "weft"),
	}}
	r := New(api, Options{Max: 2, Now: func() time.Time { return now }})
	ctx := context.Background()
	for range 3 {
		if _, err := r.Review(ctx, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if api.calls != 1 {
		t.Errorf("%d reviews of one token within the TTL, want 1", api.calls)
	}
	now = now.Add(61 * time.Second)
	r.Review(ctx, "a")
	if api.calls != 2 {
		t.Errorf("a cached review outlived its minute: %d calls, want 2", api.calls)
	}
	r.Review(ctx, "b")
	r.Review(ctx, "c")
	if n := r.Cached(); n > 2 {
		t.Errorf("%d cached reviews, want at most Max=2", n)
	}
	// A token expiring in 10 s is cached 10 s, not a minute.
	r.Review(ctx, short)
	calls := api.calls
	now = now.Add(11 * time.Second)
	r.Review(ctx, short)
	if api.calls != calls+1 {
		t.Error("a review was cached past the token's exp")
	}
}

func TestLooksLike(t *testing.T) {
	for s, want := range map[string]bool{jwt(1): true, "weft_join_abc_def": false, "a.b.c": false, "": false} {
		if LooksLike(s) != want {
			t.Errorf("LooksLike(%q) = %v", s, !want)
		}
	}
}
