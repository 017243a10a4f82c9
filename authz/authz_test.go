package authz

import (
	"encoding/json"
	"strings"
	"testing"
)

func snap(t *testing.T, specs map[string]string) *Snapshot {
	t.Helper()
	var objs []Object
	for name, spec := range specs {
		objs = append(objs, Object{Name: name, Spec: json.RawMessage(spec)})
	}
	s, err := Compile(objs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type hdrs map[string]string

func (h hdrs) Get(n string) []byte {
	for k, v := range h {
		if strings.EqualFold(k, n) {
			return []byte(v)
		}
	}
	return nil
}

var (
	web   = Source{Verified: true, Service: "web", Namespace: "default", Principal: "spiffe://weft.local/ns/default/sa/web"}
	batch = Source{Verified: true, Service: "batch", Namespace: "default", Principal: "spiffe://weft.local/ns/default/sa/batch"}
	plain = Source{}
)

func req(src Source, method, target string, h hdrs) *Request {
	if h == nil {
		h = hdrs{}
	}
	return &Request{Source: src, Method: []byte(method), Target: []byte(target), Headers: h}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a/b?x=1", "/a/b"},
		{"//a///b/", "/a/b/"},
		{"/a/./b", "/a/b"},
		{"/a/../b", "/b"},
		{"/../../b", "/b"},
		{"/a/b/..", "/a/"},
		{"/a/b/.", "/a/b/"},
		{"/%61%2Fb", "/a/b"},
		{"/a/%2e%2E/b", "/b"},
		{"/caf%C3%A9", "/café"},
		{"*", "*"},
	} {
		got, err := Normalize(nil, []byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "a", "/%", "/%2", "/%zz", "/%25", "/a%252F", "/a#b", "/a%23b", "/a\\b", "/a%5Cb", "/a;b", "/a%3Bb",
		"/a%00", "/a\x00", "/a%0a", "/%C0%AE", "/%ff", "/a%7f"} {
		if got, err := Normalize(nil, []byte(in)); err == nil {
			t.Errorf("Normalize(%q) = %q, want an error", in, got)
		}
	}
}

// Every spelling of a denied path is denied: 0 bypasses.
func TestNoBypass(t *testing.T) {
	denyAdmin := snap(t, map[string]string{"no-admin": `{"service":"orders","action":"deny","rules":[{"paths":["/admin/*"]}]}`})
	admin := []string{
		"/admin/secret", "/ADMIN/secret", "/Admin/Secret", "//admin/secret", "/./admin/secret", "/x/../admin/secret",
		"/%61dmin/secret", "/%41DMIN/secret", "/admin%2Fsecret", "/admin%2fsecret", "/%2e/admin/secret",
		"/foo/%2e%2e/admin/secret", "/foo/%2E%2E/admin/secret", "/.%2e/admin/secret", "/admin;x=1/secret",
		"/admin/secret;jsessionid=1", "/admin\\secret", "/admin%5csecret", "/%c0%ae%c0%ae/admin/secret",
		"/foo/%c0%ae%c0%ae/admin/secret", "/admin/secret#frag", "/admin/secret%23frag", "/admin%252Fsecret",
		"/admin/./secret", "/admin//secret", "/admin", "/admin/", "/ADMIN", "/foo/..%2Fadmin/secret", "/admin%00/secret",
		"/admin/secret?x=1", "/%2Fadmin/secret", "/admin%09/secret", "/foo/..;/admin/secret", "/%u0061dmin/secret",
		"/admin%2F", "/%2e%2e/admin", "/admin%C0%AF", "/foo%2F..%2Fadmin",
	}
	allowOrders := snap(t, map[string]string{"web-orders": `{"service":"orders","action":"allow","rules":[{"services":["web"],"methods":["GET"],"paths":["/orders/*"]}]}`})
	escape := []string{
		"/orders/../admin", "/orders/%2e%2e/admin", "/orders/..%2fadmin", "/orders%2F..%2Fadmin", "/orders/..\\admin",
		"/orders/%c0%ae%c0%ae/admin", "/ORDERS/x", "/Orders", "/orders;/../admin", "/orders/.%2e/admin",
		"/orders/%2e%2e%2fadmin", "/ordersX", "/orders-admin", "/orders%2e%2e/admin", "/orders/..", "/orders/%2E%2E",
		"/orders/x/../../admin", "/orders%00/x", "/orders%252F../admin",
	}
	bypasses := 0
	var scratch []byte
	for _, p := range admin {
		if d := denyAdmin.Evaluate(req(web, "GET", p, nil), &scratch); d.Allowed {
			t.Errorf("deny /admin/*: %q allowed", p)
			bypasses++
		}
	}
	for _, p := range escape {
		if d := allowOrders.Evaluate(req(web, "GET", p, nil), &scratch); d.Allowed {
			t.Errorf("allow only /orders/*: %q allowed", p)
			bypasses++
		}
	}
	t.Logf("%d encodings of denied paths, %d bypasses", len(admin)+len(escape), bypasses)
	// What should pass still passes.
	for _, p := range []string{"/orders", "/orders/", "/orders/42", "/orders//42", "/orders/a/../b", "/orders/%34%32?q=1"} {
		if d := allowOrders.Evaluate(req(web, "GET", p, nil), &scratch); !d.Allowed {
			t.Errorf("web GET %q denied: %+v", p, d)
		}
	}
	for _, p := range []string{"/public", "/adminx", "/ad/min"} {
		if d := denyAdmin.Evaluate(req(web, "GET", p, nil), &scratch); !d.Allowed {
			t.Errorf("deny /admin/*: %q denied: %+v", p, d)
		}
	}
}

func TestRules(t *testing.T) {
	s := snap(t, map[string]string{
		"web-orders": `{"service":"orders","action":"allow","rules":[{"services":["web"],"methods":["GET"],"paths":["/orders/*"]},
			{"principals":["spiffe://weft.local/ns/default/sa/batch"],"paths":["/batch"],"headers":{"x-job":["*"]}}]}`,
		"no-delete-tenant": `{"service":"orders","action":"deny","rules":[{"headers":{"X-Tenant":["blocked"]}}]}`,
	})
	var scratch []byte
	for _, tc := range []struct {
		name  string
		r     *Request
		allow bool
		pol   string
	}{
		{"web GET", req(web, "GET", "/orders/1", nil), true, ""},
		{"web DELETE", req(web, "DELETE", "/orders/1", nil), false, DefaultDeny},
		{"batch GET orders", req(batch, "GET", "/orders/1", nil), false, DefaultDeny},
		{"plaintext caller", req(plain, "GET", "/orders/1", nil), false, DefaultDeny},
		{"batch by principal with header", req(batch, "POST", "/batch/", hdrs{"x-job": "7"}), true, ""},
		{"batch without header", req(batch, "POST", "/batch", nil), false, DefaultDeny},
		{"deny wins over allow", req(web, "GET", "/orders/1", hdrs{"x-tenant": "blocked"}), false, "no-delete-tenant"},
		{"bad path", req(web, "GET", "/orders/%zz", nil), false, PathRefused},
	} {
		d := s.Evaluate(tc.r, &scratch)
		if d.Allowed != tc.allow || d.Policy != tc.pol {
			t.Errorf("%s: %+v, want allowed=%v policy=%q", tc.name, d, tc.allow, tc.pol)
		}
	}
	if d := (*Snapshot)(nil).Evaluate(req(plain, "GET", "/x", nil), &scratch); !d.Allowed {
		t.Error("no policies: denied")
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	s := snap(t, map[string]string{"web-orders": `{"service":"orders","action":"allow","rules":[{"services":["web"],"methods":["GET"],"paths":["/orders/*"]}]}`})
	r := req(web, "GET", "/orders/%34%32/./x?y=1", nil)
	scratch := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { s.Evaluate(r, &scratch) }); n != 0 {
		t.Fatalf("%v allocations per Evaluate", n)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "//a/../b/./c", "/%2e%2e/x", "/a%2Fb", "/%C0%AE", "/a;b", "/a?b=%zz", "*", "/caf%C3%A9/..", "/a/%2e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(nil, []byte(in))
		if err != nil {
			return
		}
		o := string(out)
		if o == "*" {
			return
		}
		if !strings.HasPrefix(o, "/") || strings.Contains(o, "//") || strings.ContainsAny(o, "%\\;#\x00") {
			t.Fatalf("Normalize(%q) = %q: not normal", in, o)
		}
		for _, seg := range strings.Split(o, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("Normalize(%q) = %q: dot segment left", in, o)
			}
		}
		if !strings.Contains(o, "?") {
			again, err := Normalize(nil, out)
			if err != nil || string(again) != o {
				t.Fatalf("not idempotent: %q → %q → %q, %v", in, o, again, err)
			}
		}
	})
}
