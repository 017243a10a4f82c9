package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
)

// liveLoad keeps workers sending requests until stopped, recording every
// result as it comes, so a test can watch shares move while load runs.
type liveLoad struct {
	mu   sync.Mutex
	res  []Result
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func startLiveLoad(c *http.Client, service string, workers int) *liveLoad {
	l := &liveLoad{stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				r := meshGet(c, service, "/live", nil)
				l.mu.Lock()
				l.res = append(l.res, r)
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond) // spare the CPU the test is about
			}
		})
	}
	return l
}

func (l *liveLoad) Stop() []Result {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.res
}

// share returns name's share of the successful requests that ended in
// [from, to), and how many there were.
func (l *liveLoad) share(name string, from, to time.Time) (float64, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return shareOf(l.res, name, from, to)
}

func shareOf(rs []Result, name string, from, to time.Time) (float64, int) {
	hit, n := 0, 0
	for _, r := range rs {
		if !r.OK() || r.End.Before(from) || !r.End.Before(to) {
			continue
		}
		n++
		if r.Reply.Name == name {
			hit++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(hit) / float64(n), n
}

// TestLoadAware: of three instances under load_aware, one whose app starts
// burning every CPU must get < 20% of the traffic within 10 s, and its
// share must recover within 30 s after it stops. Both times are measured
// and logged.
func TestLoadAware(t *testing.T) {
	cp := StartControl(t)
	a := StartRun(t, cp, RunOpts{Service: "orders"})
	b := StartRun(t, cp, RunOpts{Service: "orders"})
	hot := StartRun(t, cp, RunOpts{Service: "orders"})
	cp.WaitReady("orders", 3, eventually)
	setPolicy(t, cp, "load_aware", "")
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", a.Name, b.Name, hot.Name)

	l := startLiveLoad(c, "orders", 6)
	defer l.Stop()
	time.Sleep(3 * time.Second)
	base, n := l.share(hot.Name, time.Now().Add(-3*time.Second), time.Now())
	t.Logf("before the burn: %s got %.1f%% of %d requests", hot.Name, 100*base, n)
	if base < 0.2 {
		t.Fatalf("before burning, %s got only %.1f%% of %d requests; the test needs a fair share to start from", hot.Name, 100*base, n)
	}

	burn := func(d string) time.Time {
		t.Helper()
		resp, err := plainClient.Post("http://"+addr(hot.AppPort)+"/burn?for="+d, "text/plain", nil)
		if err != nil {
			t.Fatalf("starting the burn: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST /burn: %d", resp.StatusCode)
		}
		return time.Now()
	}

	// Shifted: the first second from which every 1 s window gives the hot
	// instance < 20%, within the 14 s of burning.
	t0 := burn("60s")
	const burnFor = 14 * time.Second
	time.Sleep(5 * time.Second)
	idleCaller(t, cp, hot)
	time.Sleep(time.Until(t0.Add(burnFor)))
	tStop := burn("0")
	var shifted time.Time
	for w := t0.Add(time.Second); !w.After(tStop); w = w.Add(500 * time.Millisecond) {
		s, n := l.share(hot.Name, w.Add(-time.Second), w)
		if n > 0 && s >= 0.2 {
			shifted = time.Time{}
		} else if shifted.IsZero() && n > 0 {
			shifted = w
		}
	}
	late, nLate := l.share(hot.Name, t0.Add(10*time.Second), tStop)
	if st, err := hot.Stats(); err == nil {
		t.Logf("%s reports while burning: %s", hot.Name, st.Load)
	}
	if shifted.IsZero() {
		t.Errorf("while %s burned CPU for %s its share never stayed below 20%% (%.1f%% of %d requests in the last %s)",
			hot.Name, burnFor, 100*late, nLate, burnFor-10*time.Second)
	} else {
		t.Logf("burning: %s's share fell below 20%% for good %s after the burn started; %.1f%% of %d requests from 10 s on",
			hot.Name, shifted.Sub(t0).Round(100*time.Millisecond), 100*late, nLate)
		if d := shifted.Sub(t0); d > 10*time.Second {
			t.Errorf("the shift took %s, want ≤ 10 s", d.Round(100*time.Millisecond))
		}
	}
	if late >= 0.2 {
		t.Errorf("from 10 s into the burn, %s still got %.1f%% of %d requests, want < 20%%", hot.Name, 100*late, nLate)
	}

	// Recovered: a 2 s window with ≥ 25% (a fair share is 33%).
	var recovered time.Duration
	deadline := tStop.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		if s, n := l.share(hot.Name, time.Now().Add(-2*time.Second), time.Now()); n > 20 && s >= 0.25 {
			recovered = time.Since(tStop)
			break
		}
	}
	res := l.Stop()
	if f := failures(res); len(f) > 0 {
		t.Errorf("%d of %d requests failed:%s", len(f), len(res), describe(f, 10))
	}
	if recovered == 0 {
		s, n := shareOf(res, hot.Name, tStop.Add(28*time.Second), tStop.Add(30*time.Second))
		t.Errorf("30 s after the burn stopped, %s's share had not recovered to 25%% (last 2 s: %.1f%% of %d)", hot.Name, 100*s, n)
	} else {
		t.Logf("recovery: %s's share was back at ≥ 25%% %s after the burn stopped", hot.Name, recovered.Round(100*time.Millisecond))
	}
	t.Logf("%d requests in all, %v", len(res), countByName(res))

	// What the caller's sidecar knows, as the admin view shows it.
	code, body, err := httpGet(client.AdminURL() + "/config")
	if err == nil && code == 200 {
		var cv struct {
			Destinations []struct {
				Service   string `json:"service"`
				Endpoints []struct {
					ID       string  `json:"id"`
					Headroom float64 `json:"headroom"`
				} `json:"endpoints"`
			} `json:"destinations"`
		}
		if json.Unmarshal([]byte(body), &cv) == nil {
			var parts []string
			for _, d := range cv.Destinations {
				for _, ep := range d.Endpoints {
					parts = append(parts, fmt.Sprintf("%s=%.2f", ep.ID, ep.Headroom))
				}
			}
			t.Logf("the client's view of headroom after recovery: %s", strings.Join(parts, " "))
		}
	}
}

// idleCaller checks the control plane's copy of the load: the busy
// instance's registry entry carries its report, and a new caller knows it
// before it has sent the instance a request.
func idleCaller(t *testing.T, cp *Control, hot *Sidecar) {
	t.Helper()
	var pushed, hotID string
	if !poll(5*time.Second, 100*time.Millisecond, func() bool {
		in, err := cp.ReadyInstances("orders")
		for _, i := range in {
			if sameAddr(i.Address, hot.InboundAddr()) {
				pushed, hotID = i.Load, i.ID
			}
		}
		r, ok := balancerParse(pushed)
		return err == nil && ok && r < 0.8
	}) {
		t.Errorf("the registry's entry for the burning %s carries load %q; want a report with headroom < 0.8", hot.Name, pushed)
		return
	}
	// A new caller whose first request went to the busy instance learnt
	// from its answer: try another new caller (up to 3).
	for try := 1; try <= 3; try++ {
		idle := StartClient(t, cp, nil)
		first := mustGet(t, proxyClient(idle.OutboundAddr()), "orders", "/one", nil)
		_, body, err := httpGet(idle.AdminURL() + "/config")
		if err != nil {
			t.Fatal(err)
		}
		var cv struct {
			Destinations []struct {
				Endpoints []struct {
					ID       string           `json:"id"`
					Headroom float64          `json:"headroom"`
					Load     *json.RawMessage `json:"load"`
				} `json:"endpoints"`
			} `json:"destinations"`
		}
		if err := json.Unmarshal([]byte(body), &cv); err != nil || len(cv.Destinations) != 1 {
			t.Fatalf("idle caller's /config: %v in %s", err, body)
		}
		var ep struct {
			ID       string           `json:"id"`
			Headroom float64          `json:"headroom"`
			Load     *json.RawMessage `json:"load"`
		}
		ok := false
		for _, e := range cv.Destinations[0].Endpoints {
			if e.ID == hotID {
				ep, ok = e, true
			}
		}
		t.Logf("registry entry of %s: %q; new caller %d's first request went to %s; it sees %s at headroom %.2f", hot.Name, pushed, try, first.Name, hot.Name, ep.Headroom)
		if first.Name == hot.Name {
			continue // inconclusive: its answer carried the load too
		}
		if !ok || ep.Load == nil || ep.Headroom >= 0.8 {
			t.Errorf("a new caller that has not talked to %s does not know it is busy (endpoint %s: %+v, found %v)", hot.Name, hotID, ep, ok)
		}
		idle.Proc.Stop(10 * time.Second)
		return
	}
	t.Log("inconclusive: every new caller's first request went to the busy instance")
}

// balancerParse returns the headroom of an x-weft-load value.
func balancerParse(v string) (float64, bool) {
	r, ok := balancer.ParseLoad([]byte(v))
	return r.Headroom, ok
}

// TestZones: a caller with --zone a sends everything to zone a's instances
// while one is ready, fails over to zone b when none is (no failed
// request), and comes back when zone a has an instance again.
func TestZones(t *testing.T) {
	cp := StartControl(t)
	zoneFlag := func(z string) []string { return []string{"--zone", z} }
	a1 := StartRun(t, cp, RunOpts{Service: "orders", Flags: zoneFlag("a")})
	a2 := StartRun(t, cp, RunOpts{Service: "orders", Flags: zoneFlag("a")})
	b1 := StartRun(t, cp, RunOpts{Service: "orders", Flags: zoneFlag("b")})
	b2 := StartRun(t, cp, RunOpts{Service: "orders", Flags: zoneFlag("b")})
	cp.WaitReady("orders", 4, eventually)
	client := StartSidecar(t, cp, SidecarOpts{Service: "client", Flags: zoneFlag("a")})
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", a1.Name, a2.Name)
	// The client's first view may predate some instance; wait until it
	// has all four (the admin view lists the ready endpoints).
	if !poll(eventually, 50*time.Millisecond, func() bool {
		_, body, err := httpGet(client.AdminURL() + "/config")
		return err == nil && strings.Count(body, `"zone": "b"`) >= 2
	}) {
		t.Fatal("the client never saw zone b's instances")
	}

	inZone := func(phase string, n int, want ...*Sidecar) {
		t.Helper()
		got := tally(sequential(t, c, n, "/zone", nil))
		ok := map[string]bool{}
		for _, s := range want {
			ok[s.Name] = true
			if got[s.Name] == 0 {
				t.Errorf("%s: %s got none of %d requests: %v", phase, s.Name, n, got)
			}
		}
		for name, k := range got {
			if !ok[name] {
				t.Errorf("%s: %d of %d requests went to %s, outside the zone expected: %v", phase, k, n, name, got)
			}
		}
		t.Logf("%s: %v", phase, got)
	}
	inZone("zone a up", 200, a1, a2)

	// Zone a goes away: every request still succeeds (sequential fails
	// the test on any non-200), in zone b.
	for _, s := range []*Sidecar{a1, a2} {
		s.Proc.Stop(10 * time.Second)
	}
	cp.WaitReady("orders", 2, eventually)
	time.Sleep(propagation + settle)
	inZone("zone a gone", 200, b1, b2)

	a3 := StartRun(t, cp, RunOpts{Service: "orders", Flags: zoneFlag("a")})
	cp.WaitReady("orders", 3, eventually)
	time.Sleep(propagation + settle)
	inZone("zone a back", 100, a3)
}
