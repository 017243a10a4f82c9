// Package partition spreads ordering keys over a fixed number of
// partitions and partitions over the instances of a service.
//
// A keyed message goes to partition Of(key); each partition is delivered
// by one instance at a time (the one holding its lease), which is what
// keeps one key's messages in order across a service's instances. Owners
// decides which instance should hold which partition: every instance
// computes it from the same list of instances, so they agree without
// talking to each other.
//
// Owners is rendezvous hashing with bounded load: each partition ranks the
// instances by hash(instance, partition) and goes to the best-ranked one
// that still has room (at most ceil(Count/n) partitions each). Ranking
// keeps most partitions where they are when an instance comes or goes;
// the bound keeps the spread even when there are few instances, where
// plain rendezvous hashing is lumpy (2 instances could split 16 as 5/11).
package partition

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Count is the number of partitions of every topic. It is part of the
// wire format: publishers and subscribers must agree on it, so it is a
// constant, not a setting.
const Count = 16

// Of is the partition of an ordering key.
func Of(key string) int { return int(xxhash.Sum64String(key) % Count) }

// Owners returns the id of the instance that should hold each partition.
// The order of ids and duplicates in it do not matter. With no ids every
// entry is "".
func Owners(ids []string) [Count]string {
	var out [Count]string
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	n := len(ids)
	if n == 0 {
		return out
	}
	limit := (Count + n - 1) / n
	load := make(map[string]int, n)
	type choice struct {
		score uint64
		id    string
	}
	ranked := make([]choice, n)
	// Partitions are placed in a fixed order, so every instance computing
	// this from the same ids gets the same answer.
	for p := range Count {
		for i, id := range ids {
			ranked[i] = choice{score: xxhash.Sum64String(id + "\x00" + strconv.Itoa(p)), id: id}
		}
		slices.SortFunc(ranked, func(a, b choice) int {
			if c := cmp.Compare(b.score, a.score); c != 0 {
				return c
			}
			return cmp.Compare(a.id, b.id)
		})
		for _, c := range ranked {
			if load[c.id] < limit {
				out[p] = c.id
				load[c.id]++
				break
			}
		}
	}
	return out
}

// OwnedBy returns the partitions owners gives to id.
func OwnedBy(owners [Count]string, id string) []int {
	var out []int
	for p, o := range owners {
		if o == id {
			out = append(out, p)
		}
	}
	return out
}
