package messaging

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// The embedded broker requires credentials by default: an app on the host
// dialling it directly is refused, while sidecars (which get the password
// with their workload certificate) publish and deliver.
func TestAuthEmbeddedBrokerRefusesApps(t *testing.T) {
	c := startControl(t)
	c.apply(subscription("auth", "worker", "jobs.auth", "/events/jobs", ""))
	c.waitSubscription("jobs.auth", "worker")
	w := startSub(t, c, "worker", "worker-1", nil)
	pub := startPub(t, c, "scheduler")
	if _, err := publishRetrying(pub.outbound, "jobs.auth", "a-1", "", "hello", eventually); err != nil {
		t.Fatal(err)
	}
	if !harness.Poll(eventually, func() bool { got, _ := acked(records(t, w.record)); return got["a-1"] > 0 }) {
		t.Fatal("the sidecars' message was not delivered through the authenticated embedded broker")
	}
	ts, err := c.topics()
	if err != nil || !strings.HasPrefix(ts.Broker, "nats://redacted@") {
		t.Fatalf("topics: broker %q (want its URL, the password redacted), %v", ts.Broker, err)
	}
	// The app's way round the sidecar: the URL is known, the password is not.
	brokerURL := strings.Replace(ts.Broker, "redacted@", "", 1)
	for _, opts := range [][]nats.Option{nil, {nats.UserInfo("weft", "guess")}} {
		nc, err := nats.Connect(brokerURL, append(opts, nats.Timeout(5*time.Second))...)
		if err == nil {
			nc.Close()
			t.Fatalf("dialling the embedded broker %s without its credentials succeeded", brokerURL)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("dialling %s: %v; want %v", brokerURL, err, nats.ErrAuthorization)
		}
		t.Logf("app dialling %s directly: %v", brokerURL, err)
	}
}

// natsServer returns the Debian nats-server binary (or skips outside CI).
func natsServer(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nats-server", "/usr/sbin/nats-server"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	if os.Getenv("CI") == "" {
		t.Skip("nats-server not installed (make deps installs it); skipping outside CI")
	}
	t.Fatal("nats-server not installed in CI: scripts/deps.sh should have installed it")
	return ""
}

// startNATS runs nats-server with JetStream and the config block given,
// listening on a free port; it returns host:port.
func startNATS(t *testing.T, block string) string {
	t.Helper()
	addr, _ := startNATSProc(t, block)
	return addr
}

// startNATSProc is startNATS, with the nats-server process.
func startNATSProc(t *testing.T, block string) (string, *harness.Proc) {
	t.Helper()
	bin := natsServer(t)
	port := harness.FreePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q }\n%s\n", port, filepath.Join(dir, "js"), block)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p := harness.Start(t, "nats-server", bin, "-c", conf)
	harness.WaitListening(t, p, harness.Addr(port), eventually)
	return harness.Addr(port), p
}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type testPKI struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e nats ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage, ips []net.IP) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, IPAddresses: ips,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p := testPKI{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth, nil)
	return p
}

// deliverThrough applies a subscription, starts a subscriber and a
// publisher on c and checks that a message gets through.
func deliverThrough(t *testing.T, c *control, topic string) {
	t.Helper()
	c.apply(subscription("sec-"+strings.ReplaceAll(topic, ".", "-"), "worker", topic, "/events/jobs", ""))
	c.waitSubscription(topic, "worker")
	w := startSub(t, c, "worker", "worker-1", nil)
	pub := startPub(t, c, "scheduler")
	for i := range 5 {
		if _, err := publishRetrying(pub.outbound, topic, fmt.Sprintf("m-%d", i), "", "x", eventually); err != nil {
			t.Fatal(err)
		}
	}
	if !harness.Poll(eventually, func() bool { got, _ := acked(records(t, w.record)); return len(got) == 5 }) {
		got, _ := acked(records(t, w.record))
		t.Fatalf("%d of 5 delivered", len(got))
	}
}

// failingControl runs weft control with flags and returns its output once
// it has exited (it must, non-zero).
func failingControl(t *testing.T, flags ...string) string {
	t.Helper()
	args := append([]string{"control", "--grpc-addr", harness.FreeAddr(t), "--http-addr", harness.FreeAddr(t), "--data-dir", t.TempDir(), "--otlp-endpoint", "none"}, flags...)
	p := harness.Start(t, "control-refused", bins.Weft, args...)
	if !p.WaitExit(eventually) {
		t.Fatalf("weft control %v kept running; want it to fail at start:\n%s", flags, p.Tail(20))
	}
	if p.ExitCode() == 0 {
		t.Fatalf("weft control %v exited 0:\n%s", flags, p.Tail(20))
	}
	return p.ReadOutput()
}

// An external NATS with TLS (client certificate verified) and a user and
// password: weft delivers through it; a wrong password or CA makes weft
// control fail at start with the flag to check.
func TestExternalNATSTLSAuth(t *testing.T) {
	pki := newTestPKI(t)
	addr := startNATS(t, fmt.Sprintf(`tls {
  cert_file: %q
  key_file: %q
  ca_file: %q
  verify: true
}
authorization { users = [ { user: weft, password: s3cret } ] }`, pki.serverCert, pki.serverKey, pki.ca))
	url := "tls://" + addr
	tlsFlags := []string{"--broker", url, "--nats-tls-ca", pki.ca, "--nats-tls-cert", pki.clientCert, "--nats-tls-key", pki.clientKey}

	t.Run("delivers", func(t *testing.T) {
		c := startControl(t, append(tlsFlags, "--nats-user", "weft", "--nats-password", "s3cret")...)
		deliverThrough(t, c, "jobs.tls")
		ts, err := c.topics()
		if err != nil || ts.Broker != url || !ts.Connected {
			t.Fatalf("topics: %+v %v", ts, err)
		}
	})
	refusals := []struct {
		name  string
		flags []string
		want  string
	}{
		{"wrong password", append(tlsFlags, "--nats-user", "weft", "--nats-password", "wrong"), "the broker refused our credentials (nats: Authorization Violation): check --nats-user/--nats-password"},
		{"no credentials", tlsFlags, "give --nats-creds, --nats-nkey or --nats-user/--nats-password"},
		{"no client certificate", []string{"--broker", url, "--nats-tls-ca", pki.ca, "--nats-user", "weft", "--nats-password", "s3cret"}, "check --nats-tls-cert/--nats-tls-key"},
		{"CA not given", []string{"--broker", url, "--nats-user", "weft", "--nats-password", "s3cret"}, "check --nats-tls-ca"},
		{"unreadable CA", []string{"--broker", url, "--nats-tls-ca", filepath.Join(t.TempDir(), "nope.pem")}, "--nats-tls-ca: open "},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			out := failingControl(t, r.flags...)
			if !strings.Contains(out, r.want) {
				t.Fatalf("weft control output lacks %q:\n%s", r.want, out)
			}
			t.Logf("%s: %s", r.name, lastLine(out))
		})
	}
}

// An external NATS whose only user is an NKey: weft delivers with
// --nats-nkey.
func TestExternalNATSNKeyAuth(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "weft.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startNATS(t, fmt.Sprintf("authorization { users = [ { nkey: %s } ] }", pub))
	c := startControl(t, "--broker", "nats://"+addr, "--nats-nkey", seedFile)
	deliverThrough(t, c, "jobs.nkey")
	// The seed is not in the Hello every sidecar gets: an app cannot use
	// the broker URL alone.
	if nc, err := nats.Connect("nats://"+addr, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("the NKey-only broker accepted a client without credentials")
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TopicPolicy: only orders may publish to orders.created and only notifier
// may subscribe: orders gets 200, batch 403 denied, and a Subscription of
// batch is refused when applied.
func TestTopicPolicy(t *testing.T) {
	c := startControl(t)
	c.apply(`apiVersion: weft.dev/v1alpha1
kind: TopicPolicy
metadata:
  name: orders-created
spec:
  topic: orders.created
  publishers: [orders]
  subscribers: [notifier]
`)
	c.apply(subscription("notifier-orders", "notifier", "orders.created", "/events/orders", ""))
	c.waitSubscription("orders.created", "notifier")
	n := startSub(t, c, "notifier", "notifier-1", nil)
	orders := startPub(t, c, "orders")
	batch := startPub(t, c, "batch")

	if _, err := publishRetrying(orders.outbound, "orders.created", "o-1", "", "order 1", eventually); err != nil {
		t.Fatal(err)
	}
	if !harness.Poll(eventually, func() bool { got, _ := acked(records(t, n.record)); return got["o-1"] > 0 }) {
		t.Fatal("the allowed publisher's message was not delivered to the allowed subscriber")
	}
	code, body, hdr := publishHeaders(batch.outbound, "orders.created", "not mine")
	if code != 403 || hdr != "denied" || !strings.Contains(body, `TopicPolicy/orders-created does not list service \"batch\" among the publishers`) {
		t.Fatalf("batch publishing to orders.created: %d x-weft-error %q %s; want 403 denied naming the policy", code, hdr, body)
	}
	t.Logf("batch publishing: %d %s", code, body)
	// Topics without a policy stay open to every service.
	if r := publish(batch.outbound, "batch.done", "b-1", "", "x", nil); r.code != 200 {
		t.Fatalf("batch publishing to an open topic: %d %s", r.code, r.body)
	}
	if got, _ := acked(records(t, n.record)); len(got) != 1 {
		t.Fatalf("notifier got %d messages; want only o-1", len(got))
	}

	f := filepath.Join(t.TempDir(), "sub.yaml")
	os.WriteFile(f, []byte(subscription("batch-orders", "batch", "orders.created", "/events/orders", "")), 0o644)
	out, err := c.weft("apply", "-f", f)
	want := `service "batch" may not subscribe to topic "orders.created": TopicPolicy/orders-created lists only [notifier] as subscribers`
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("weft apply of batch's subscription: %v\n%s\nwant it refused with %q", err, out, want)
	}
	t.Logf("weft apply: %s", strings.TrimSpace(out))

	// A --subscribe flag of a service the policy leaves out is not served.
	b := startSub(t, c, "batch", "batch-1", []string{"--subscribe", "orders.created=/events/orders"})
	if _, err := publishRetrying(orders.outbound, "orders.created", "o-2", "", "order 2", eventually); err != nil {
		t.Fatal(err)
	}
	if !harness.Poll(eventually, func() bool { got, _ := acked(records(t, n.record)); return got["o-2"] > 0 }) {
		t.Fatal("o-2 not delivered to notifier")
	}
	if !harness.Poll(eventually, func() bool { return strings.Contains(b.p.ReadOutput(), "--subscribe refused") }) {
		t.Fatalf("batch's sidecar did not log the refused --subscribe:\n%s", b.p.Tail(30))
	}
	if rs := records(t, b.record); len(rs) != 0 {
		t.Fatalf("batch got %d deliveries of a topic it may not subscribe to", len(rs))
	}
}

// publishHeaders publishes and returns the status, body and x-weft-error.
func publishHeaders(outbound int, topic, body string) (int, string, string) {
	resp, err := client.Post("http://"+harness.Addr(outbound)+"/v1/publish/"+topic, "text/plain", strings.NewReader(body))
	if err != nil {
		return 0, err.Error(), ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), resp.Header.Get("X-Weft-Error")
}
