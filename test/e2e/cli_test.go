package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// badExit checks the rule for bad input: non-zero exit and exactly
// one line on stderr that contains one of the words (case-insensitive).
func badExit(t *testing.T, r CLIResult, words ...string) {
	t.Helper()
	if r.Code == 0 {
		t.Errorf("want a non-zero exit:\n%s", r)
	}
	if !oneLine(r.Stderr) {
		t.Errorf("want a one-line error on stderr, got %d lines:\n%s", strings.Count(strings.TrimRight(r.Stderr, "\n"), "\n")+1, r)
	}
	low := strings.ToLower(r.Stderr)
	for _, w := range words {
		if strings.Contains(low, strings.ToLower(w)) {
			return
		}
	}
	t.Errorf("stderr names none of %q:\n%s", words, r)
}

// resourceState is the resources as a comparable string.
func resourceState(t *testing.T, cp *Control) string {
	t.Helper()
	items := cp.MustResources()
	b, _ := json.Marshal(items)
	return string(b)
}

// TestBadInput: every bad input the issue lists fails with a non-zero exit
// and a one-line error, and applies nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	applyPolicy(t, cp, "existing", "round_robin", "")
	before := resourceState(t, cp)
	if !strings.Contains(before, "existing") {
		t.Fatalf("setup: the valid policy is not listed: %s", before)
	}

	good := policyYAML("fresh", "fresh", "random", "")
	applyCases := []struct {
		name     string
		manifest string
		words    []string // stderr must contain one of these
		all      []string // …and all of these
	}{
		{"unknown_algorithm", policyYAML("fresh", "fresh", "fastest_please", ""), []string{"algorithm"}, []string{"round_robin", "least_request"}},
		{"modulo_without_hashKey", policyYAML("fresh", "fresh", "modulo", ""), []string{"hashKey"}, nil},
		{"consistent_hash_without_hashKey", policyYAML("fresh", "fresh", "consistent_hash", ""), []string{"hashKey"}, nil},
		{"malformed_yaml", "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata:\n  name: [fresh\nspec: {service: fresh\n", []string{"yaml", "parse", "syntax", "line", "malformed", "invalid"}, nil},
		{"unknown_kind", strings.Replace(good, "kind: TrafficPolicy", "kind: TrafficPolice", 1), []string{"kind", "TrafficPolice"}, nil},
		{"multi_document_one_bad", policyYAML("existing", "existing", "random", "") + "---\n" + good + "---\n" + policyYAML("other", "other", "nope", ""),
			[]string{"algorithm", "nope"}, nil},
	}
	for _, tc := range applyCases {
		t.Run("apply/"+tc.name, func(t *testing.T) {
			f := writeFile(t, "bad.yaml", tc.manifest)
			r := weft(t, 30*time.Second, nil, "apply", "-f", f, "--server", cp.URL)
			badExit(t, r, tc.words...)
			for _, w := range tc.all {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, r)
				}
			}
			if after := resourceState(t, cp); after != before {
				t.Errorf("a rejected apply changed the resources:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	t.Run("apply/control_plane_unreachable", func(t *testing.T) {
		f := writeFile(t, "good.yaml", good)
		dead := "http://" + addr(freePort(t))
		r := weft(t, 60*time.Second, nil, "apply", "-f", f, "--server", dead)
		badExit(t, r, "unreachable", "connect", "refused", "control plane")
		r = weft(t, 60*time.Second, []string{"WEFT_SERVER=" + dead}, "apply", "-f", f)
		badExit(t, r, "unreachable", "connect", "refused", "control plane")
	})

	t.Run("delete/malformed_yaml", func(t *testing.T) {
		f := writeFile(t, "bad.yaml", "kind: [\n")
		r := weft(t, 30*time.Second, nil, "delete", "-f", f, "--server", cp.URL)
		if r.Code == 0 {
			t.Errorf("delete of a malformed file: want non-zero exit:\n%s", r)
		}
		if after := resourceState(t, cp); after != before {
			t.Errorf("a rejected delete changed the resources:\nbefore %s\nafter  %s", before, after)
		}
	})

	// Ports already in use: hold a listener, point each listen flag at it.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy := held.Addr().String()
	dataDir := func() string { return filepath.Join(t.TempDir(), "data") }
	listenCases := []struct {
		name string
		args func() []string
	}{
		{"control/--grpc-addr", func() []string {
			return []string{"control", "--grpc-addr", busy, "--http-addr", addr(freePort(t)), "--data-dir", dataDir()}
		}},
		{"control/--http-addr", func() []string {
			return []string{"control", "--grpc-addr", addr(freePort(t)), "--http-addr", busy, "--data-dir", dataDir()}
		}},
		{"sidecar/--outbound", func() []string {
			return []string{"sidecar", "--control", cp.GRPCAddr, "--service", "busy", "--outbound", busy, "--admin", addr(freePort(t))}
		}},
		{"sidecar/--admin", func() []string {
			return []string{"sidecar", "--control", cp.GRPCAddr, "--service", "busy", "--outbound", addr(freePort(t)), "--admin", busy}
		}},
		{"sidecar/--inbound", func() []string {
			return []string{"sidecar", "--control", cp.GRPCAddr, "--service", "busy", "--app-port", strconv.Itoa(freePort(t)),
				"--inbound", busy, "--outbound", addr(freePort(t)), "--admin", addr(freePort(t))}
		}},
		{"run/--outbound", func() []string {
			return []string{"run", "--control", cp.GRPCAddr, "--service", "busy", "--app-port", strconv.Itoa(freePort(t)),
				"--inbound", addr(freePort(t)), "--outbound", busy, "--admin", addr(freePort(t)), "--", bins.App}
		}},
	}
	for _, flag := range harness.ControlListenFlags(bins.Weft) {
		listenCases = append(listenCases, struct {
			name string
			args func() []string
		}{"control/" + flag, func() []string {
			return []string{"control", "--grpc-addr", addr(freePort(t)), "--http-addr", addr(freePort(t)), "--data-dir", dataDir(), flag, busy}
		}})
	}
	for _, tc := range listenCases {
		t.Run("port_in_use/"+tc.name, func(t *testing.T) {
			r := weft(t, 30*time.Second, nil, tc.args()...)
			badExit(t, r, "in use")
			if flag := tc.name[strings.Index(tc.name, "/")+1:]; !strings.Contains(r.Stderr, busy) && !strings.Contains(r.Stderr, flag) {
				t.Errorf("stderr names neither the address %s nor the flag %s:\n%s", busy, flag, r)
			}
		})
	}
	if m, err := cp.Services(); err != nil || len(m["busy"]) != 0 {
		t.Errorf("a sidecar that failed to bind left an instance behind: %+v (err %v)", m["busy"], err)
	}

	t.Run("run/nonexistent_command", func(t *testing.T) {
		args := []string{"run", "--control", cp.GRPCAddr, "--service", "ghost", "--app-port", strconv.Itoa(freePort(t)),
			"--inbound", addr(freePort(t)), "--outbound", addr(freePort(t)), "--admin", addr(freePort(t)),
			"--", "weft-e2e-no-such-command", "--flag"}
		r := weft(t, 30*time.Second, nil, args...)
		badExit(t, r, "weft-e2e-no-such-command", "not found", "no such file")
		if m, err := cp.Services(); err != nil || len(m["ghost"]) != 0 {
			t.Errorf("weft run with a nonexistent command registered an instance: %+v (err %v)", m["ghost"], err)
		}
	})

	if after := resourceState(t, cp); after != before {
		t.Errorf("bad input changed the resources:\nbefore %s\nafter  %s", before, after)
	}
}

// TestResourceAPIAndCLI: apply/get/delete through the CLI and the JSON API.
func TestResourceAPIAndCLI(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	f := writeFile(t, "orders.yaml", "# the issue's example\n"+policyYAML("orders", "orders", "consistent_hash", "header:x-user-id"))

	r := weft(t, 30*time.Second, []string{"WEFT_SERVER=" + cp.URL}, "apply", "-f", f)
	if r.Code != 0 {
		t.Fatalf("apply:\n%s", r)
	}
	// Applying the same file again is fine.
	if r := weft(t, 30*time.Second, nil, "apply", "-f", f, "--server", cp.URL); r.Code != 0 {
		t.Errorf("second apply of the same file:\n%s", r)
	}

	code, body, err := httpGet(cp.URL + "/api/v1/resources/TrafficPolicy/orders")
	var obj ObjectJSON
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &obj) != nil {
		t.Fatalf("GET /api/v1/resources/TrafficPolicy/orders: %d %v %q", code, err, body)
	}
	if obj.Kind != "TrafficPolicy" || obj.Metadata.Name != "orders" || obj.APIVersion != "weft.dev/v1alpha1" || algorithmOf(obj.Spec) != "consistent_hash" {
		t.Errorf("stored object: %s", body)
	}
	if items := cp.MustResources(); len(items) != 1 {
		t.Errorf("GET /api/v1/resources: want 1 item, got %+v", items)
	}

	t.Run("get", func(t *testing.T) {
		env := []string{"WEFT_SERVER=" + cp.URL}
		s := StartRun(t, cp, RunOpts{Service: "orders"})
		for _, args := range [][]string{{"get", "resources"}, {"get", "services"}} {
			r := weft(t, 30*time.Second, env, args...)
			if r.Code != 0 || !strings.Contains(r.Stdout, "orders") {
				t.Errorf("want exit 0 and \"orders\" in the output:\n%s", r)
			}
			r = weft(t, 30*time.Second, env, append(args, "-o", "json")...)
			if r.Code != 0 || !json.Valid([]byte(r.Stdout)) || !strings.Contains(r.Stdout, "orders") {
				t.Errorf("want exit 0 and JSON naming orders:\n%s", r)
			}
			if args[1] == "services" && !strings.Contains(r.Stdout, strconv.Itoa(s.Inbound)) {
				t.Errorf("get services -o json does not show the instance's address %s:\n%s", s.InboundAddr(), r)
			}
		}
	})

	t.Run("api_put_get_delete", func(t *testing.T) {
		obj := `{"apiVersion":"weft.dev/v1alpha1","kind":"TrafficPolicy","metadata":{"name":"pay"},"spec":{"service":"pay","loadBalancer":{"algorithm":"random"}}}`
		code, body := do(t, "PUT", cp.URL+"/api/v1/resources/TrafficPolicy/pay", obj)
		if code/100 != 2 {
			t.Fatalf("PUT: %d %s", code, body)
		}
		if code, body := do(t, "GET", cp.URL+"/api/v1/resources/TrafficPolicy/pay", ""); code != 200 || !strings.Contains(body, "random") {
			t.Errorf("GET after PUT: %d %s", code, body)
		}
		bad := strings.Replace(obj, `"random"`, `"fastest"`, 1)
		code, body = do(t, "PUT", cp.URL+"/api/v1/resources/TrafficPolicy/pay", bad)
		checkAPIError(t, "PUT with an unknown algorithm", code, body)
		if !strings.Contains(body, "round_robin") || !strings.Contains(body, "least_request") {
			t.Errorf("PUT with an unknown algorithm: error does not list the valid ones: %s", body)
		}
		if code, body := do(t, "GET", cp.URL+"/api/v1/resources/TrafficPolicy/pay", ""); code != 200 || !strings.Contains(body, "random") {
			t.Errorf("a rejected PUT changed the object: %d %s", code, body)
		}
		if code, body := do(t, "DELETE", cp.URL+"/api/v1/resources/TrafficPolicy/pay", ""); code/100 != 2 {
			t.Errorf("DELETE: %d %s", code, body)
		}
		code, body = do(t, "GET", cp.URL+"/api/v1/resources/TrafficPolicy/pay", "")
		checkAPIError(t, "GET after DELETE", code, body)
		code, body = do(t, "DELETE", cp.URL+"/api/v1/resources/TrafficPolicy/pay", "")
		checkAPIError(t, "DELETE of a missing object", code, body)
		code, body = do(t, "GET", cp.URL+"/api/v1/resources/NoSuchKind/x", "")
		checkAPIError(t, "GET of an unknown kind", code, body)
	})

	t.Run("delete_file", func(t *testing.T) {
		r := weft(t, 30*time.Second, nil, "delete", "-f", f, "--server", cp.URL)
		if r.Code != 0 {
			t.Fatalf("delete -f:\n%s", r)
		}
		if items := cp.MustResources(); len(items) != 0 {
			t.Errorf("after delete -f: want no resources, got %+v", items)
		}
	})
}

func do(t *testing.T, method, u, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func checkAPIError(t *testing.T, what string, code int, body string) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if code < 400 || code > 499 {
		t.Errorf("%s: status %d, want 4xx (%s)", what, code, truncate(body, 300))
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Errorf("%s: body is not {\"error\":\"...\"}: %q", what, truncate(body, 300))
	}
}

// TestRunExitCode: when the app exits on its own, `weft run` deregisters and
// exits with the app's exit code.
func TestRunExitCode(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)

	t.Run("sh_exit_7", func(t *testing.T) {
		s := StartRun(t, cp, RunOpts{Service: "job", Command: []string{"sh", "-c", "exit 7"}, NoWait: true})
		if !s.Proc.WaitExit(eventually) {
			t.Fatalf("weft run still running %s after its app exited", eventually)
		}
		if code := s.Proc.ExitCode(); code != 7 {
			t.Errorf("weft run -- sh -c 'exit 7': exit code %d, want 7", code)
		}
	})

	t.Run("sigint_deregisters_and_stops_app", func(t *testing.T) {
		s := StartRun(t, cp, RunOpts{Service: "interrupted"})
		sigAt := time.Now()
		s.Proc.Signal(syscall.SIGINT)
		if !poll(propagation, 20*time.Millisecond, func() bool {
			found, _, _, err := s.Registered(cp)
			return err == nil && !found
		}) {
			t.Errorf("instance still listed %s after SIGINT", propagation)
		}
		if !s.Proc.WaitExit(eventually) {
			t.Fatalf("weft run still running %s after SIGINT", eventually)
		}
		t.Logf("SIGINT → exit after %s, code %d", time.Since(sigAt).Round(time.Millisecond), s.Proc.ExitCode())
		if !poll(2*time.Second, 50*time.Millisecond, func() bool { return !dialable(addr(s.AppPort)) }) {
			t.Errorf("the app still accepts connections on %d after weft run exited", s.AppPort)
		}
	})

	t.Run("app_exits_after_serving", func(t *testing.T) {
		s := StartRun(t, cp, RunOpts{Service: "batch", AppArgs: []string{"--exit-after", "5s", "--exit-code", "5"}})
		if !s.Proc.WaitExit(eventually) {
			t.Fatalf("weft run still running %s after its app exited", eventually)
		}
		if code := s.Proc.ExitCode(); code != 5 {
			t.Errorf("exit code %d, want the app's 5", code)
		}
		// Deregistration is graceful: at once, not after a lease.
		if !poll(propagation, 20*time.Millisecond, func() bool {
			found, _, _, err := s.Registered(cp)
			return err == nil && !found
		}) {
			m, _ := cp.Services()
			t.Errorf("instance still listed %s after weft run exited: %+v", propagation, m["batch"])
		}
	})
}

// TestRunEnvAndRegistration: what `weft run` hands the app, and what the
// control plane lists for the instance.
func TestRunEnvAndRegistration(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	s := StartRun(t, cp, RunOpts{Service: "orders", Flags: []string{"--version", "v2", "--label", "tier=gold", "--label", "team=core", "--zone", "zone-a"}})

	code, body, err := httpGet("http://" + addr(s.AppPort) + "/env")
	var env map[string]string
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &env) != nil {
		t.Fatalf("app /env: %d %v %q", code, err, body)
	}
	want := map[string]string{
		"PORT":          strconv.Itoa(s.AppPort),
		"HTTP_PROXY":    "http://" + s.OutboundAddr(),
		"http_proxy":    "http://" + s.OutboundAddr(),
		"WEFT_OUTBOUND": s.OutboundAddr(),
		"WEFT_SERVICE":  "orders",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("app env %s=%q, want %q", k, env[k], v)
		}
	}
	if env["WEFT_INSTANCE_ID"] == "" {
		t.Errorf("app env WEFT_INSTANCE_ID is empty")
	}

	in := s.WaitRegistered(cp, eventually)
	if in.ID != env["WEFT_INSTANCE_ID"] {
		t.Errorf("registered id %q, app's WEFT_INSTANCE_ID %q", in.ID, env["WEFT_INSTANCE_ID"])
	}
	if in.Version != "v2" || in.Zone != "zone-a" || in.Labels["tier"] != "gold" || in.Labels["team"] != "core" || !in.Ready {
		t.Errorf("registered instance %+v: want version v2, zone zone-a, labels tier=gold team=core, ready", in)
	}

	// The app's requests through its own HTTP_PROXY reach other services.
	other := StartRun(t, cp, RunOpts{Service: "stock"})
	c := proxyClient(s.OutboundAddr())
	if rep := mustGet(t, c, "stock", "/from-orders", nil); rep.Name != other.Name {
		t.Errorf("via orders' outbound: reply from %q, want %q", rep.Name, other.Name)
	}
}
