package messaging

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// Per-key order holds across the instances of a service, not just within
// one: three instances share a subscription with concurrency 4; one of them
// is killed (-9) mid-stream and a fourth joins, so partitions change hands
// both ways (a dead holder's lease running out, a rebalance). Judged from
// the apps' own records: no two deliveries of one key ever overlap in time,
// across instances, and no message of a key is delivered before every
// earlier message of that key has been (a handover may deliver some again:
// at-least-once).
func TestKeyOrderAcrossInstances(t *testing.T) { keyOrderAcrossInstances(t, "") }

// The same with batched callbacks of up to 20 messages: a handover cuts
// or drops a batch mid-way, never reorders a key.
func TestBatchCallbackKeyOrderAcrossInstances(t *testing.T) {
	keyOrderAcrossInstances(t, "  batch: {maxMessages: 20, maxWait: 5ms}\n")
}

func keyOrderAcrossInstances(t *testing.T, extraSpec string) {
	const keys, per = 60, 40
	const total = keys * per
	c := startControl(t)
	c.apply(subscription("ledger", "ledger", "account.moved", "/events/moved",
		"  concurrency: 4\n  backoff: {initial: 20ms, max: 100ms}\n"+extraSpec))
	c.waitSubscription("account.moved", "ledger")
	app := []string{"--delay", "20ms", "--retry-first-every", "17"}
	subs := []*unit{
		startSub(t, c, "ledger", "ledger-1", nil, app...),
		startSub(t, c, "ledger", "ledger-2", nil, app...),
		startSub(t, c, "ledger", "ledger-3", nil, app...),
	}
	pub := startPub(t, c, "accounts")
	files := func() []string {
		var out []string
		for _, u := range subs {
			out = append(out, u.record)
		}
		return out
	}
	ackedNow := func() int { got, _ := acked(records(t, files()...)); return len(got) }

	// Each key's messages are published in order by one goroutine.
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range per {
				for k := g; k < keys; k += 6 {
					id := fmt.Sprintf("k%03d-%02d", k, n)
					if _, err := publishRetrying(pub.outbound, "account.moved", id, fmt.Sprintf("acct-%03d", k), strconv.Itoa(n), 10*time.Second); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}

	if !harness.Poll(60*time.Second, func() bool { return ackedNow() >= total/4 }) {
		t.Fatalf("only %d of %d acked before the kill", ackedNow(), total)
	}
	subs[1].p.Kill()
	t.Logf("killed ledger-2 (-9) at %d acked", ackedNow())
	if !harness.Poll(60*time.Second, func() bool { return ackedNow() >= total/2 }) {
		t.Fatalf("only %d of %d acked after the kill: ledger-2's partitions were not taken over", ackedNow(), total)
	}
	subs = append(subs, startSub(t, c, "ledger", "ledger-4", nil, app...))
	t.Logf("ledger-4 joined at %d acked", ackedNow())
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !harness.Poll(120*time.Second, func() bool { return ackedNow() == total }) {
		t.Fatalf("%d of %d acked", ackedNow(), total)
	}

	rs := records(t, files()...)
	dups, perInst := checkKeyOrder(t, rs)
	t.Logf("%d deliveries for %d messages over %d keys (%d again after a handover or retry), per instance %v", len(rs), total, keys, dups, perInst)
	for _, name := range []string{"ledger-1", "ledger-3", "ledger-4"} {
		if perInst[name] == 0 {
			t.Errorf("%s delivered nothing: the partitions are not shared (%v)", name, perInst)
		}
	}
}

// checkKeyOrder fails t if two deliveries of one key overlapped in time
// (on any instances), or a message of a key (its body: its number within
// the key, from 0) was delivered before every earlier one of the key had
// been. It returns how many deliveries repeated a message, and deliveries
// per instance.
func checkKeyOrder(t *testing.T, rs []record) (dups int, perInst map[string]int) {
	t.Helper()
	byKey := map[string][]record{}
	perInst = map[string]int{}
	for _, r := range rs {
		if r.Key == "" {
			t.Fatalf("a delivery without its key: %+v", r)
		}
		byKey[r.Key] = append(byKey[r.Key], r)
		perInst[r.Inst]++
	}
	for key, ds := range byKey {
		slices.SortFunc(ds, func(a, b record) int { return cmp.Compare(a.Start, b.Start) })
		seen := map[int]bool{}
		for i, r := range ds {
			n, _ := strconv.Atoi(r.Body)
			if r.Overlap || i > 0 && r.Start < ds[i-1].At {
				t.Errorf("key %s: message %d (on %s) delivered while message %s of the key was in delivery on %s", key, n, r.Inst, ds[i-1].Body, ds[i-1].Inst)
			}
			for m := range n {
				if !seen[m] {
					t.Errorf("key %s: message %d delivered (on %s) before message %d ever was", key, n, r.Inst, m)
					break
				}
			}
			if seen[n] {
				dups++
			}
			seen[n] = true
		}
	}
	return dups, perInst
}
