package e2e

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
)

// startOrders starts a control plane, n `weft run` instances of orders and a
// client sidecar, and waits until the client reaches every instance.
func startOrders(t *testing.T, n int) (*Control, []*Sidecar, *Sidecar, *http.Client) {
	t.Helper()
	cp := StartControl(t)
	var insts []*Sidecar
	for range n {
		insts = append(insts, StartRun(t, cp, RunOpts{Service: "orders"}))
	}
	cp.WaitReady("orders", n, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())
	waitAllServing(t, c, "orders", names(insts)...)
	return cp, insts, client, c
}

func names(ss []*Sidecar) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

// setPolicy applies a policy and waits out the propagation bound.
func setPolicy(t *testing.T, cp *Control, algorithm, hashKey string) {
	t.Helper()
	applyPolicy(t, cp, "orders", algorithm, hashKey)
	time.Sleep(propagation + settle)
}

// sequential sends n requests one after another; any non-200 fails the test.
func sequential(t *testing.T, c *http.Client, n int, path string, hdr func(i int) http.Header) []string {
	t.Helper()
	seq := make([]string, 0, n)
	for i := range n {
		var h http.Header
		if hdr != nil {
			h = hdr(i)
		}
		r := meshGet(c, "orders", path, h)
		if !r.OK() {
			t.Fatalf("request %d of %d: %s", i+1, n, r)
		}
		seq = append(seq, r.Reply.Name)
	}
	return seq
}

func tally(seq []string) map[string]int {
	m := map[string]int{}
	for _, s := range seq {
		m[s]++
	}
	return m
}

// rotationBreak returns the first index i ≥ 2 where requests i-2..i did not
// hit three distinct instances, or -1 when the sequence is a strict rotation.
func rotationBreak(seq []string) int {
	for i := 2; i < len(seq); i++ {
		if seq[i] == seq[i-1] || seq[i] == seq[i-2] || seq[i-1] == seq[i-2] {
			return i
		}
	}
	return -1
}

// keyMap sends one request per key (x-user-id) and returns key → instance.
func keyMap(t *testing.T, c *http.Client, keys []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, k := range keys {
		r := meshGet(c, "orders", "/k", http.Header{"X-User-Id": {k}})
		if !r.OK() {
			t.Fatalf("key %s: %s", k, r)
		}
		m[k] = r.Reply.Name
	}
	return m
}

func userKeys(n int) []string {
	var ks []string
	for i := range n {
		ks = append(ks, fmt.Sprintf("user-%03d", i))
	}
	return ks
}

// TestLoadBalancing checks every algorithm over three instances of orders
// behind one client sidecar; the policy is switched with `weft apply` between
// subtests (no restarts).
func TestLoadBalancing(t *testing.T) {
	cp, insts, client, c := startOrders(t, 3)

	t.Run("round_robin/strict_rotation", func(t *testing.T) {
		setPolicy(t, cp, "round_robin", "")
		seq := sequential(t, c, 300, "/rr", nil)
		got := tally(seq)
		for _, n := range names(insts) {
			if got[n] != 100 {
				t.Errorf("round_robin: 300 sequential requests over 3 instances: want exactly 100 each, got %v", got)
				break
			}
		}
		if i := rotationBreak(seq); i >= 0 {
			t.Errorf("round_robin is not a strict rotation: requests %d..%d went to %v", i-1, i+1, seq[i-2:i+1])
		}
		st, err := client.Stats()
		if err != nil {
			t.Errorf("client sidecar /stats: %v", err)
		} else if st.OutboundRequests < 300 {
			t.Errorf("client sidecar /stats outbound_requests = %d after ≥ 300 requests", st.OutboundRequests)
		}
		for _, in := range insts {
			st, err := in.Stats()
			if err != nil {
				t.Errorf("%s /stats: %v", in.Name, err)
			} else if st.InboundRequests < 100 {
				t.Errorf("%s /stats inbound_requests = %d after it served ≥ 100 requests", in.Name, st.InboundRequests)
			}
		}
	})

	t.Run("random/statistical", func(t *testing.T) {
		setPolicy(t, cp, "random", "")
		const n = 600
		seq := sequential(t, c, n, "/random", nil)
		got := tally(seq)
		lo, hi := n*20/100, n*47/100
		for _, name := range names(insts) {
			if got[name] < lo || got[name] > hi {
				t.Errorf("random: %d requests: want each instance between %d and %d, got %v", n, lo, hi, got)
				break
			}
		}
		if rotationBreak(seq) < 0 {
			t.Errorf("random: %d requests followed a strict rotation, which is round robin, not random", n)
		}
	})

	for _, alg := range []string{"modulo", "consistent_hash"} {
		t.Run(alg+"/sticky", func(t *testing.T) {
			setPolicy(t, cp, alg, "header:x-user-id")
			ks := userKeys(50)
			first := keyMap(t, c, ks)
			for rep := 2; rep <= 3; rep++ {
				again := keyMap(t, c, ks)
				var moved []string
				for _, k := range ks {
					if again[k] != first[k] {
						moved = append(moved, fmt.Sprintf("%s: %s→%s", k, first[k], again[k]))
					}
				}
				if len(moved) > 0 {
					t.Errorf("%s: pass %d sent %d of 50 keys to another instance than pass 1: %v", alg, rep, len(moved), moved)
				}
			}
			if used := tally(values(first)); len(used) != 3 {
				t.Errorf("%s: 50 keys landed on %d instance(s) %v, want all 3 used", alg, len(used), used)
			}
		})
		t.Run(alg+"/no_key_still_succeeds", func(t *testing.T) {
			setPolicy(t, cp, alg, "header:x-user-id")
			sequential(t, c, 30, "/nokey", nil)
		})
	}

	t.Run("consistent_hash/other_key_sources", func(t *testing.T) {
		cases := []struct {
			hashKey string
			req     func(k string) (string, http.Header)
		}{
			{"query:user", func(k string) (string, http.Header) { return "/q?user=" + k, nil }},
			{"cookie:session", func(k string) (string, http.Header) { return "/c", http.Header{"Cookie": {"session=" + k}} }},
			{"source_ip", func(k string) (string, http.Header) { return "/ip", nil }},
		}
		for _, tc := range cases {
			t.Run(strings.ReplaceAll(tc.hashKey, ":", "_"), func(t *testing.T) {
				setPolicy(t, cp, "consistent_hash", tc.hashKey)
				owner := map[string]string{}
				for rep := range 3 {
					for _, k := range userKeys(20) {
						path, hdr := tc.req(k)
						r := meshGet(c, "orders", path, hdr)
						if !r.OK() {
							t.Fatalf("%s key %s: %s", tc.hashKey, k, r)
						}
						if rep == 0 {
							owner[k] = r.Reply.Name
						} else if owner[k] != r.Reply.Name {
							t.Fatalf("%s: key %s went to %s, earlier to %s", tc.hashKey, k, r.Reply.Name, owner[k])
						}
					}
				}
				if tc.hashKey == "source_ip" {
					if used := tally(values(owner)); len(used) != 1 {
						t.Errorf("source_ip: every request comes from one sidecar, yet they spread over %v", used)
					}
				} else if used := tally(values(owner)); len(used) < 2 {
					t.Errorf("%s: 20 distinct keys all landed on %v; the key is not being hashed", tc.hashKey, used)
				}
			})
		}
	})

	// Must stay last: it adds a fourth instance.
	t.Run("add_instance/modulo_moves_most_consistent_hash_few", func(t *testing.T) {
		ks := userKeys(200)
		setPolicy(t, cp, "modulo", "header:x-user-id")
		modBefore := keyMap(t, c, ks)
		setPolicy(t, cp, "consistent_hash", "header:x-user-id")
		chBefore := keyMap(t, c, ks)

		fourth := StartRun(t, cp, RunOpts{Service: "orders"})
		cp.WaitReady("orders", 4, eventually)
		time.Sleep(propagation + settle)

		chAfter := keyMap(t, c, ks)
		setPolicy(t, cp, "modulo", "header:x-user-id")
		modAfter := keyMap(t, c, ks)

		for alg, m := range map[string]map[string]string{"consistent_hash": chAfter, "modulo": modAfter} {
			if tally(values(m))[fourth.Name] == 0 {
				t.Errorf("%s: the 4th instance %s got none of 200 keys %s after it was ready; owners: %v", alg, fourth.Name, propagation+settle, tally(values(m)))
			}
		}
		movedMod, movedCH := moved(modBefore, modAfter), moved(chBefore, chAfter)
		t.Logf("3→4 instances: modulo moved %d/200 keys, consistent_hash moved %d/200 (%d of them to the new instance)",
			len(movedMod), len(movedCH), countTo(chAfter, movedCH, fourth.Name))
		if len(movedMod) < 100 {
			t.Errorf("modulo: adding a 4th instance moved %d of 200 keys, want ≥ 50%% (100)", len(movedMod))
		}
		if len(movedCH) > 70 {
			t.Errorf("consistent_hash: adding a 4th instance moved %d of 200 keys, want ≤ 35%% (70)", len(movedCH))
		}
	})
}

func values(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

func moved(before, after map[string]string) []string {
	var out []string
	for k, v := range before {
		if after[k] != v {
			out = append(out, k)
		}
	}
	return out
}

func countTo(after map[string]string, ks []string, name string) int {
	n := 0
	for _, k := range ks {
		if after[k] == name {
			n++
		}
	}
	return n
}

// TestLeastRequest: of three instances, one answers 100 ms slower than the
// others; under 6 concurrent callers the latency-aware least_request
// (peak-EWMA cost) must send it almost nothing: < 5% (round robin would
// send it a third, in-flight counts alone about 17%). Once through the
// HTTP/1.1 fast path, once through net/http (what h2c and gRPC use).
func TestLeastRequest(t *testing.T) {
	cp := StartControl(t)
	fast1 := StartRun(t, cp, RunOpts{Service: "orders"})
	fast2 := StartRun(t, cp, RunOpts{Service: "orders"})
	slow := StartRun(t, cp, RunOpts{Service: "orders", AppArgs: []string{"--delay", "100ms"}})
	cp.WaitReady("orders", 3, eventually)
	setPolicy(t, cp, "least_request", "")
	for _, path := range []struct {
		name  string
		flags []string
	}{{"fast_path", nil}, {"net_http", []string{"--no-fast-path"}}} {
		t.Run(path.name, func(t *testing.T) {
			// A fresh client: the estimates start empty, so the slow
			// instance's first requests are part of what is counted.
			client := StartSidecar(t, cp, SidecarOpts{Service: "client", Flags: path.flags})
			c := proxyClient(client.OutboundAddr())
			res := <-Load(c, "orders", LoadOpts{Workers: 6, MaxPerWorker: 150, Duration: 8 * time.Second}, nil)
			if f := failures(res); len(f) > 0 {
				t.Errorf("%d of %d requests failed:%s", len(f), len(res), describe(f, 10))
			}
			got := countByName(res)
			total := got[fast1.Name] + got[fast2.Name] + got[slow.Name]
			t.Logf("least_request over %d requests, 6 callers: %v (slow instance %.1f%%)", total, got, 100*float64(got[slow.Name])/float64(max(total, 1)))
			if total < 100 {
				t.Fatalf("only %d successful requests; too few to judge", total)
			}
			if got[slow.Name]*100 >= total*5 {
				t.Errorf("least_request: the slow instance (+100ms) got %d of %d requests (%.1f%%), want < 5%%; all: %v",
					got[slow.Name], total, 100*float64(got[slow.Name])/float64(total), got)
			}
			if got[fast1.Name] == 0 || got[fast2.Name] == 0 {
				t.Errorf("least_request: both fast instances should serve: %v", got)
			}
		})
	}
}
