package e2e

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// TestApplyTakesEffectWithoutRestart switches orders from the default
// (round_robin) to consistent_hash with `weft apply` while traffic flows
// through two client sidecars: no request may fail, and within the
// propagation bound the hash is in effect on every sidecar — each key on one
// instance, the same one whichever sidecar sends it.
func TestApplyTakesEffectWithoutRestart(t *testing.T) {
	cp, insts, _, c1 := startOrders(t, 3)
	client2 := StartClient(t, cp, nil)
	c2 := proxyClient(client2.OutboundAddr())
	waitAllServing(t, c2, "orders", names(insts)...)

	stop := make(chan struct{})
	key := func(w, i int) string { return fmt.Sprintf("user-%d", (w*7+i)%10) }
	loads := []<-chan []Result{
		Load(c1, "orders", LoadOpts{Workers: 2, MaxPerWorker: 5000, Duration: 30 * time.Second, Key: key}, stop),
		Load(c2, "orders", LoadOpts{Workers: 2, MaxPerWorker: 5000, Duration: 30 * time.Second, Key: key}, stop),
	}
	time.Sleep(time.Second)

	f := writeFile(t, "policy.yaml", policyYAML("orders", "orders", "consistent_hash", "header:x-user-id"))
	applyStart := time.Now()
	// WEFT_SERVER instead of --server: the other way to name the server.
	r := weft(t, 30*time.Second, []string{"WEFT_SERVER=" + cp.URL}, "apply", "-f", f)
	applied := time.Now()
	time.Sleep(propagation + 2*time.Second)
	close(stop)
	var perSidecar [][]Result
	for _, l := range loads {
		perSidecar = append(perSidecar, <-l)
	}
	if r.Code != 0 {
		t.Fatalf("apply failed:\n%s", r)
	}

	merged := map[string]map[string]bool{}
	for i, res := range perSidecar {
		if fl := failures(res); len(fl) > 0 {
			t.Errorf("client sidecar %d: %d of %d requests failed while the policy changed:%s", i+1, len(fl), len(res), describe(fl, 10))
		}
		before := map[string]map[string]bool{}
		after := map[string]map[string]bool{}
		nAfter := 0
		for _, x := range res {
			if !x.OK() {
				continue
			}
			switch {
			case x.End.Before(applyStart):
				add(before, x.Key, x.Reply.Name)
			case x.Start.After(applied.Add(propagation)):
				add(after, x.Key, x.Reply.Name)
				add(merged, x.Key, x.Reply.Name)
				nAfter++
			}
		}
		spread := false
		for _, owners := range before {
			if len(owners) > 1 {
				spread = true
			}
		}
		if !spread {
			t.Errorf("client sidecar %d: before the apply (default round_robin) every key stuck to one instance: %v; the test cannot tell the switch", i+1, before)
		}
		if nAfter < 50 {
			t.Fatalf("client sidecar %d: only %d requests more than %s after the apply; too few to judge", i+1, nAfter, propagation)
		}
		for k, owners := range after {
			if len(owners) != 1 {
				t.Errorf("client sidecar %d, %s after apply: key %s went to %d instances %v, want 1 (consistent_hash on x-user-id)", i+1, propagation, k, len(owners), keys(owners))
			}
		}
	}
	for k, owners := range merged {
		if len(owners) != 1 {
			t.Errorf("key %s went to %v depending on the client sidecar: the same x-user-id must reach the same instance", k, keys(owners))
		}
	}
}

func add(m map[string]map[string]bool, k, v string) {
	if m[k] == nil {
		m[k] = map[string]bool{}
	}
	m[k][v] = true
}

// TestNewInstanceGetsTrafficWithinOneSecond starts a third instance whose app
// listens only after 3 s: the sidecar must not register it before, and it
// must serve its first request within 1 s of listening.
func TestNewInstanceGetsTrafficWithinOneSecond(t *testing.T) {
	cp, _, _, c := startOrders(t, 2)

	stop := make(chan struct{})
	load := Load(c, "orders", LoadOpts{Workers: 2, MaxPerWorker: 100000, Duration: 40 * time.Second, Path: func(int, int) string { return "/load" }}, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
			<-load
		}
	}()

	late := StartRun(t, cp, RunOpts{Service: "orders", AppArgs: []string{"--ready-after", "3s"}, NoWait: true})
	var listened, first time.Time
	earlyReady := false
	ok := poll(eventually, 20*time.Millisecond, func() bool {
		// Registry first, then the app's log: an instance seen ready before
		// the log shows "listening" really was ready too early.
		_, ready, _, _ := late.Registered(cp)
		log := late.AppLogText()
		if lt := logTimes(log, "listening", ""); len(lt) > 0 {
			listened = lt[0]
		} else if ready && !earlyReady {
			earlyReady = true
			t.Errorf("the control plane lists %s as ready before its app listens (--ready-after 3s)", late.Name)
		}
		if ft := logTimes(log, "first", "/load"); len(ft) > 0 {
			first = ft[0]
			return true
		}
		return late.Proc.Exited()
	})
	close(stop)
	res := <-load
	if late.Proc.Exited() {
		t.Fatalf("weft run exited with code %d", late.Proc.ExitCode())
	}
	if !ok || listened.IsZero() {
		t.Fatalf("the new instance served no request within %s (listened at %v)", eventually, listened)
	}
	lag := first.Sub(listened)
	t.Logf("new instance: listening → first request served: %s", lag)
	if lag > propagation {
		t.Errorf("the new instance served its first request %s after its app started listening, want ≤ %s", lag, propagation)
	}
	if fl := failures(res); len(fl) > 0 {
		t.Errorf("%d of %d requests failed while an instance joined:%s", len(fl), len(res), describe(fl, 10))
	}
}

// TestRunRegistersOnlyOnceAppAccepts: "weft run … registers only once the
// app accepts connections on --app-port" — before that, the instance is not
// in /api/v1/services at all; after, it is, and ready.
func TestRunRegistersOnlyOnceAppAccepts(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	s := StartRun(t, cp, RunOpts{Service: "orders", AppArgs: []string{"--ready-after", "3s"}, NoWait: true})
	var listened time.Time
	reported := false
	ok := poll(eventually, 20*time.Millisecond, func() bool {
		found, _, in, _ := s.Registered(cp) // registry first, then the log
		if lt := logTimes(s.AppLogText(), "listening", ""); len(lt) > 0 {
			listened = lt[0]
			return true
		}
		if found && !reported {
			reported = true
			t.Errorf("%s after start, before its app accepted connections (--ready-after 3s), /api/v1/services already lists the instance: %+v",
				time.Since(s.Proc.Started).Round(time.Millisecond), in)
		}
		return s.Proc.Exited()
	})
	if !ok || listened.IsZero() {
		t.Fatalf("the app never listened (weft run exited: %v, code %d)", s.Proc.Exited(), s.Proc.ExitCode())
	}
	s.WaitRegistered(cp, eventually)
	if code, _, err := httpGet(s.AdminURL() + "/ready"); err != nil || code != 200 {
		t.Errorf("admin /ready: %d %v after the app listens and the instance is registered", code, err)
	}
}

// TestGracefulShutdownUnderLoad: SIGTERM to one of three `weft run` units
// under steady load (some requests in flight for 200 ms): no request fails,
// the instance leaves the registry at once, and its app is stopped.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	cp, insts, _, c := startOrders(t, 3)
	victim := insts[0]

	load := Load(c, "orders", LoadOpts{
		Workers: 4, MaxPerWorker: 3000, Duration: 6 * time.Second,
		Path: func(w, i int) string {
			if i%4 == 0 {
				return "/slow?sleep=200ms"
			}
			return "/load"
		},
	}, nil)
	time.Sleep(1500 * time.Millisecond)

	// Long requests in flight at SIGTERM must finish (drain, default 10s).
	longc := make(chan Result, 9)
	for range 9 {
		go func() { longc <- meshGet(c, "orders", "/long?sleep=2s", nil) }()
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)

	sigAt := time.Now()
	victim.Proc.Signal(syscall.SIGTERM)
	var goneAt time.Time
	if poll(10*time.Second, 20*time.Millisecond, func() bool {
		found, _, _, err := victim.Registered(cp)
		return err == nil && !found
	}) {
		goneAt = time.Now()
	}
	if !victim.Proc.WaitExit(30 * time.Second) {
		t.Errorf("weft run did not exit within 30s of SIGTERM")
	}
	exitAt := time.Now()
	res := <-load
	longOnVictim := 0
	for range 9 {
		r := <-longc
		if !r.OK() {
			t.Errorf("a 2s request in flight at SIGTERM failed: %s", r)
		} else if r.Reply.Name == victim.Name {
			longOnVictim++
		}
	}
	t.Logf("%d of 9 two-second requests in flight at SIGTERM were on the terminated instance", longOnVictim)

	if goneAt.IsZero() {
		t.Errorf("%s still listed in /api/v1/services 10s after SIGTERM", victim.Name)
	} else {
		t.Logf("SIGTERM → deregistered %s, → exited %s (code %d)", goneAt.Sub(sigAt).Round(time.Millisecond), exitAt.Sub(sigAt).Round(time.Millisecond), victim.Proc.ExitCode())
		if d := goneAt.Sub(sigAt); d > propagation {
			t.Errorf("graceful deregistration took %s after SIGTERM, want at once (≤ %s)", d, propagation)
		}
	}
	if ins, err := cp.ReadyInstances("orders"); err != nil || len(ins) != 2 {
		t.Errorf("after SIGTERM of 1 of 3: want 2 ready orders instances, got %+v (err %v)", ins, err)
	}
	if !poll(2*time.Second, 50*time.Millisecond, func() bool { return !dialable(addr(victim.AppPort)) }) {
		t.Errorf("the app of %s still accepts connections on %d after weft run exited", victim.Name, victim.AppPort)
	}

	if fl := failures(res); len(fl) > 0 {
		t.Errorf("%d of %d requests failed across the SIGTERM:%s", len(fl), len(res), describe(fl, 10))
	}
	served := 0
	for _, r := range res {
		if r.OK() && r.Reply.Name == victim.Name {
			served++
		}
	}
	if served == 0 {
		t.Errorf("the victim served no request before SIGTERM; the test did not exercise it")
	}
	t.Logf("%d requests, %d served by the terminated instance", len(res), served)
}

// TestKill9RemovesInstanceWithinLease: kill -9 of one unit's process group
// (sidecar and app). The instance must leave /api/v1/services within the
// lease bound; requests may fail until then, none after.
func TestKill9RemovesInstanceWithinLease(t *testing.T) {
	cp, insts, _, c := startOrders(t, 3)
	victim := insts[0]

	stop := make(chan struct{})
	load := Load(c, "orders", LoadOpts{Workers: 2, MaxPerWorker: 100000, Duration: 40 * time.Second}, stop)
	time.Sleep(time.Second)

	killAt := time.Now()
	victim.Proc.KillGroup()
	var removedAt time.Time
	bound := leaseBound + leaseSlack
	if poll(bound+10*time.Second, 50*time.Millisecond, func() bool {
		found, _, _, err := victim.Registered(cp)
		return err == nil && !found
	}) {
		removedAt = time.Now()
	}
	if removedAt.IsZero() {
		close(stop)
		<-load
		t.Fatalf("killed instance %s still listed %s after kill -9", victim.Name, bound+10*time.Second)
	}
	took := removedAt.Sub(killAt)
	t.Logf("kill -9 → removed from /api/v1/services after %s", took.Round(time.Millisecond))
	if took > bound {
		t.Errorf("killed instance removed after %s, want within the lease bound %s + %s slack", took, leaseBound, leaseSlack)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	res := <-load

	var before, after []Result
	for _, r := range failures(res) {
		if r.Start.After(removedAt) {
			after = append(after, r)
		} else {
			before = append(before, r)
		}
	}
	t.Logf("%d requests; %d failed before the removal was observed, %d after", len(res), len(before), len(after))
	if len(after) > 0 {
		t.Errorf("%d requests started after the instance was removed (at +%s) failed:%s", len(after), took.Round(time.Millisecond), describeRel(after, killAt, 10))
	}
	if n := countByName(res); n[victim.Name] == 0 {
		t.Errorf("the victim served no request; the test did not exercise it")
	}
	if ins, err := cp.ReadyInstances("orders"); err != nil || len(ins) != 2 {
		t.Errorf("want 2 ready orders instances after kill -9 of 1 of 3, got %+v (err %v)", ins, err)
	}
}

// TestFrozenSidecarLeaseExpires: a unit that stops answering without closing
// its connections (SIGSTOP of sidecar and app, as a hung or partitioned host)
// can only be noticed through the lease: it must leave /api/v1/services
// within the lease bound, and requests sent after that must not reach it.
//
// It also checks --lease-ttl is honoured: the control plane runs with 3s.
func TestFrozenSidecarLeaseExpires(t *testing.T) {
	const lease = 3 * time.Second
	cp := StartControl(t, "--lease-ttl", lease.String())
	var insts []*Sidecar
	for range 3 {
		insts = append(insts, StartRun(t, cp, RunOpts{Service: "orders"}))
	}
	cp.WaitReady("orders", 3, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", names(insts)...)
	victim := insts[0]

	stopAt := time.Now()
	if err := syscall.Kill(-victim.Proc.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	bound := lease + leaseSlack
	var removedAt time.Time
	if poll(bound+10*time.Second, 50*time.Millisecond, func() bool {
		found, _, _, err := victim.Registered(cp)
		return err == nil && !found
	}) {
		removedAt = time.Now()
	}
	if removedAt.IsZero() {
		t.Fatalf("frozen instance %s still listed %s after SIGSTOP: the lease never expired", victim.Name, bound+10*time.Second)
	}
	took := removedAt.Sub(stopAt)
	t.Logf("SIGSTOP → removed from /api/v1/services after %s (--lease-ttl %s)", took.Round(time.Millisecond), lease)
	if took > bound {
		t.Errorf("frozen instance removed after %s, want within --lease-ttl %s + %s slack", took, lease, leaseSlack)
	}
	if ins, err := cp.ReadyInstances("orders"); err != nil || len(ins) != 2 {
		t.Errorf("the two healthy instances must keep their leases: ready %+v (err %v)", ins, err)
	}
	// Requests from now on must avoid it (a request sent to it would hang).
	for i := range 30 {
		r := meshGet(c, "orders", "/after-lease", nil)
		if !r.OK() {
			t.Fatalf("request %d after the frozen instance was removed: %s", i+1, r)
		}
		if r.Reply.Name == victim.Name {
			t.Fatalf("request %d answered by the frozen instance?", i+1)
		}
	}
}

func describeRel(rs []Result, t0 time.Time, n int) string {
	s := ""
	for i, r := range rs {
		if i == n {
			s += fmt.Sprintf("\n  … and %d more", len(rs)-n)
			break
		}
		s += fmt.Sprintf("\n  [kill+%s] %s", r.Start.Sub(t0).Round(time.Millisecond), r)
	}
	return s
}

// TestControlPlaneDown: with the control plane SIGKILLed, existing sidecars
// keep serving with their last view (policy included); restarted on the same
// ports and data dir, it sees the instances re-register and still has the
// policy applied before.
func TestControlPlaneDown(t *testing.T) {
	cp, insts, _, c := startOrders(t, 2)
	setPolicy(t, cp, "consistent_hash", "header:x-user-id")
	ks := userKeys(20)
	owner := keyMap(t, c, ks)

	stop := make(chan struct{})
	load := Load(c, "orders", LoadOpts{
		Workers: 1, MaxPerWorker: 100000, Duration: 90 * time.Second, Pause: 20 * time.Millisecond,
		Key: func(_, i int) string { return ks[i%len(ks)] },
	}, stop)
	stopLoad := func() []Result {
		select {
		case <-stop:
			return nil
		default:
		}
		close(stop)
		return <-load
	}
	defer stopLoad()
	time.Sleep(500 * time.Millisecond)

	killAt := time.Now()
	cp.Kill()
	time.Sleep(3 * time.Second)

	t.Run("unseen_service_while_down", func(t *testing.T) {
		r := meshGet(c, "never-seen", "/", nil)
		checkMeshError(t, r, 503, "control_plane_unreachable", "never-seen")
	})

	restartAt := time.Now()
	cp.Restart()
	cp.WaitReady("orders", 2, eventually)
	reregAt := time.Now()
	t.Logf("control plane down %s; instances re-registered %s after restart", restartAt.Sub(killAt).Round(time.Millisecond), reregAt.Sub(restartAt).Round(time.Millisecond))
	for _, in := range insts {
		if found, ready, _, err := in.Registered(cp); !found || !ready {
			t.Errorf("%s (inbound %s) not re-registered as ready (found %v ready %v err %v)", in.Name, in.InboundAddr(), found, ready, err)
		}
	}
	items := cp.MustResources()
	var pol *ObjectJSON
	for i := range items {
		if items[i].Kind == "TrafficPolicy" && items[i].Metadata.Name == "orders" {
			pol = &items[i]
		}
	}
	if pol == nil {
		t.Errorf("after restart with the same --data-dir, /api/v1/resources lost TrafficPolicy/orders: %+v", items)
	} else if alg := algorithmOf(pol.Spec); alg != "consistent_hash" {
		t.Errorf("after restart TrafficPolicy/orders has algorithm %q, want consistent_hash (spec %s)", alg, pol.Spec)
	}

	time.Sleep(propagation + settle)
	res := stopLoad()
	if fl := failures(res); len(fl) > 0 {
		t.Errorf("%d of %d requests failed across the control plane's death and restart:%s", len(fl), len(res), describeRel(fl, killAt, 10))
	}
	// While it was down, the last view (with its policy) kept serving.
	var during, afterN int
	post := map[string]map[string]bool{}
	for _, r := range res {
		if !r.OK() {
			continue
		}
		if r.Start.After(killAt) && r.End.Before(restartAt) {
			during++
			if owner[r.Key] != r.Reply.Name {
				t.Errorf("while the control plane was down key %s went to %s, before to %s: the last view (consistent_hash) was not kept", r.Key, r.Reply.Name, owner[r.Key])
			}
		}
		if r.Start.After(reregAt.Add(propagation)) {
			afterN++
			add(post, r.Key, r.Reply.Name)
		}
	}
	if during < 20 {
		t.Errorf("only %d requests ran while the control plane was down; too few to judge", during)
	}
	for k, owners := range post {
		if len(owners) != 1 {
			t.Errorf("after the restart key %s went to %v: the stored policy is not in effect", k, keys(owners))
		}
	}
	t.Logf("%d requests: %d while down, %d after re-registration", len(res), during, afterN)
}

func algorithmOf(spec []byte) string {
	var s struct {
		LoadBalancer struct {
			Algorithm string `json:"algorithm"`
		} `json:"loadBalancer"`
	}
	_ = json.Unmarshal(spec, &s)
	return s.LoadBalancer.Algorithm
}

// checkMeshError checks a mesh-produced error: status, x-weft-error header
// and JSON body {"error","message","service"}.
func checkMeshError(t *testing.T, r Result, status int, code, service string) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("want a %d %s from the mesh, got %v", status, code, r.Err)
	}
	if r.Status != status {
		t.Errorf("status %d, want %d (%s)", r.Status, status, r)
	}
	if h := r.Header.Get("x-weft-error"); h != code {
		t.Errorf("x-weft-error %q, want %q (%s)", h, code, r)
	}
	var e MeshError
	if err := json.Unmarshal(r.Body, &e); err != nil {
		t.Errorf("body is not JSON: %v: %q", err, r.Body)
		return
	}
	if e.Error != code || e.Service != service || e.Message == "" {
		t.Errorf("body %q: want error=%q, service=%q and a message", r.Body, code, service)
	}
}
