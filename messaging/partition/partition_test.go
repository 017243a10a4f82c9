package partition

import (
	"fmt"
	"testing"
)

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("notifier-%d", i+1)
	}
	return out
}

func TestOwnersSpreadEvenly(t *testing.T) {
	for _, tc := range []struct {
		n        int
		min, max int
	}{
		{1, 16, 16},
		{2, 8, 8},
		{3, 5, 6},
		{4, 4, 4},
		{5, 1, 4}, // ceil(16/5) = 4 at most; everyone gets some
		{16, 1, 1},
		{20, 0, 1},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			owners := Owners(ids(tc.n))
			for p, o := range owners {
				if o == "" {
					t.Fatalf("partition %d has no owner", p)
				}
			}
			for _, id := range ids(tc.n) {
				got := len(OwnedBy(owners, id))
				if got < tc.min || got > tc.max {
					t.Errorf("%s owns %d partitions, want %d..%d (%v)", id, got, tc.min, tc.max, owners)
				}
			}
		})
	}
}

func TestOwnersIgnoreOrderAndDuplicates(t *testing.T) {
	a := Owners([]string{"c", "a", "b"})
	b := Owners([]string{"a", "b", "c", "b"})
	if a != b {
		t.Fatalf("%v != %v", a, b)
	}
	if Owners(nil) != ([Count]string{}) {
		t.Fatal("no instances must give no owners")
	}
}

// One instance more or fewer moves a bounded share of the partitions, not
// all of them (what modulo placement would do).
func TestOwnersMoveLittle(t *testing.T) {
	for n := 2; n <= 8; n++ {
		before, after := Owners(ids(n)), Owners(ids(n+1))
		moved := 0
		for p := range Count {
			if before[p] != after[p] {
				moved++
			}
		}
		// The newcomer must take about Count/(n+1); placing by position
		// (p mod n) would move most of them.
		if most := Count / 2; moved > most {
			t.Errorf("%d → %d instances moved %d partitions, want ≤ %d", n, n+1, moved, most)
		}
	}
}

func TestOfIsStableAndInRange(t *testing.T) {
	seen := map[int]bool{}
	for i := range 1000 {
		k := fmt.Sprintf("acct-%d", i)
		p := Of(k)
		if p < 0 || p >= Count || p != Of(k) {
			t.Fatalf("Of(%q) = %d", k, p)
		}
		seen[p] = true
	}
	if len(seen) != Count {
		t.Fatalf("1000 keys hit %d of %d partitions", len(seen), Count)
	}
}
