package faults

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestModelRule checks the model on sequential histories of one client:
// what bounded staleness allows and what the rule forbids.
func TestModelRule(t *testing.T) {
	alloc := func(d, a int) (Input, Output) {
		return Input{Kind: Alloc, Client: "x", Domain: d}, Output{Outcome: OK, Addr: a}
	}
	exhausted := func(d int) (Input, Output) {
		return Input{Kind: Alloc, Client: "x", Domain: d}, Output{Outcome: Exhausted}
	}
	release := func(d int) (Input, Output) {
		return Input{Kind: Release, Client: "x", Domain: d}, Output{Outcome: OK, Released: true}
	}
	lookup := func(a, d int) (Input, Output) {
		if d < 0 {
			return Input{Kind: Lookup, Client: "x", Addr: a}, Output{Outcome: NotFound}
		}
		return Input{Kind: Lookup, Client: "x", Addr: a}, Output{Outcome: OK, Domain: d}
	}
	type op struct {
		in  Input
		out Output
	}
	o := func(in Input, out Output) op { return op{in, out} }
	fill := func(n int) []op { // domains 0..n-1 on addresses 0..n-1
		var ops []op
		for d := range n {
			ops = append(ops, o(alloc(d, d)))
		}
		return ops
	}
	cases := []struct {
		name  string
		ops   []op
		legal bool
	}{
		{"lowest free address", []op{o(alloc(0, 0)), o(alloc(1, 1))}, true},
		{"skipping a never-used address", []op{o(alloc(0, 1))}, false},
		{"stale lookup of a released, held address", []op{o(alloc(0, 0)), o(release(0)), o(lookup(0, 0))}, true},
		{"stale alloc of a released, held address", []op{o(alloc(0, 0)), o(release(0)), o(alloc(0, 0)), o(lookup(0, -1))}, true},
		{"skipping a held address", []op{o(alloc(0, 0)), o(release(0)), o(alloc(1, 1))}, true},
		{"the hold lifted", []op{o(alloc(0, 0)), o(release(0)), o(alloc(1, 0))}, true},
		{"lookup naming the old domain after reassignment", []op{o(alloc(0, 0)), o(release(0)), o(alloc(1, 0)), o(lookup(0, 0))}, false},
		{"alloc answering the old address after reassignment", []op{o(alloc(0, 0)), o(release(0)), o(alloc(1, 0)), o(alloc(0, 0))}, false},
		{"stale alloc after the domain got a new address", []op{o(alloc(0, 0)), o(release(0)), o(alloc(0, 1)), o(alloc(0, 0)), o(lookup(1, 0))}, true},
		{"lookup miss while mapped", []op{o(alloc(0, 0)), o(lookup(0, -1))}, false},
		{"exhausted with every free address held", append(fill(PoolSize), o(release(3)), o(exhausted(PoolSize))), true},
		{"exhausted with a free address never held", append(fill(PoolSize-1), o(exhausted(PoolSize))), false},
		{"exhausted when full", append(fill(PoolSize), o(exhausted(PoolSize))), true},
		{"exhausted for a mapped domain", []op{o(alloc(0, 0)), o(exhausted(0))}, false},
		{"ghost cleared by reallocation, then released again", []op{o(alloc(0, 0)), o(release(0)), o(alloc(1, 0)), o(release(1)), o(lookup(0, 0))}, false},
	}
	for _, c := range cases {
		var h []porcupine.Operation
		for i, x := range c.ops {
			h = append(h, porcupine.Operation{ClientId: 0, Input: x.in, Output: x.out, Call: int64(2 * i), Return: int64(2*i + 1)})
		}
		if got := porcupine.CheckOperations(Model, h); got != c.legal {
			t.Errorf("%s: legal = %v, want %v", c.name, got, c.legal)
		}
	}

	// An allocation whose outcome is unknown may have taken a held
	// address's successor: later answers can follow either choice.
	u := []porcupine.Operation{}
	add := func(in Input, out Output, call, ret int64) {
		u = append(u, porcupine.Operation{Input: in, Output: out, Call: call, Return: ret})
	}
	in, out := alloc(0, 0)
	add(in, out, 0, 1)
	in, out = release(0)
	add(in, out, 2, 3)
	add(Input{Kind: Alloc, Client: "x", Domain: 1}, Output{Outcome: Unknown}, 4, infinity)
	in, out = lookup(1, 1)
	add(in, out, 5, 6)
	if !porcupine.CheckOperations(Model, u) {
		t.Errorf("an unknown allocation that skipped a held address is not accepted")
	}

	// Allocations whose outcome is unknown, settled by later answers.
	// Every case starts with address 0 held (released from domain 0).
	unknown := func(d int) op { return op{Input{Kind: Alloc, Client: "x", Domain: d}, Output{Outcome: Unknown}} }
	list := func(m map[int]int) op {
		o := Output{Outcome: OK}
		for a := range o.Mappings {
			o.Mappings[a] = -1
		}
		for a, d := range m {
			o.Mappings[a] = int8(d)
		}
		return op{Input{Kind: List, Client: "x"}, o}
	}
	held := []op{o(alloc(0, 0)), o(release(0))}
	pending := []struct {
		name  string
		ops   []op
		legal bool
	}{
		{"took the held address", []op{unknown(1), o(lookup(0, 1))}, true},
		{"took the next one", []op{unknown(1), o(lookup(1, 1))}, true},
		{"took one past a never-used address", []op{unknown(1), o(lookup(2, 1))}, false},
		{"did not happen", []op{unknown(1), o(lookup(0, -1)), o(lookup(1, -1)), o(alloc(2, 1))}, true},
		{"ruled out everywhere, then found", []op{unknown(1), o(lookup(0, -1)), o(lookup(1, -1)), o(lookup(1, 1))}, false},
		{"settled, then answered elsewhere", []op{unknown(1), o(lookup(1, 1)), o(alloc(1, 0))}, false},
		{"settled by an allocation of the same domain", []op{unknown(1), o(alloc(1, 1)), o(lookup(1, 1))}, true},
		{"another domain took its only choice", []op{unknown(1), o(lookup(0, -1)), o(alloc(2, 1)), o(lookup(1, 1))}, false},
		{"released without a trace", []op{unknown(1), o(release(1)), o(lookup(1, 1))}, true},
		{"released: a never-used address is still free", []op{unknown(1), o(release(1)), o(exhausted(2)), o(alloc(3, 2))}, false},
		{"a stale answer rules out the other domain", []op{unknown(1), o(lookup(0, 0)), o(lookup(0, 1))}, false},
		{"list shows it", []op{unknown(1), list(map[int]int{1: 1})}, true},
		{"list shows it where it could not be", []op{unknown(1), list(map[int]int{2: 1})}, false},
		{"list does not show it", []op{unknown(1), list(map[int]int{})}, true},
		{"two pending, apart", []op{unknown(1), unknown(2), o(lookup(0, 2)), o(lookup(1, 1))}, true},
	}
	for _, c := range pending {
		var h []porcupine.Operation
		for i, x := range append(append([]op(nil), held...), c.ops...) {
			h = append(h, porcupine.Operation{Input: x.in, Output: x.out, Call: int64(2 * i), Return: int64(2*i + 1)})
		}
		if got := porcupine.CheckOperations(Model, h); got != c.legal {
			t.Errorf("unknown outcome: %s: legal = %v, want %v", c.name, got, c.legal)
		}
	}
}
