// Package messaging holds the real-process tests of Weft messaging: real
// `weft` binaries (control plane with the embedded broker, or an external
// Debian nats-server; `weft run` subscriber units; a publishing sidecar) on
// loopback, and msgapp as the subscribing app. Building, ports and
// processes are test/e2e/harness's; publishing and the apps' records are
// this package's.
package messaging

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// eventually bounds waits for things with no stated bound (processes
// starting, reconnecting) on a loaded 2-core machine.
const eventually = 30 * time.Second

// bins are weft and msgapp, built once for the package's tests.
var bins harness.Binaries

func TestMain(m *testing.M) { os.Exit(harness.Main(m, "./test/e2e/messaging/msgapp", &bins)) }

// ---------------------------------------------------------------- control plane

type control struct {
	*harness.Control
	t testing.TB
}

// startControl starts `weft control`, its embedded broker on a port of its
// own, so a restart comes back where sidecars look for it.
func startControl(t testing.TB, extra ...string) *control {
	t.Helper()
	flags := append([]string{"--otlp-endpoint", "none", "--log-level", "debug"}, extra...)
	return &control{Control: harness.StartControl(t, bins.Weft, eventually, flags...), t: t}
}

// weft runs the CLI against this control plane.
func (c *control) weft(args ...string) (string, error) {
	cmd := exec.Command(bins.Weft, append(args, "--server", c.URL)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *control) apply(manifest string) {
	c.t.Helper()
	f := filepath.Join(c.t.TempDir(), "m.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if out, err := c.weft("apply", "-f", f); err != nil {
		c.t.Fatalf("weft apply: %v\n%s", err, out)
	}
}

func subscription(name, service, topic, path string, extra string) string {
	return fmt.Sprintf(`apiVersion: weft.dev/v1alpha1
kind: Subscription
metadata:
  name: %s
spec:
  service: %s
  topic: %s
  path: %s
%s`, name, service, topic, path, extra)
}

type topicsJSON struct {
	Broker    string `json:"broker"`
	Connected bool   `json:"connected"`
	Topics    []struct {
		Name          string `json:"name"`
		Messages      uint64 `json:"messages"`
		DeadLetters   uint64 `json:"deadLetters"`
		Subscriptions []struct {
			Service      string `json:"service"`
			Origin       string `json:"origin"`
			Lag          uint64 `json:"lag"`
			InFlight     int    `json:"inFlight"`
			Delivered    uint64 `json:"delivered"`
			DeadLettered int    `json:"deadLettered"`
		} `json:"subscriptions"`
	} `json:"topics"`
}

func (c *control) topics() (topicsJSON, error) {
	var out topicsJSON
	code, body, err := httpDo("GET", c.URL+"/api/v1/topics", nil, nil)
	if err != nil {
		return out, err
	}
	if code != 200 {
		return out, fmt.Errorf("GET /api/v1/topics: %d %s", code, body)
	}
	return out, json.Unmarshal(body, &out)
}

// subscriptionState returns (exists, lag, inFlight) of service's
// subscription to topic.
func (c *control) subscriptionState(topic, service string) (bool, uint64, int) {
	ts, err := c.topics()
	if err != nil {
		return false, 0, 0
	}
	for _, t := range ts.Topics {
		if t.Name != topic {
			continue
		}
		for _, s := range t.Subscriptions {
			if s.Service == service {
				return true, s.Lag, s.InFlight
			}
		}
	}
	return false, 0, 0
}

func (c *control) waitSubscription(topic, service string) {
	c.t.Helper()
	if !harness.Poll(eventually, func() bool { ok, _, _ := c.subscriptionState(topic, service); return ok }) {
		ts, err := c.topics()
		c.t.Fatalf("subscription of %s to %s never appeared: %+v %v", service, topic, ts, err)
	}
}

// ---------------------------------------------------------------- sidecars

type unit struct {
	name     string
	record   string
	outbound int
	admin    int
	p        *harness.Proc
}

// startSub starts `weft run` with msgapp as the app of service, recording
// deliveries into its own file, and waits until it is ready.
func startSub(t testing.TB, c *control, service, name string, weftFlags []string, appFlags ...string) *unit {
	t.Helper()
	u := &unit{name: name, record: filepath.Join(t.TempDir(), name+".jsonl"), outbound: harness.FreePort(t), admin: harness.FreePort(t)}
	args := []string{"run", "--control", c.GRPCAddr, "--service", service, "--id", name,
		"--app-port", strconv.Itoa(harness.FreePort(t)), "--inbound", harness.FreeAddr(t),
		"--outbound", harness.Addr(u.outbound), "--admin", harness.Addr(u.admin), "--otlp-endpoint", "none", "--drain", "3s"}
	args = append(args, weftFlags...)
	args = append(args, "--", bins.App, "--record", u.record, "--name", name)
	args = append(args, appFlags...)
	u.p = harness.Start(t, "run-"+name, bins.Weft, args...)
	harness.WaitUp(t, u.p, "http://"+harness.Addr(u.admin)+"/ready", eventually)
	return u
}

// startPub starts a pure client sidecar (no app): the publisher's way in.
func startPub(t testing.TB, c *control, service string) *unit {
	t.Helper()
	u := &unit{name: service, outbound: harness.FreePort(t), admin: harness.FreePort(t)}
	u.p = harness.Start(t, "sidecar-"+service, bins.Weft, "sidecar", "--control", c.GRPCAddr, "--service", service,
		"--outbound", harness.Addr(u.outbound), "--admin", harness.Addr(u.admin), "--otlp-endpoint", "none")
	harness.WaitUp(t, u.p, "http://"+harness.Addr(u.admin)+"/ready", eventually)
	return u
}

func (u *unit) metrics() string {
	_, body, _ := httpDo("GET", "http://"+harness.Addr(u.admin)+"/metrics", nil, nil)
	return string(body)
}

// ---------------------------------------------------------------- HTTP

// The control plane's API gets the local token, as the CLI sends it.
var client = &http.Client{Timeout: 30 * time.Second, Transport: harness.Authorized(&http.Transport{MaxIdleConnsPerHost: 64, Proxy: nil})}

func httpDo(method, url string, body []byte, h http.Header) (int, []byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

type pubResult struct {
	code  int
	error string
	body  []byte
}

// publish POSTs one message to a sidecar's publish endpoint.
func publish(outbound int, topic, id, key, body string, h http.Header) pubResult {
	if h == nil {
		h = http.Header{}
	}
	if id != "" {
		h.Set("X-Weft-Message-Id", id)
	}
	if key != "" {
		h.Set("X-Weft-Key", key)
	}
	code, b, err := httpDo("POST", "http://"+harness.Addr(outbound)+"/v1/publish/"+topic, []byte(body), h)
	if err != nil {
		return pubResult{error: err.Error()}
	}
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return pubResult{code: code, error: e.Error, body: b}
}

// publishRetrying publishes until the sidecar answers 200 (the same id
// each time, so a publish whose answer was lost is stored once), bounded
// by d. It returns how many tries failed.
func publishRetrying(outbound int, topic, id, key, body string, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	failed := 0
	for {
		r := publish(outbound, topic, id, key, body, nil)
		if r.code == 200 {
			return failed, nil
		}
		failed++
		if time.Now().After(deadline) {
			return failed, fmt.Errorf("publish %s: %d %s %s", id, r.code, r.error, r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- records

type record struct {
	ID      string `json:"id"`
	Key     string `json:"key"`
	Attempt int    `json:"attempt"`
	Body    string `json:"body"`
	Inst    string `json:"inst"`
	Overlap bool   `json:"overlap"`
	Trace   string `json:"traceparent"`
	Start   int64  `json:"start"`
	At      int64  `json:"at"`
	Path    string `json:"path"`
	Answer  string `json:"answer"`
	Batch   int    `json:"batch"` // lines of the batched callback it came in (0: a single one)
}

// records reads every delivery recorded in files, in file order.
func records(t testing.TB, files ...string) []record {
	t.Helper()
	var out []record
	for _, f := range files {
		fh, err := os.Open(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r record
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				out = append(out, r)
			}
		}
		fh.Close()
	}
	return out
}

// acked returns the ids acked at least once and how many acks were
// duplicates.
func acked(rs []record) (map[string]int, int) {
	ids := map[string]int{}
	dups := 0
	for _, r := range rs {
		if r.Answer != "ack" {
			continue
		}
		if ids[r.ID] > 0 {
			dups++
		}
		ids[r.ID]++
	}
	return ids, dups
}

// stream is publishStream's publishing in progress.
type stream struct {
	t                  testing.TB
	published, retries atomic.Int64
	wg                 sync.WaitGroup
	errs               chan error
}

// publishStream publishes total messages at about 1,000/s from 8
// publishers, each retried (same id) until stored: ids m-00000…, body the
// index, and every even one keyed with key(i).
func publishStream(t testing.TB, outbound int, topic string, total int, key func(int) string) *stream {
	s := &stream{t: t, errs: make(chan error, 8)}
	ids := make(chan int, total)
	for i := range total {
		ids <- i
	}
	close(ids)
	tick := time.NewTicker(time.Millisecond)
	t.Cleanup(tick.Stop)
	for range 8 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for i := range ids {
				<-tick.C
				k := ""
				if i%2 == 0 {
					k = key(i)
				}
				failed, err := publishRetrying(outbound, topic, fmt.Sprintf("m-%05d", i), k, strconv.Itoa(i), 60*time.Second)
				s.retries.Add(int64(failed))
				if err != nil {
					s.errs <- err
					return
				}
				s.published.Add(1)
			}
		}()
	}
	return s
}

// waitPublished waits until n are published.
func (s *stream) waitPublished(n int64) {
	s.t.Helper()
	if !harness.Poll(60*time.Second, func() bool { return s.published.Load() >= n }) {
		s.t.Fatalf("only %d of %d published", s.published.Load(), n)
	}
}

// wait waits until every message is published, failing on an error.
func (s *stream) wait() {
	s.t.Helper()
	s.wg.Wait()
	close(s.errs)
	for err := range s.errs {
		s.t.Fatal(err)
	}
}
