package messaging

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// 10,000 messages published at about 1,000/s while one subscriber
// instance is killed -9 and replaced, and the control plane (with the
// embedded broker) is restarted, once gracefully and once by kill -9:
// every message the publishing sidecar answered 200 for is acked at least
// once. Half carry a key, so partition leases and their handover (the
// killed instance's leases run out) are under the same test.
func TestDurableThroughKillAndRestart(t *testing.T) {
	const total = 10000
	c := startControl(t)
	c.apply(subscription("sink-stream", "sink", "stream.test", "/events/in", "  concurrency: 4\n"))
	c.waitSubscription("stream.test", "sink")
	subs := []*unit{
		startSub(t, c, "sink", "sink-1", nil),
		startSub(t, c, "sink", "sink-2", nil),
	}
	pub := startPub(t, c, "source")

	started := time.Now()
	// Half keyless (one shared consumer), half keyed (partitions).
	st := publishStream(t, pub.outbound, "stream.test", total, func(i int) string { return fmt.Sprintf("k%02d", i%50) })
	st.waitPublished(3000)
	t.Logf("kill -9 of sink-1 after %d published", st.published.Load())
	subs[0].p.Kill()
	subs = append(subs, startSub(t, c, "sink", "sink-1b", nil))
	st.waitPublished(5000)
	t.Logf("restarting the control plane and its broker (SIGTERM) after %d published", st.published.Load())
	c.Stop(20 * time.Second)
	c.Restart()
	st.waitPublished(7500)
	t.Logf("kill -9 of the control plane and its broker after %d published; starting it again", st.published.Load())
	c.Kill()
	c.Restart()
	st.wait()
	t.Logf("published %d in %s; %d publishes answered non-2xx and were retried (same id)", total, time.Since(started).Round(time.Millisecond), st.retries.Load())

	files := []string{subs[0].record, subs[1].record, subs[2].record}
	var got map[string]int
	var dups int
	if !harness.Poll(90*time.Second, func() bool {
		got, dups = acked(records(t, files...))
		return len(got) == total
	}) {
		var missing []string
		for i := range total {
			if id := fmt.Sprintf("m-%05d", i); got[id] == 0 && len(missing) < 20 {
				missing = append(missing, id)
			}
		}
		t.Fatalf("%d of %d messages acked; first missing: %v", len(got), total, missing)
	}
	per := map[string]int{}
	for _, r := range records(t, files...) {
		per[r.Inst]++
	}
	t.Logf("every one of %d messages acked; %d duplicate deliveries (at-least-once: redelivered after the kill or the restart); deliveries per instance: %v", total, dups, per)
	// Nothing left behind: no lag, nothing in flight.
	if !harness.Poll(eventually, func() bool {
		ok, lag, inFlight := c.subscriptionState("stream.test", "sink")
		return ok && lag == 0 && inFlight == 0
	}) {
		ts, _ := c.topics()
		t.Fatalf("subscription not drained: %+v", ts)
	}
}

// Per-key order holds across 100 keys with concurrency 8, even with the app
// asking for retries: messages with one key are delivered one at a time, in
// publish order.
func TestPerKeyOrder(t *testing.T) {
	const keys, per = 100, 20
	c := startControl(t)
	c.apply(subscription("ledger", "ledger", "account.changed", "/events/changed",
		"  concurrency: 8\n  backoff: {initial: 20ms, max: 100ms}\n"))
	c.waitSubscription("account.changed", "ledger")
	sub := startSub(t, c, "ledger", "ledger-1", nil, "--retry-first-every", "13")
	pub := startPub(t, c, "accounts")

	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range per {
				for k := g * 10; k < g*10+10; k++ {
					id := fmt.Sprintf("k%03d-%02d", k, n)
					if _, err := publishRetrying(pub.outbound, "account.changed", id, fmt.Sprintf("acct-%03d", k), strconv.Itoa(n), 10*time.Second); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !harness.Poll(60*time.Second, func() bool { got, _ := acked(records(t, sub.record)); return len(got) == keys*per }) {
		got, _ := acked(records(t, sub.record))
		t.Fatalf("%d of %d acked", len(got), keys*per)
	}
	rs := records(t, sub.record)
	last := map[string]int{}
	retried := 0
	for _, r := range rs {
		n, _ := strconv.Atoi(r.Body)
		if r.Overlap {
			t.Errorf("key %s: message %d delivered while another of the key was in delivery", r.Key, n)
		}
		if prev, ok := last[r.Key]; ok && n < prev {
			t.Errorf("key %s: message %d delivered after %d", r.Key, n, prev)
		}
		last[r.Key] = n
		if r.Answer == "retry" {
			retried++
		}
	}
	if retried == 0 {
		t.Fatal("the app asked for no retries; the test proves less than it claims")
	}
	t.Logf("%d deliveries for %d messages over %d keys, %d retried in place, order kept", len(rs), keys*per, keys, retried)
}

// A message the app keeps refusing is dead-lettered after exactly
// maxDeliveries attempts (keyed: retried in place; keyless: through the
// broker); DEADLETTER and a 404 (no handler at the path) go at once. The
// CLI lists them; after the path is fixed, replay delivers them.
func TestDeadLetters(t *testing.T) {
	c := startControl(t)
	backoff := "  maxDeliveries: 3\n  backoff: {initial: 100ms, max: 200ms}\n"
	c.apply(subscription("poison", "checker", "poison", "/events/poison", backoff) + "---\n" +
		subscription("misrouted", "checker", "misrouted", "/nope", ""))
	c.waitSubscription("poison", "checker")
	c.waitSubscription("misrouted", "checker")
	sub := startSub(t, c, "checker", "checker-1", nil)
	pub := startPub(t, c, "producer")

	cases := []struct {
		id, key, body, topic string
		attempts             int
		reason               string
	}{
		{"retry-keyless", "", "retry", "poison", 3, "RETRY"},
		{"fail-keyed", "k1", "fail", "poison", 3, "500"},
		{"dead-verb", "k2", "dead", "poison", 1, "DEADLETTER"},
		{"lost", "", "hello", "misrouted", 1, "404"},
	}
	for _, cs := range cases {
		if r := publish(pub.outbound, cs.topic, cs.id, cs.key, cs.body, nil); r.code != 200 {
			t.Fatalf("publish %s: %d %s", cs.id, r.code, r.body)
		}
	}
	// The message after the poison one with its key is delivered once the
	// poison one is dead-lettered.
	publish(pub.outbound, "poison", "after-fail", "k1", "ok", nil)

	type dl struct {
		ID         string `json:"id"`
		Subscriber string `json:"subscriber"`
		Attempts   int    `json:"attempts"`
		Reason     string `json:"reason"`
		Payload    string `json:"payload"`
		Topic      string `json:"topic"`
	}
	list := func(topic string) []dl {
		out, err := c.weft("dlq", "list", topic, "-o", "json")
		if err != nil {
			t.Fatalf("weft dlq list: %v\n%s", err, out)
		}
		var res struct {
			Messages []dl `json:"messages"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return res.Messages
	}
	var got map[string]dl
	if !harness.Poll(eventually, func() bool {
		got = map[string]dl{}
		for _, topic := range []string{"poison", "misrouted"} {
			for _, m := range list(topic) {
				got[m.ID] = m
			}
		}
		return len(got) == len(cases)
	}) {
		t.Fatalf("dead letters: %+v", got)
	}
	attempts := map[string][]int{}
	for _, r := range records(t, sub.record) {
		attempts[r.ID] = append(attempts[r.ID], r.Attempt)
	}
	for _, cs := range cases {
		m := got[cs.id]
		want := make([]int, cs.attempts)
		for i := range want {
			want[i] = i + 1
		}
		if fmt.Sprint(attempts[cs.id]) != fmt.Sprint(want) {
			t.Errorf("%s: the app saw attempts %v, want %v", cs.id, attempts[cs.id], want)
		}
		if m.Attempts != cs.attempts || !strings.Contains(m.Reason, cs.reason) || m.Subscriber != "checker" || m.Payload != cs.body || m.Topic != cs.topic {
			t.Errorf("%s: dead letter %+v, want %d attempts and a reason with %q", cs.id, m, cs.attempts, cs.reason)
		}
	}
	if !harness.Poll(eventually, func() bool { return len(attempts2(t, sub, "after-fail")) == 1 }) {
		t.Errorf("the message after the poison one with its key was not delivered")
	}
	table, err := c.weft("dlq", "list", "poison")
	if err != nil || !strings.Contains(table, "3 dead letters in poison.dlq") || !strings.Contains(table, "fail-keyed") {
		t.Errorf("weft dlq list table:\n%s", table)
	}
	topics, err := c.weft("topics")
	if err != nil || !regexp.MustCompile(`poison\s+\d+\s+[\d.]+\s+3\s+checker`).MatchString(topics) {
		t.Errorf("weft topics:\n%s", topics)
	}

	// Fix the path, replay: the misrouted message arrives, the DLQ empties.
	c.apply(subscription("misrouted", "checker", "misrouted", "/events/fixed", ""))
	time.Sleep(time.Second) // the new spec reaches the sidecar
	out, err := c.weft("dlq", "replay", "misrouted")
	if err != nil || !strings.Contains(out, "replayed 1 dead letters") {
		t.Fatalf("weft dlq replay: %v\n%s", err, out)
	}
	if !harness.Poll(eventually, func() bool {
		for _, r := range records(t, sub.record) {
			if r.ID == "lost" && r.Path == "/events/fixed" && r.Answer == "ack" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the replayed message was not delivered to the fixed path")
	}
	if n := len(list("misrouted")); n != 0 {
		t.Errorf("%d dead letters left after replay", n)
	}
}

func attempts2(t *testing.T, u *unit, id string) []record {
	var out []record
	for _, r := range records(t, u.record) {
		if r.ID == id {
			out = append(out, r)
		}
	}
	return out
}

// Instances of one service share a subscription (each message to one of
// them); services each get every message; a slow subscriber slows nobody
// else; the trace context crosses the queue; the metrics count it all.
func TestQueueGroupFanOutAndSlowSubscriber(t *testing.T) {
	const total = 600
	c := startControl(t)
	sub := []string{"--subscribe", "fan=/events/fan"}
	a1 := startSub(t, c, "alpha", "alpha-1", sub)
	a2 := startSub(t, c, "alpha", "alpha-2", sub)
	b := startSub(t, c, "beta", "beta-1", sub)
	slow := startSub(t, c, "gamma", "gamma-1", sub, "--delay", "200ms")
	for _, s := range []string{"alpha", "beta", "gamma"} {
		c.waitSubscription("fan", s)
	}
	pub := startPub(t, c, "fanout")
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < total; i += 6 {
				h := http.Header{}
				h.Set("Traceparent", fmt.Sprintf("00-%s-%016x-01", traceID, i+1))
				if r := publish(pub.outbound, "fan", fmt.Sprintf("f-%03d", i), "", strconv.Itoa(i), h); r.code != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	publishTook := time.Since(start)
	if failed.Load() > 0 {
		t.Fatalf("%d publishes failed", failed.Load())
	}
	var slowAtBetaDone int
	if !harness.Poll(60*time.Second, func() bool {
		got, _ := acked(records(t, b.record))
		if len(got) == total {
			s, _ := acked(records(t, slow.record))
			slowAtBetaDone = len(s)
			return true
		}
		return false
	}) {
		got, _ := acked(records(t, b.record))
		t.Fatalf("beta acked %d of %d", len(got), total)
	}
	betaTook := time.Since(start)
	if slowAtBetaDone > total/3 {
		t.Errorf("gamma (200ms a message) had %d of %d when beta had all: it is not slower, the test proves nothing", slowAtBetaDone, total)
	}
	t.Logf("publishing %d took %s; beta had all after %s, when slow gamma had %d", total, publishTook.Round(time.Millisecond), betaTook.Round(time.Millisecond), slowAtBetaDone)

	if !harness.Poll(60*time.Second, func() bool { got, _ := acked(records(t, a1.record, a2.record)); return len(got) == total }) {
		got, _ := acked(records(t, a1.record, a2.record))
		t.Fatalf("alpha's instances acked %d of %d", len(got), total)
	}
	n1, _ := acked(records(t, a1.record))
	n2, _ := acked(records(t, a2.record))
	if len(n1) < total/10 || len(n2) < total/10 {
		t.Errorf("alpha's instances got %d and %d: not shared", len(n1), len(n2))
	}
	both := 0
	for id := range n1 {
		if n2[id] > 0 {
			both++
		}
	}
	t.Logf("alpha-1 %d, alpha-2 %d, delivered to both: %d", len(n1), len(n2), both)
	if both > total/20 {
		t.Errorf("%d messages went to both alpha instances: a shared subscription delivers each once", both)
	}

	// The trace continues across the queue.
	for _, r := range records(t, b.record)[:10] {
		if !strings.Contains(r.Trace, traceID) {
			t.Errorf("delivery of %s carries traceparent %q, not the publisher's trace %s", r.ID, r.Trace, traceID)
		}
	}
	// Metrics.
	if m := pub.metrics(); !regexp.MustCompile(`weft_messages_published_total\{topic="fan"\} 600\b`).MatchString(m) {
		t.Errorf("publisher /metrics lacks weft_messages_published_total 600:\n%s", grepLines(m, "weft_message"))
	}
	mb := b.metrics()
	for _, re := range []string{
		`weft_messages_delivered_total\{result="ack",topic="fan"\} 600\b`,
		`weft_message_delivery_latency_seconds_count\{topic="fan"\} 600\b`,
		`weft_message_consumer_lag\{topic="fan"\} \d+`,
	} {
		if !regexp.MustCompile(re).MatchString(mb) {
			t.Errorf("beta /metrics lacks %s:\n%s", re, grepLines(mb, "weft_message"))
		}
	}
	ok, lag, _ := c.subscriptionState("fan", "gamma")
	if !ok || lag == 0 {
		t.Logf("gamma lag %d (it may have caught up already)", lag)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The mesh pointed at an external NATS server (the Debian package) instead
// of the embedded broker.
func TestExternalNATS(t *testing.T) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nats-server"); serr == nil {
			bin = "/usr/sbin/nats-server"
		} else if os.Getenv("CI") == "" {
			t.Skip("nats-server not installed (make deps installs it); skipping outside CI")
		} else {
			t.Fatal("nats-server not installed in CI: scripts/deps.sh should have installed it")
		}
	}
	port := harness.FreePort(t)
	nats := harness.Start(t, "nats-server", bin, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", t.TempDir())
	url := "nats://" + harness.Addr(port)
	harness.WaitListening(t, nats, harness.Addr(port), eventually)
	c := startControl(t, "--broker", url)
	c.apply(subscription("ext", "worker", "jobs.new", "/events/jobs", "  concurrency: 2\n  maxDeliveries: 2\n  backoff: {initial: 50ms}\n"))
	c.waitSubscription("jobs.new", "worker")
	// Two instances share the partitions; the second stops halfway, so
	// its partitions are handed over the way an older broker allows (no
	// consumer reset API in 2.9: the consumer is made again from its ack
	// floor), and per-key order must hold through it.
	w := startSub(t, c, "worker", "worker-1", nil, "--delay", "2ms")
	w2 := startSub(t, c, "worker", "worker-2", nil, "--delay", "2ms")
	pub := startPub(t, c, "scheduler")
	const total, keys = 300, 20
	pace := time.NewTicker(15 * time.Millisecond) // the handover happens mid-stream
	defer pace.Stop()
	for i := range total {
		<-pace.C
		if i == total/2 {
			w2.p.Stop(20 * time.Second)
		}
		if _, err := publishRetrying(pub.outbound, "jobs.new", fmt.Sprintf("j-%03d", i), fmt.Sprintf("k%d", i%keys), strconv.Itoa(i/keys), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	publish(pub.outbound, "jobs.new", "j-dead", "", "dead", nil)
	if !harness.Poll(eventually, func() bool { got, _ := acked(records(t, w.record, w2.record)); return len(got) == total }) {
		got, _ := acked(records(t, w.record, w2.record))
		t.Fatalf("%d of %d acked through %s", len(got), total, url)
	}
	var keyed []record
	for _, r := range records(t, w.record, w2.record) {
		if r.Key != "" {
			keyed = append(keyed, r)
		}
	}
	dups, perInst := checkKeyOrder(t, keyed)
	t.Logf("through %s: %d keyed deliveries for %d messages (%d again after the handover or a retry), per instance %v", url, len(keyed), total, dups, perInst)
	if perInst["worker-2"] == 0 {
		t.Errorf("worker-2 delivered nothing before it stopped: no partition was handed over, the test proves less than it claims")
	}
	ts, err := c.topics()
	if err != nil || ts.Broker != url || !ts.Connected {
		t.Fatalf("topics: %+v %v", ts, err)
	}
	if !harness.Poll(eventually, func() bool {
		out, err := c.weft("dlq", "list", "jobs.new")
		return err == nil && strings.Contains(out, "j-dead")
	}) {
		out, _ := c.weft("dlq", "list", "jobs.new")
		t.Fatalf("dead letter not listed:\n%s", out)
	}
	out, _ := c.weft("topics")
	t.Logf("weft topics against %s (nats-server %s):\n%s", url, natsVersion(bin), out)
}

func natsVersion(bin string) string {
	out, _ := exec.Command(bin, "--version").CombinedOutput()
	return strings.TrimSpace(string(out))
}

// Bad input gets a clear, specific error, never a hang or a 500.
func TestBadInput(t *testing.T) {
	c := startControl(t, "--max-message-bytes", "1024")
	pub := startPub(t, c, "client")
	tests := []struct {
		name, method, path string
		body               string
		code               int
		errCode            string
	}{
		{"fits", "POST", "/v1/publish/ok.topic", strings.Repeat("x", 1024), 200, ""},
		{"too large", "POST", "/v1/publish/ok.topic", strings.Repeat("x", 1025), 413, "message_too_large"},
		{"empty token", "POST", "/v1/publish/a..b", "x", 400, "invalid_topic"},
		{"wildcard", "POST", "/v1/publish/a.*", "x", 400, "invalid_topic"},
		{"full wildcard", "POST", "/v1/publish/>", "x", 400, "invalid_topic"},
		{"space", "POST", "/v1/publish/a%20b", "x", 400, "invalid_topic"},
		{"empty topic", "POST", "/v1/publish/", "x", 400, "invalid_topic"},
		{"too long", "POST", "/v1/publish/" + strings.Repeat("t", 300), "x", 400, "invalid_topic"},
		{"GET", "GET", "/v1/publish/ok", "", 405, "method_not_allowed"},
		{"other path", "POST", "/v2/send/ok", "x", 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, err := httpDo(tt.method, "http://"+harness.Addr(pub.outbound)+tt.path, []byte(tt.body), nil)
			if err != nil {
				t.Fatal(err)
			}
			var e struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal(body, &e)
			if code != tt.code || e.Error != tt.errCode {
				t.Fatalf("%s %s: %d %s, want %d %s", tt.method, tt.path, code, body, tt.code, tt.errCode)
			}
		})
	}
	// A key too long, headers too many.
	h := http.Header{"X-Weft-Key": {strings.Repeat("k", 300)}}
	if r := publish(pub.outbound, "ok", "", "", "x", h); r.code != 400 {
		t.Errorf("300-byte key: %d %s", r.code, r.body)
	}
	// The CLI refuses bad resources and flags before anything runs.
	f := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(f, []byte(subscription("bad", "svc", "a.>", "/x", "")), 0o644)
	if out, err := c.weft("apply", "-f", f); err == nil || !strings.Contains(out, "not a valid topic") {
		t.Errorf("apply of a subscription to a wildcard: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"run", "--service", "s", "--subscribe", "a..b=/x", "--", "true"},
		{"run", "--service", "s", "--subscribe", "topic", "--", "true"},
		{"run", "--service", "s", "--subscribe", "t=relative", "--", "true"},
		{"sidecar", "--service", "s", "--subscribe", "t=/x"},
		{"publish", "a b", "x"},
	} {
		out, err := exec.Command(bins.Weft, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "weft: ") {
			t.Errorf("weft %v: %v\n%s", args, err, out)
		} else {
			t.Logf("weft %s → %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
		}
	}

	// Broker unreachable: a clear 503 within the publish timeout, and
	// `weft topics` says why.
	dead := startControl(t, "--broker", "nats://"+harness.FreeAddr(t))
	lonely := startPub(t, dead, "client")
	begin := time.Now()
	r := publish(lonely.outbound, "ok", "", "", "x", nil)
	if r.code != 503 || r.error != "broker_unavailable" || time.Since(begin) > 10*time.Second {
		t.Errorf("publish with the broker down: %d %s after %s", r.code, r.body, time.Since(begin))
	} else {
		t.Logf("publish with the broker down: %d %s (after %s)", r.code, r.body, time.Since(begin).Round(time.Millisecond))
	}
	if out, err := dead.weft("topics"); err == nil || !strings.Contains(out, "broker unavailable") {
		t.Errorf("weft topics with the broker down: %v\n%s", err, out)
	}
}
