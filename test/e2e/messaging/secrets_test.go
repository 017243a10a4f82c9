package messaging

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/store"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// The broker's password reaches sidecars in its own field of the
// Certificate message, never inside a URL: no log line (at debug level),
// admin view (/config, /identity, /stats), API answer or error shows it,
// while the broker is up and after it went away. For the embedded
// broker (--broker-auth, the default) and for an external NATS whose
// --broker URL carries user:password.
func TestBrokerPasswordNeverShown(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		c := startControl(t)
		m := meshOn(t, c, "jobs.embedded")
		c.Stop(20 * time.Second) // the embedded broker goes with it
		m.outage(t)
		b, err := store.OpenBolt(c.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		pw, err := b.GetSecret("broker-password")
		b.Close()
		if err != nil || len(pw) < 16 {
			t.Fatalf("the embedded broker's password from the store: %q, %v", pw, err)
		}
		m.outputs["control plane log"] = c.Proc.ReadOutput()
		m.noSecret(t, string(pw))
	})
	t.Run("external, user:password in --broker", func(t *testing.T) {
		var r [12]byte
		_, _ = rand.Read(r[:])
		pw := "pw-" + hex.EncodeToString(r[:])
		addr, nats := startNATSProc(t, fmt.Sprintf("authorization { users = [ { user: weft, password: %q } ] }", pw))
		c := startControl(t, "--broker", "nats://weft:"+pw+"@"+addr)
		m := meshOn(t, c, "jobs.external")
		nats.Kill()
		m.outage(t)
		m.outputs["control plane log"] = c.Proc.ReadOutput()
		m.noSecret(t, pw)
	})
}

// shownMesh is a subscriber and a publisher on a control plane, and what
// they and the control plane showed.
type shownMesh struct {
	c       *control
	sub     *unit
	pub     *unit
	topic   string
	outputs map[string]string
}

// meshOn delivers one message on topic through a subscriber and a
// publisher (both logging at debug) and collects every view of them.
func meshOn(t *testing.T, c *control, topic string) *shownMesh {
	t.Helper()
	c.apply(subscription("shown-"+strings.ReplaceAll(topic, ".", "-"), "worker", topic, "/events/jobs", ""))
	c.waitSubscription(topic, "worker")
	m := &shownMesh{c: c, topic: topic, outputs: map[string]string{},
		sub: startSub(t, c, "worker", "worker-1", []string{"--log-level", "debug"})}
	m.pub = &unit{name: "scheduler", outbound: harness.FreePort(t), admin: harness.FreePort(t)}
	m.pub.p = harness.Start(t, "sidecar-scheduler", bins.Weft, "sidecar", "--control", c.GRPCAddr, "--service", "scheduler",
		"--outbound", harness.Addr(m.pub.outbound), "--admin", harness.Addr(m.pub.admin), "--otlp-endpoint", "none", "--log-level", "debug")
	harness.WaitUp(t, m.pub.p, "http://"+harness.Addr(m.pub.admin)+"/ready", eventually)
	if _, err := publishRetrying(m.pub.outbound, topic, "s-1", "", "hello", eventually); err != nil {
		t.Fatal(err)
	}
	if !harness.Poll(eventually, func() bool { got, _ := acked(records(t, m.sub.record)); return got["s-1"] > 0 }) {
		t.Fatal("not delivered")
	}
	for _, u := range []*unit{m.sub, m.pub} {
		for _, path := range []string{"/config", "/identity", "/stats"} {
			_, body, err := httpDo("GET", "http://"+harness.Addr(u.admin)+path, nil, nil)
			if err != nil {
				t.Fatalf("%s %s: %v", u.name, path, err)
			}
			m.outputs[u.name+" "+path] = string(body)
		}
	}
	_, body, err := httpDo("GET", c.URL+"/api/v1/topics", nil, nil)
	if err != nil || !strings.Contains(string(body), "redacted@") {
		t.Fatalf("GET /api/v1/topics: %s %v; want the broker URL shown as nats://redacted@…", body, err)
	}
	m.outputs["GET /api/v1/topics"] = string(body)
	out, _ := c.weft("get", "topics")
	m.outputs["weft get topics"] = out
	return m
}

// outage publishes with the broker gone (the answer says it cannot reach
// it) and waits for the sidecars to log the disconnection.
func (m *shownMesh) outage(t *testing.T) {
	t.Helper()
	var r pubResult
	if !harness.Poll(eventually, func() bool { r = publish(m.pub.outbound, m.topic, "s-2", "", "x", nil); return r.code == 503 }) {
		t.Fatalf("publishing with the broker gone: %d %s; want 503", r.code, r.body)
	}
	m.outputs["publish with the broker gone"] = string(r.body)
	for _, u := range []*unit{m.sub, m.pub} {
		if !harness.Poll(eventually, func() bool { return strings.Contains(u.p.ReadOutput(), "disconnected from broker") }) {
			t.Fatalf("%s did not log the broker's going:\n%s", u.name, u.p.Tail(20))
		}
	}
	m.outputs["publisher log"] = m.pub.p.ReadOutput()
	m.outputs["subscriber log"] = m.sub.p.ReadOutput()
}

func (m *shownMesh) noSecret(t *testing.T, secret string) {
	t.Helper()
	for name, out := range m.outputs {
		if out == "" {
			t.Errorf("%s: empty", name)
		}
		if i := strings.Index(out, secret); i >= 0 {
			t.Errorf("%s shows the broker's password: …%s…", name, out[max(0, i-80):min(len(out), i+len(secret)+20)])
		}
	}
	t.Logf("the password appears in none of %d outputs (%d bytes); the publish answer with the broker gone: %s",
		len(m.outputs), func() (n int) {
			for _, o := range m.outputs {
				n += len(o)
			}
			return
		}(), strings.TrimSpace(m.outputs["publish with the broker gone"]))
}
