package control_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/control"
)

// serve runs a control plane with sec and stops it at the test's end.
func serve(t *testing.T, sec control.SecurityConfig) *control.Server {
	t.Helper()
	s, err := control.New(control.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), Broker: control.BrokerOff, Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(s.DataDir(), "ca.pem")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no ca.pem")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

type authCall struct {
	method, path, token, cookie, origin, body string
}

func authDo(t *testing.T, hc *http.Client, base string, c authCall) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.cookie != "" {
		req.Header.Set("Cookie", c.cookie)
	}
	if c.origin != "" {
		req.Header.Set("Origin", c.origin)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// The API's guard by default: roles, the dashboard's one-time login and
// its cookie, and what stays open.
func TestAPIAuthDefault(t *testing.T) {
	s := serve(t, control.SecurityConfig{APIAuth: true})
	base := s.APIURL()
	if !strings.HasPrefix(base, "http://") {
		t.Fatalf("a loopback API is %s, want plain HTTP (--api-tls auto)", base)
	}
	hc := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	admin := s.LocalToken()
	resp, body := authDo(t, hc, base, authCall{method: "POST", path: "/api/v1/tokens", token: admin, body: `{"role":"read"}`})
	var created control.TokenCreatedJSON
	if resp.StatusCode != 201 || json.Unmarshal([]byte(body), &created) != nil {
		t.Fatalf("token create: %d %s", resp.StatusCode, body)
	}
	read := created.Token
	// A login code for the read token, and the cookie it gives.
	resp, body = authDo(t, hc, base, authCall{method: "POST", path: "/api/v1/login", token: read, body: "{}"})
	var login control.LoginJSON
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &login) != nil || !strings.HasPrefix(login.Path, "/login?code=") {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	resp, _ = authDo(t, hc, base, authCall{method: "GET", path: login.Path})
	var cookie string
	for _, c := range resp.Cookies() {
		cookie = c.Name + "=" + c.Value
		if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
			t.Errorf("session cookie %+v: want HttpOnly and SameSite=Strict", c)
		}
	}
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" || cookie == "" {
		t.Fatalf("GET %s: %d %v, want 303 to /ui/ with a cookie", login.Path, resp.StatusCode, resp.Header)
	}
	manifest := "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: orders}\nspec:\n  service: orders\n  loadBalancer: {algorithm: random}\n"
	for _, tc := range []struct {
		name string
		c    authCall
		want int
	}{
		{"no token", authCall{method: "GET", path: "/api/v1/services"}, 401},
		{"wrong token", authCall{method: "GET", path: "/api/v1/services", token: "weft_admin_x_y"}, 401},
		{"read token reads", authCall{method: "GET", path: "/api/v1/services", token: read}, 200},
		{"read token applies", authCall{method: "POST", path: "/api/v1/apply", token: read, body: manifest}, 403},
		{"read token lists tokens", authCall{method: "GET", path: "/api/v1/tokens", token: read}, 403},
		{"admin applies", authCall{method: "POST", path: "/api/v1/apply", token: admin, body: manifest}, 200},
		{"cookie reads", authCall{method: "GET", path: "/api/v1/stats", cookie: cookie}, 200},
		{"cookie of the read token applies", authCall{method: "POST", path: "/api/v1/apply", cookie: cookie, body: manifest}, 403},
		{"cookie from another origin", authCall{method: "POST", path: "/api/v1/apply", cookie: cookie, origin: "http://evil.example", body: manifest}, 401},
		{"forged cookie", authCall{method: "GET", path: "/api/v1/services", cookie: strings.SplitN(cookie, "=", 2)[0] + "=forged"}, 401},
		{"login code used twice", authCall{method: "GET", path: login.Path}, 401},
		{"healthz open", authCall{method: "GET", path: "/healthz"}, 200},
		{"dashboard page open", authCall{method: "GET", path: "/ui/"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := authDo(t, hc, base, tc.c)
			if resp.StatusCode != tc.want {
				t.Fatalf("%d %s, want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want >= 400 && strings.Count(strings.TrimSpace(body), "\n") != 0 {
				t.Errorf("refusal of %d lines: %q", strings.Count(body, "\n")+1, body)
			}
		})
	}
}

// --api-tls on: the API's certificate verifies by the mesh CA, by host
// name too (curl --cacert), and plain HTTP is not served.
func TestAPITLS(t *testing.T) {
	s := serve(t, control.SecurityConfig{APIAuth: true, APITLS: "on"})
	if !strings.HasPrefix(s.APIURL(), "https://") {
		t.Fatalf("APIURL %s with --api-tls on", s.APIURL())
	}
	pem, err := os.ReadFile(filepath.Join(s.DataDir(), "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		u := strings.Replace(s.APIURL(), "127.0.0.1", host, 1)
		resp, body := authDo(t, hc, u, authCall{method: "GET", path: "/api/v1/services", token: s.LocalToken()})
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", u, resp.StatusCode, body)
		}
	}
	other := &http.Client{Timeout: 5 * time.Second} // the system's roots
	if _, err := other.Get(s.APIURL() + "/healthz"); err == nil {
		t.Error("a client without the mesh CA verified the API's certificate")
	}
	resp, err := other.Get("http://" + s.HTTPAddr() + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served on the TLS port")
		}
	}
}
