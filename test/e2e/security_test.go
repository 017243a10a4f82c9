package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// A strict mesh, which is the default (no --mtls flag): sidecars talk
// mutual TLS with certificates from the control plane's CA; plaintext and
// foreign certificates are refused at the inbound port.
func TestStrictMTLS(t *testing.T) {
	cp := StartControl(t)
	orders := StartRun(t, cp, RunOpts{Service: "orders"})
	cp.WaitReady("orders", 1, eventually)
	tcpPort := freePort(t)
	client := StartClient(t, cp, map[string]int{"orders": tcpPort})
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", orders.Name)

	// Traffic flows, on the fast path and through a raw TCP tunnel.
	for i := range 20 {
		if r := meshGet(c, "orders", "/x", nil); !r.OK() {
			t.Fatalf("request %d: %s", i, r)
		}
	}
	tc, err := net.DialTimeout("tcp", addr(tcpPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(tc, "GET /tcp HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
	line, _ := bufio.NewReader(tc).ReadString('\n')
	tc.Close()
	if !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("TCP tunnel in strict mode: %q", line)
	}

	// Each side holds an SVID for its service.
	var id struct {
		SPIFFEID string           `json:"spiffeId"`
		Mode     string           `json:"mtlsMode"`
		Hands    int64            `json:"handshakes"`
		Failures map[string]int64 `json:"handshakeFailures"`
	}
	getJSON(t, orders.AdminURL()+"/identity", &id)
	if id.SPIFFEID != "spiffe://weft.local/ns/default/sa/orders" || id.Mode != "strict" || id.Hands < 1 {
		t.Fatalf("orders identity: %+v", id)
	}

	// Plain HTTP straight to the inbound port: refused with one clear line.
	code, body, err := harness.Get("http://" + orders.InboundAddr() + "/x")
	if err != nil || code != 400 || !strings.Contains(body, "mutual TLS") {
		t.Fatalf("plaintext to a strict inbound: %d %q %v", code, body, err)
	}
	// TLS without a certificate, and with one from another CA: refused.
	bad := selfSignedSVID(t)
	for name, cfg := range map[string]*tls.Config{
		"no certificate": {InsecureSkipVerify: true},
		"another CA":     {InsecureSkipVerify: true, Certificates: []tls.Certificate{bad}},
	} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", orders.InboundAddr(), cfg)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(conn, "GET /x HTTP/1.1\r\nHost: orders\r\n\r\n")
			line, _ := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if strings.HasPrefix(line, "HTTP/1.1 200") {
				t.Fatalf("%s: served", name)
			}
		}
	}
	if !harness.Poll(eventually, func() bool {
		getJSON(t, orders.AdminURL()+"/identity", &id)
		return id.Failures["plaintext"] >= 1 && id.Failures["no_certificate"] >= 1 && id.Failures["unknown_authority"] >= 1
	}) {
		t.Fatalf("refusals not counted by reason: %v", id.Failures)
	}

	// The control plane lists what it issued.
	var certs struct {
		Certs []struct {
			Service, SPIFFEID string
		} `json:"certs"`
	}
	getJSON(t, cp.URL+"/api/v1/certs", &certs)
	got := map[string]bool{}
	for _, c := range certs.Certs {
		got[c.Service] = true
	}
	if !got["orders"] || !got["client"] {
		t.Fatalf("issued certificates: %+v", certs.Certs)
	}
	if r := weft(t, 30*time.Second, nil, "get", "certs", "--server", cp.URL); r.Code != 0 ||
		!strings.Contains(r.Stdout, "spiffe://weft.local/ns/default/sa/orders") || !strings.Contains(r.Stdout, "mTLS strict") {
		t.Fatalf("weft get certs: %s", r)
	}
	if r := weft(t, 30*time.Second, nil, "identity", "--admin", addr(orders.Admin)); r.Code != 0 ||
		!strings.Contains(r.Stdout, "SPIFFE ID   spiffe://weft.local/ns/default/sa/orders") {
		t.Fatalf("weft identity: %s", r)
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	code, body, err := harness.Get(u)
	if err != nil || code != 200 {
		t.Fatalf("GET %s: %d %s %v", u, code, body, err)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %q", u, err, body)
	}
}

// selfSignedSVID is a certificate shaped like an SVID of the mesh but
// issued by nobody the mesh trusts.
func selfSignedSVID(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://weft.local/ns/default/sa/web")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// An AuthorizationPolicy allowing only web to GET /orders/*: web gets
// through, batch and other paths get 403 x-weft-error: denied, and no
// encoding of a denied path gets through the real mesh.
func TestAuthorizationPolicy(t *testing.T) {
	cp := StartControl(t, "--mtls", "strict")
	orders := StartRun(t, cp, RunOpts{Service: "orders"})
	cp.WaitReady("orders", 1, eventually)
	web := StartSidecar(t, cp, SidecarOpts{Service: "web"})
	batch := StartSidecar(t, cp, SidecarOpts{Service: "batch"})
	wc, bc := proxyClient(web.OutboundAddr()), proxyClient(batch.OutboundAddr())
	waitAllServing(t, wc, "orders", orders.Name)

	// Before any policy, the app learns who called, and a forged header is replaced.
	r := meshGet(wc, "orders", "/orders/1", http.Header{"X-Weft-Peer-Identity": {"spiffe://weft.local/ns/default/sa/admin"}})
	if !r.OK() || r.Reply.Peer != "spiffe://weft.local/ns/default/sa/web" {
		t.Fatalf("peer identity at the app: %s (peer %q)", r, r.Reply.Peer)
	}

	f := writeFile(t, "authz.yaml", `apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: orders-readers
spec:
  service: orders
  action: allow
  rules:
  - services: [web]
    methods: [GET]
    paths: ["/orders/*"]
`)
	if res := weft(t, 30*time.Second, nil, "apply", "-f", f, "--server", cp.URL); res.Code != 0 {
		t.Fatalf("apply: %s", res)
	}
	denied := func(r Result) bool { return r.Status == 403 && r.Header.Get("X-Weft-Error") == "denied" }
	if !harness.Poll(eventually, func() bool { return denied(meshGet(bc, "orders", "/orders/1", nil)) }) {
		t.Fatalf("batch not denied: %s", meshGet(bc, "orders", "/orders/1", nil))
	}
	if r := meshGet(wc, "orders", "/orders/1", nil); !r.OK() {
		t.Fatalf("web GET /orders/1: %s", r)
	}
	if r := meshGet(wc, "orders", "/admin", nil); !denied(r) {
		t.Fatalf("web GET /admin: %s", r)
	}

	// Encodings of paths outside /orders/*, sent byte for byte through web's
	// outbound fast path.
	encodings := []string{"/orders/../admin", "/orders/%2e%2e/admin", "/orders/%2E%2E/admin", "/orders/..%2fadmin",
		"/orders%2F..%2Fadmin", "/orders/..\\admin", "/orders/%5c../admin", "/orders/%c0%ae%c0%ae/admin", "/ORDERS/1",
		"/Orders/1", "/orders;x=1/../admin", "/orders/.%2e/admin", "//admin", "/orders/x/../../admin", "/ordersX",
		"/orders%252F..%252Fadmin", "/orders%00/../admin", "/./admin", "/orders/%2e%2e%2fadmin", "/%6Frders/../admin"}
	bypasses := 0
	for _, p := range encodings {
		status := rawGet(t, web.OutboundAddr(), p)
		if status == 200 {
			bypasses++
			t.Errorf("%s: 200 (bypass)", p)
		}
	}
	t.Logf("%d encodings of a denied path: %d bypasses", len(encodings), bypasses)
	var metrics string
	harness.Poll(eventually, func() bool {
		_, metrics, _ = harness.Get(orders.AdminURL() + "/metrics")
		return strings.Contains(metrics, `weft_authz_denied_total{policy="(no allow policy matched)"}`)
	})
	if !strings.Contains(metrics, `weft_authz_denied_total{policy="(no allow policy matched)"}`) {
		t.Fatalf("no denial metric:\n%s", metrics)
	}
	if !strings.Contains(orders.Proc.ReadOutput(), "request denied") {
		t.Fatal("denials not logged")
	}
}

// rawGet sends one request line as given (no client-side cleaning) to an
// outbound listener for service orders and returns the status.
func rawGet(t *testing.T, outbound, target string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", outbound, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Join tokens: a sidecar proves it may claim its service. A token for
// orders cannot register payments; no token (and no local token file for
// its control plane) cannot register at all.
func TestJoinTokens(t *testing.T) {
	cp := StartControl(t)
	res := weft(t, 30*time.Second, nil, "token", "create", "--service", "orders", "--ttl", "1h", "--server", cp.URL)
	if res.Code != 0 {
		t.Fatalf("token create: %s", res)
	}
	ordersToken := strings.TrimSpace(res.Stdout)
	StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--token", ordersToken}})
	cp.WaitReady("orders", 1, eventually)
	bad := StartRun(t, cp, RunOpts{Service: "payments", Flags: []string{"--token", ordersToken}, NoWait: true})
	forged := StartRun(t, cp, RunOpts{Service: "payments", Flags: []string{"--token", "weft_join_0000_forged"}, NoWait: true})
	if !harness.Poll(eventually, func() bool {
		return strings.Contains(bad.Proc.ReadOutput(), `this join token is for service \"orders\", not \"payments\"`) &&
			strings.Contains(forged.Proc.ReadOutput(), "token not recognised")
	}) {
		t.Fatalf("refusals not logged:\n%s\n%s", bad.Proc.Tail(10), forged.Proc.Tail(10))
	}
	time.Sleep(time.Second)
	if ins, _ := cp.Services(); len(ins["payments"]) != 0 {
		t.Fatalf("payments registered with an orders token: %+v", ins["payments"])
	}
}

// The API is authenticated and, with --api-tls on, TLS (off loopback it
// is by default): no token → 401 in one line that says where the CLI
// looked; a read token reads but cannot apply (403); a wrong token → 401;
// a CLI that cannot verify the certificate says so; the local token file
// and CA make the CLI on this machine need no flag.
func TestAPIAuth(t *testing.T) {
	cp := StartControl(t, "--api-tls", "on")
	if !strings.HasPrefix(cp.URL, "https://") {
		t.Fatalf("harness URL %q with --api-tls on", cp.URL)
	}
	bundle, err := os.ReadFile(filepath.Join(cp.DataDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	// A client of its own (curl --cacert DATA-DIR/ca.pem): the certificate
	// verifies by host name, and without a token the answer is 401.
	bare := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := bare.Get(cp.URL + "/api/v1/services")
	if err != nil {
		t.Fatalf("GET over TLS with the mesh CA: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !oneLine(strings.TrimSpace(string(b))) || !strings.Contains(string(b), "no API token") {
		t.Fatalf("no token: %d %q", resp.StatusCode, b)
	}
	// Plain HTTP to the TLS port: nothing served.
	if code, body, _ := harness.Get("http://" + cp.HTTPAddr + "/api/v1/services"); code == 200 {
		t.Fatalf("plain HTTP to the TLS API served: %q", body)
	}
	r := weft(t, 30*time.Second, nil, "get", "services", "--server", "http://"+cp.HTTPAddr)
	if r.Code == 0 || !strings.Contains(r.Stderr, "serves TLS: use --server https://") || !oneLine(strings.TrimSpace(r.Stderr)) {
		t.Fatalf("http:// to the TLS API: %s", r)
	}
	// A CLI elsewhere: no local files (another $HOME).
	home := t.TempDir()
	elsewhere := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home}
	r = weft(t, 30*time.Second, elsewhere, "get", "services", "--server", cp.URL)
	if r.Code == 0 || !strings.Contains(r.Stderr, "TLS certificate is not one of the mesh CA") || !oneLine(strings.TrimSpace(r.Stderr)) {
		t.Fatalf("no CA to verify by: %s", r)
	}
	withCA := append(elsewhere, "WEFT_CA_BUNDLE="+filepath.Join(cp.DataDir, "ca.pem"))
	r = weft(t, 30*time.Second, withCA, "get", "services", "--server", cp.URL)
	if r.Code == 0 || !strings.Contains(r.Stderr, "wants an API token (401): looked in --token, $WEFT_TOKEN and the local token file "+home) || !oneLine(strings.TrimSpace(r.Stderr)) {
		t.Fatalf("no token: %s", r)
	}

	res := weft(t, 30*time.Second, nil, "token", "create", "--role", "read", "--server", cp.URL)
	if res.Code != 0 {
		t.Fatalf("token create --role read: %s", res)
	}
	read := strings.TrimSpace(res.Stdout)
	if r := weft(t, 30*time.Second, withCA, "get", "services", "--server", cp.URL, "--token", read); r.Code != 0 {
		t.Fatalf("get services with a read token: %s", r)
	}
	f := writeFile(t, "p.yaml", policyYAML("orders", "orders", "random", ""))
	r = weft(t, 30*time.Second, withCA, "apply", "-f", f, "--server", cp.URL, "--token", read)
	if r.Code == 0 || !strings.Contains(r.Stderr, "(403): a read token may not POST /api/v1/apply") || !oneLine(strings.TrimSpace(r.Stderr)) {
		t.Fatalf("apply with a read token: %s", r)
	}
	r = weft(t, 30*time.Second, nil, "get", "services", "--server", cp.URL, "--token", "nonsense")
	if r.Code == 0 || !strings.Contains(r.Stderr, "token not recognised") || !oneLine(strings.TrimSpace(r.Stderr)) {
		t.Fatalf("wrong token: %s", r)
	}
	// The local token file and CA make the CLI on this machine need no flag.
	if r := weft(t, 30*time.Second, nil, "apply", "-f", f, "--server", cp.URL); r.Code != 0 {
		t.Fatalf("apply with the local token: %s", r)
	}
	// Sidecars export spans to the https receiver, verified by the CA
	// they got with their certificate.
	orders := StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--trace-sampling", "1"}})
	cp.WaitReady("orders", 1, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", orders.Name)
	if !harness.Poll(eventually, func() bool {
		mustGet(t, c, "orders", "/x", http.Header{"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}})
		code, body, _ := harness.Get(cp.URL + "/api/v1/traces?service=orders")
		return code == 200 && strings.Contains(body, "orders")
	}) {
		t.Fatalf("no spans reached the https receiver; orders says:\n%s", orders.Proc.Tail(20))
	}
}

// Leaf renewal (a 10 s certificate, renewed at half-life) and a whole root
// rotation (add, switch, remove) under load in strict mode: no request fails.
func TestRotationUnderLoad(t *testing.T) {
	cp := StartControl(t, "--mtls", "strict", "--cert-ttl", "10s")
	a := StartRun(t, cp, RunOpts{Service: "orders"})
	b := StartRun(t, cp, RunOpts{Service: "orders"})
	cp.WaitReady("orders", 2, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", a.Name, b.Name)
	serial := func(s *Sidecar) string {
		var id struct{ Serial string }
		getJSON(t, s.AdminURL()+"/identity", &id)
		return id.Serial
	}
	before := map[*Sidecar]string{a: serial(a), b: serial(b), client: serial(client)}

	type rootsJSON struct {
		Roots []struct {
			Fingerprint string
			Signing     bool
		}
	}
	rotate := func(q string) rootsJSON {
		t.Helper()
		req, _ := http.NewRequest("POST", cp.URL+"/api/v1/ca/rotate?"+q, nil)
		apiToken(t, req, cp)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("rotate %s: %d %s", q, resp.StatusCode, body)
		}
		var out rootsJSON
		_ = json.Unmarshal(body, &out)
		return out
	}
	// 6 workers, one request each per 20 ms plus its latency: about 200 req/s here.
	results := Load(c, "orders", LoadOpts{Workers: 6, MaxPerWorker: 100000, Duration: 16 * time.Second, Pause: 20 * time.Millisecond}, nil)
	time.Sleep(2 * time.Second)
	var certs CertsView
	getJSON(t, cp.URL+"/api/v1/certs", &certs)
	old := certs.Roots[0].Fingerprint
	added := rotate("step=add")
	newFP := added.Roots[1].Fingerprint
	time.Sleep(2 * time.Second) // every sidecar has the new bundle
	rotate("step=switch&fingerprint=" + newFP)
	// Remove once every connected sidecar holds a leaf of the new root.
	if !harness.Poll(eventually, func() bool {
		getJSON(t, cp.URL+"/api/v1/certs", &certs)
		for _, c := range certs.Certs {
			if c.Issuer != newFP {
				return false
			}
		}
		return len(certs.Certs) >= 3
	}) {
		t.Fatalf("leaves not reissued by the new root: %+v", certs.Certs)
	}
	time.Sleep(time.Second)
	if r := rotate("step=remove&fingerprint=" + old); len(r.Roots) != 1 || r.Roots[0].Fingerprint != newFP {
		t.Fatalf("after remove: %+v", r)
	}
	rs := <-results
	if f := failures(rs); len(f) > 0 {
		t.Fatalf("%d of %d requests failed during renewal and rotation: %s", len(f), len(rs), describe(f, 5))
	}
	for s, was := range before {
		if serial(s) == was {
			t.Errorf("%s kept its first certificate", s.Name)
		}
	}
	t.Logf("leaf renewal and root rotation: %d requests over %s (%.0f req/s), 0 failed", len(rs), 16*time.Second, float64(len(rs))/16)
}

// CertsView is GET /api/v1/certs.
type CertsView struct {
	Roots []struct{ Fingerprint string } `json:"roots"`
	Certs []struct {
		Service, Instance, Serial, Issuer string
	} `json:"certs"`
}

// apiToken authorizes a raw API request with the control plane's local token.
func apiToken(t *testing.T, req *http.Request, cp *Control) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cp.DataDir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
}

// A PeerAuthentication makes one service strict in a permissive mesh, and
// deleting it makes it permissive again.
func TestPeerAuthentication(t *testing.T) {
	cp := StartControl(t, "--mtls", "permissive")
	orders := StartRun(t, cp, RunOpts{Service: "orders"})
	cp.WaitReady("orders", 1, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", orders.Name)
	plain := func() int {
		code, _, _ := harness.Get("http://" + orders.InboundAddr() + "/x")
		return code
	}
	if code := plain(); code != 200 {
		t.Fatalf("plaintext in a permissive mesh: %d", code)
	}
	f := writeFile(t, "pa.yaml", "apiVersion: weft.dev/v1alpha1\nkind: PeerAuthentication\nmetadata:\n  name: orders\nspec:\n  service: orders\n  mode: strict\n")
	if r := weft(t, 30*time.Second, nil, "apply", "-f", f, "--server", cp.URL); r.Code != 0 {
		t.Fatalf("apply: %s", r)
	}
	if !harness.Poll(eventually, func() bool { return plain() == 400 }) {
		t.Fatalf("plaintext to orders after PeerAuthentication strict: %d", plain())
	}
	mustGet(t, c, "orders", "/x", nil) // the mesh still flows
	if r := weft(t, 30*time.Second, nil, "delete", "-f", f, "--server", cp.URL); r.Code != 0 {
		t.Fatalf("delete: %s", r)
	}
	if !harness.Poll(eventually, func() bool { return plain() == 200 }) {
		t.Fatalf("plaintext after deleting the PeerAuthentication: %d", plain())
	}
}

// --broker-auth: sidecars publish through the embedded broker with the
// credentials they got with their certificate; an app dialling NATS
// directly without them is refused.
func TestBrokerAuth(t *testing.T) {
	cp := StartControl(t, "--broker-auth")
	orders := StartRun(t, cp, RunOpts{Service: "orders"})
	cp.WaitReady("orders", 1, eventually)
	var topics struct{ Broker string }
	getJSON(t, cp.URL+"/api/v1/topics", &topics)
	u, err := url.Parse(topics.Broker)
	if err != nil || u.Host == "" {
		t.Fatalf("broker %q", topics.Broker)
	}
	if u.User == nil || u.User.Username() != "redacted" {
		t.Fatalf("the API shows the broker's credentials or none: %q", topics.Broker)
	}
	var status int
	if !harness.Poll(eventually, func() bool {
		resp, err := http.Post("http://"+orders.OutboundAddr()+"/v1/publish/order.created", "application/json", strings.NewReader(`{"n":1}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		status = resp.StatusCode
		return status == 200
	}) {
		t.Fatalf("publish through the sidecar: %d", status)
	}
	// A raw NATS client without credentials: the server says so at once.
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	info, _ := br.ReadString('\n')
	if !strings.Contains(info, `"auth_required":true`) {
		t.Fatalf("broker INFO does not require auth: %q", info)
	}
	io.WriteString(c, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPUB weft.t.order.created 2\r\nhi\r\nPING\r\n")
	line, _ := br.ReadString('\n')
	if !strings.Contains(line, "-ERR 'Authorization Violation'") {
		t.Fatalf("unauthenticated publish: %q", line)
	}
}

// --control-tls on: the sidecars' stream is TLS, the control plane's
// certificate verified by the mesh CA (found beside the local token file);
// a sidecar given another CA's bundle does not connect.
func TestControlPlaneTLS(t *testing.T) {
	cp := StartControl(t, "--control-tls", "on")
	orders := StartRun(t, cp, RunOpts{Service: "orders"})
	cp.WaitReady("orders", 1, eventually)
	client := StartClient(t, cp, nil)
	waitAllServing(t, proxyClient(client.OutboundAddr()), "orders", orders.Name)

	other := StartControl(t) // another mesh, another CA
	bundle := filepath.Join(other.DataDir, "ca.pem")
	if !harness.Poll(eventually, func() bool { _, err := os.Stat(bundle); return err == nil }) {
		t.Fatal("no DATA-DIR/ca.pem")
	}
	wrong := StartRun(t, cp, RunOpts{Service: "payments", Flags: []string{"--ca-bundle", bundle}, NoWait: true})
	if !harness.Poll(eventually, func() bool {
		return strings.Contains(wrong.Proc.ReadOutput(), "certificate")
	}) {
		t.Fatalf("no certificate error:\n%s", wrong.Proc.Tail(10))
	}
	if ins, _ := cp.Services(); len(ins["payments"]) != 0 {
		t.Fatalf("a sidecar trusting another CA registered: %+v", ins["payments"])
	}
}

// gRPC between sidecars in strict mode (h2 over mTLS), and a denied call is
// PERMISSION_DENIED.
func TestGRPCStrictAndDenied(t *testing.T) {
	cp := StartControl(t, "--mtls", "strict")
	StartRun(t, cp, RunOpts{Service: "echo-grpc", AppArgs: []string{"--grpc"}})
	cp.WaitReady("echo-grpc", 1, eventually)
	batch := StartSidecar(t, cp, SidecarOpts{Service: "batch"})
	cc, err := grpc.NewClient(batch.OutboundAddr(), grpc.WithAuthority("echo-grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tc := testpb.NewTestServiceClient(cc)
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}})
		return err
	}
	if !harness.Poll(eventually, func() bool { return call() == nil }) {
		t.Fatalf("gRPC in strict mode: %v", call())
	}
	f := writeFile(t, "authz.yaml", "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: only-web\nspec:\n  service: echo-grpc\n  action: allow\n  rules:\n  - services: [web]\n")
	if r := weft(t, 30*time.Second, nil, "apply", "-f", f, "--server", cp.URL); r.Code != 0 {
		t.Fatalf("apply: %s", r)
	}
	if !harness.Poll(eventually, func() bool { return status.Code(call()) == codes.PermissionDenied }) {
		t.Fatalf("denied gRPC call: %v", call())
	}
}

// A restarted control plane in strict mode: each stream starts with a CSR
// for the sidecar's current key, so its registration is accepted again.
func TestStrictControlRestart(t *testing.T) {
	cp := StartControl(t, "--mtls", "strict")
	orders := StartRun(t, cp, RunOpts{Service: "orders"})
	cp.WaitReady("orders", 1, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", orders.Name)
	cp.Stop(10 * time.Second)
	cp.Restart()
	cp.WaitReady("orders", 1, eventually)
	if out := cp.Proc.ReadOutput(); strings.Contains(out, "strict mTLS: ask for a certificate") {
		t.Fatalf("a registration was refused after the restart:\n%s", harness.Tail(out, 10, 4000))
	}
	mustGet(t, c, "orders", "/after-restart", nil)
}

// --mtls off, the benchmarks' and migrations' switch: sidecars dial each
// other in plaintext (no handshake on either side) and traffic flows.
func TestMTLSOff(t *testing.T) {
	cp := StartControl(t, "--mtls", "off")
	orders := StartRun(t, cp, RunOpts{Service: "orders"})
	cp.WaitReady("orders", 1, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", orders.Name)
	for range 10 {
		mustGet(t, c, "orders", "/x", nil)
	}
	var id struct {
		Mode      string `json:"mtlsMode"`
		Hands     int64  `json:"handshakes"`
		Plaintext int64  `json:"plaintextAccepted"`
	}
	getJSON(t, orders.AdminURL()+"/identity", &id)
	if id.Mode != "off" || id.Plaintext < 1 || id.Hands != 0 {
		t.Fatalf("orders with --mtls off: %+v, want mode off, plaintext connections and no handshake", id)
	}
}
