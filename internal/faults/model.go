package faults

import (
	"fmt"
	"hash/fnv"
	"math/bits"
	"net/netip"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/ippool/ippool/pool"
)

// The workload is small on purpose, so that collisions, exhaustion and
// reuse of released addresses happen often: every client has a pool of
// PoolSize addresses (PoolFirst and up) and asks for NumDomains domains,
// more than fit.
const (
	PoolSize   = 16
	NumDomains = 20
)

// PoolFirst is the first pool address; the pool is PoolFirst..PoolFirst+15.
var PoolFirst = netip.MustParseAddr("10.9.0.1")

// PoolFlag is the --pool flag matching the model.
func PoolFlag() string {
	last := PoolFirst
	for range PoolSize - 1 {
		last = last.Next()
	}
	return PoolFirst.String() + "-" + last.String()
}

// DomainName is the name of domain number i.
func DomainName(i int) string { return fmt.Sprintf("d%02d.example", i) }

func domainIndex(name string) (int, bool) {
	var i int
	if _, err := fmt.Sscanf(name, "d%02d.example", &i); err != nil || i < 0 || i >= NumDomains || DomainName(i) != name {
		return 0, false
	}
	return i, true
}

// PoolAddr is the address at pool index i.
func PoolAddr(i int) netip.Addr {
	a := PoolFirst
	for range i {
		a = a.Next()
	}
	return a
}

func addrIndex(s string) (int, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return 0, false
	}
	for i := range PoolSize {
		if PoolAddr(i) == a {
			return i, true
		}
	}
	return 0, false
}

// Kind is what an operation does.
type Kind uint8

const (
	Alloc   Kind = iota // POST /v1/clients/{c}/domains/{d}
	Lookup              // GET /v1/clients/{c}/ips/{ip}
	Release             // DELETE /v1/clients/{c}/domains/{d}
	List                // GET /v1/clients/{c}?consistent=true, after healing
)

func (k Kind) String() string {
	return [...]string{"alloc", "lookup", "release", "list"}[k]
}

// Input is an operation as invoked.
type Input struct {
	Kind   Kind
	Client string
	Domain int // Alloc, Release
	Addr   int // Lookup: pool index
}

// Outcome says how an operation ended.
type Outcome uint8

const (
	// OK: 200 with a body (alloc: Addr; lookup: Domain; release: Released;
	// list: Mappings).
	OK Outcome = iota
	// NotFound: lookup answered 404.
	NotFound
	// Exhausted: alloc answered 409 pool_exhausted.
	Exhausted
	// Unknown: a timeout, a broken connection or a 503. A write may or may
	// not have happened (and may still happen); the history gives it an
	// infinite return time so it can be linearized anywhere after its call.
	Unknown
)

// Output is how an operation ended.
type Output struct {
	Outcome  Outcome
	Addr     int  // alloc
	Domain   int  // lookup hit
	Released bool // release
	// Mappings is the client's whole mapping for list: index by address,
	// -1 when the address is free.
	Mappings [PoolSize]int8
}

// ReuseHold is Q, how long a released address stays away from every domain
// of its client. The model needs no clock: it only says that a released
// address MAY still be held. The direct checks use it as the bound on how
// stale an answer can be (B < Q).
const ReuseHold = pool.ReuseHold

// state is one client's state in the model: for each pool address the
// domain it maps to (0 free, d+1 mapped to domain d); for each address the
// domains it lost to a release since it was last allocated ("ghosts"); and
// for each domain given an address by an allocation whose outcome is
// unknown, the addresses it may have taken ("pending").
//
// The rule every answer keeps: NO ANSWER PAIRS AN ADDRESS WITH A DOMAIN
// WHILE THAT ADDRESS BELONGS TO ANOTHER DOMAIN OF THE SAME CLIENT.
//
// Why the model is not plain linearizability: staleness is bounded, not
// absent. A lookup hit, and an allocation of a domain the client already
// has, are answered from the local state of the server asked, with no round
// to the leader, while that server is current (it completed a read-index
// round with the leader within B, its --raft-timeout). Such an answer may
// lag by up to B: it may still name a mapping that a release has just
// removed. A server cut off from the leader stops answering locally within
// B and sends those requests through the read barrier, which fails with
// no_quorum (an Unknown outcome here). The lag is harmless because of holds:
// a release puts the freed address on hold for its client, and the leader
// lifts the hold only Q = ReuseHold > B after the release committed; until
// then no domain of that client is given the address. So while a stale
// server can still answer d for address a, a belongs to no other domain.
//
// In the model, ghost[a] holds the domains a lost to releases, and is
// CLEARED when a is allocated again (to any domain): from then on a means
// that domain, and an answer naming an old one is wrong. A ghosted free
// address may still be held or not (the model has no clock). Hence:
//   - Lookup hit a -> d: a maps to d, or a is free and d is a ghost of a
//     (stale by at most B; the address is still held).
//   - Lookup miss: a is free (strict; a miss is confirmed through the read
//     barrier, S4).
//   - Alloc d -> a: d maps to a; or d has no address, a is free and every
//     free address below a may be held, which maps a to d and clears its
//     ghosts (S2 order: the lowest free address that is not held); or, as a
//     stale answer changing nothing, a is free and d is a ghost of a.
//   - Alloc exhausted: d has no address and no free address is certainly
//     unheld (every free address has a ghost, or none is free).
//   - Release and List go through the leader's log and are strict.
//
// An allocation whose outcome is unknown may have taken any of several
// addresses, or none. Branching into one state per choice makes the
// checker's state sets grow exponentially with such operations (holds leave
// many free addresses that may be held), so the choice stays symbolic:
// pend[d] is the set of addresses d may have (bit a), plus pendNone when d
// may have none, and later answers narrow it (a hit naming d at a settles
// it; a miss, or a at another domain, rules a out). Where two pending
// domains might have taken the same address the model does not track that
// they exclude each other until one is settled: it then accepts a little
// more than the rule allows, never less.
type state struct {
	m     [PoolSize]uint8
	ghost [PoolSize]uint32
	pend  [NumDomains]uint32
}

// pendNone, in pend[d], says d may have no address at all.
const pendNone = 1 << PoolSize

const allAddrs = 1<<PoolSize - 1

func (s state) domainAddr(d int) (int, bool) {
	for a, v := range s.m {
		if int(v) == d+1 {
			return a, true
		}
	}
	return 0, false
}

// mapped says whether d certainly has an address: in m, or pending with
// no chance of none.
func (s state) mapped(d int) bool {
	if _, ok := s.domainAddr(d); ok {
		return true
	}
	return s.pend[d] != 0 && s.pend[d]&pendNone == 0
}

func (s state) free() uint32 {
	var f uint32
	for a, v := range s.m {
		if v == 0 {
			f |= 1 << a
		}
	}
	return f
}

// maybeTaken says whether a pending domain may have taken a.
func (s state) maybeTaken(a int) bool {
	for _, p := range s.pend {
		if p&(1<<a) != 0 {
			return true
		}
	}
	return false
}

// candidates returns the addresses an allocation of a domain with no
// address may take: free addresses with every free address below them
// possibly held (or possibly taken). The lowest free address is always one.
// exhausted says whether the allocation may instead fail: no free address
// is certainly unheld.
func (s state) candidates() (mask uint32, exhausted bool) {
	for a, v := range s.m {
		if v != 0 {
			continue
		}
		mask |= 1 << a
		if s.ghost[a] == 0 && !s.maybeTaken(a) {
			return mask, false // certainly not held: nothing above it is taken
		}
	}
	return mask, true
}

// settle narrows the pending sets to free addresses and settles the ones
// left with one choice; ok is false when a pending domain has none left.
func (s state) settle() (state, bool) {
	for changed := true; changed; {
		changed = false
		free := s.free() | pendNone
		for d, p := range s.pend {
			if p == 0 {
				continue
			}
			p &= free
			switch {
			case p == 0:
				return s, false
			case p == pendNone:
				p = 0 // it has no address
			case p&pendNone == 0 && bits.OnesCount32(p) == 1:
				a := bits.TrailingZeros32(p)
				s.m[a], s.ghost[a], p = uint8(d+1), 0, 0
				changed = true
			}
			s.pend[d] = p
		}
	}
	return s, true
}

// take maps a to d: a new allocation, or the settling of d's pending one.
func (s state) take(a, d int) (state, bool) {
	s.pend[d] = 0
	s.m[a] = uint8(d + 1)
	s.ghost[a] = 0
	return s.settle()
}

// notTaken records that no pending domain but except has a.
func (s state) notTaken(a, except int) (state, bool) {
	for d := range s.pend {
		if d != except {
			s.pend[d] &^= 1 << a
		}
	}
	return s.settle()
}

// unmapped records that d has no address (it may have been pending).
func (s state) unmapped(d int) (state, bool) {
	if s.mapped(d) {
		return s, false
	}
	s.pend[d] = 0
	return s, true
}

func (s state) release(d int) (state, bool) {
	if a, ok := s.domainAddr(d); ok {
		s.m[a] = 0
		s.ghost[a] |= 1 << d
		return s, true
	}
	if p := s.pend[d]; p != 0 {
		// Whichever address d had is free and held now; the model
		// marks every one it might have been.
		for a := range PoolSize {
			if p&(1<<a) != 0 {
				s.ghost[a] |= 1 << d
			}
		}
		s.pend[d] = 0
		return s, p&allAddrs != 0
	}
	return s, false
}

// stale reports whether a is an address d had before a release, not given
// to any domain since: an answer a server may still give for up to B.
func (s state) stale(a, d int) bool {
	return s.m[a] == 0 && s.ghost[a]&(1<<d) != 0
}

// step returns every state the operation can leave s in with that output;
// none when the output is impossible from s.
func step(st, in, out any) []any {
	s := st.(state)
	i := in.(Input)
	o := out.(Output)
	var next []any
	add := func(ns state, ok bool) {
		if ok {
			next = append(next, ns)
		}
	}
	switch i.Kind {
	case Alloc:
		d := i.Domain
		certainly := s.mapped(d)
		switch o.Outcome {
		case Unknown:
			if certainly {
				return []any{s}
			}
			// Where d has no address yet: one of the candidates, or
			// none (the allocation failed, or may still happen: the
			// same as happening last).
			mask, _ := s.candidates()
			ns := s
			ns.pend[d] |= mask | pendNone
			add(ns.settle())
		case Exhausted:
			if _, exhausted := s.candidates(); exhausted {
				add(s.unmapped(d))
			}
		case OK:
			a := o.Addr
			if a < 0 || a >= PoolSize {
				return nil
			}
			if int(s.m[a]) == d+1 {
				next = append(next, s)
			}
			if s.pend[d]&(1<<a) != 0 {
				add(s.take(a, d)) // settles d's pending allocation
			}
			if !certainly {
				// A new allocation, where d has no address.
				if mask, _ := s.candidates(); mask&(1<<a) != 0 {
					add(s.take(a, d))
				}
			}
			if s.stale(a, d) {
				add(s.notTaken(a, d)) // a belongs to no other domain
			}
		}
	case Release:
		ns, had := s.release(i.Domain)
		switch o.Outcome {
		case Unknown:
			next = append(next, ns)
		case OK:
			switch {
			case had && o.Released:
				next = append(next, ns)
			case !o.Released:
				add(s.unmapped(i.Domain))
			}
		}
	case Lookup:
		a := i.Addr
		switch o.Outcome {
		case NotFound:
			if s.m[a] == 0 {
				add(s.notTaken(a, -1))
			}
		case OK:
			d := o.Domain
			if d < 0 {
				return nil
			}
			if int(s.m[a]) == d+1 {
				next = append(next, s)
			}
			if s.pend[d]&(1<<a) != 0 {
				add(s.take(a, d))
			}
			if s.stale(a, d) {
				add(s.notTaken(a, d))
			}
		}
	case List:
		if o.Outcome != OK {
			return nil
		}
		ns := s
		for a := range PoolSize {
			d := int(o.Mappings[a])
			if d < 0 || int(ns.m[a]) == d+1 {
				continue
			}
			if ns.m[a] != 0 || ns.pend[d]&(1<<a) == 0 {
				return nil
			}
			ns.m[a], ns.ghost[a], ns.pend[d] = uint8(d+1), 0, 0
		}
		for a, v := range ns.m {
			if int(v)-1 != int(o.Mappings[a]) {
				return nil
			}
		}
		for d, p := range ns.pend {
			if p != 0 && p&pendNone == 0 {
				return nil
			}
			ns.pend[d] = 0
		}
		next = append(next, ns)
	}
	return next
}

// Model is the porcupine model of the rule above (and S1–S6) for this
// workload. Clients are independent (each has the whole pool), so the
// history is partitioned by client and each partition checked alone.
var Model = (&porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range h {
			c := op.Input.(Input).Client
			by[c] = append(by[c], op)
		}
		keys := make([]string, 0, len(by))
		for k := range by {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() []any { return []any{state{}} },
	Step: step,
	Hash: func(st any) uint64 {
		s := st.(state)
		h := fnv.New64a()
		h.Write(s.m[:])
		for _, g := range s.ghost {
			h.Write([]byte{byte(g), byte(g >> 8), byte(g >> 16), byte(g >> 24)})
		}
		for _, p := range s.pend {
			h.Write([]byte{byte(p), byte(p >> 8), byte(p >> 16)})
		}
		return h.Sum64()
	},
	DescribeOperation: func(in, out any) string { return describe(in.(Input), out.(Output)) },
	DescribeState: func(st any) string {
		s := st.(state)
		var b strings.Builder
		for a, v := range s.m {
			switch {
			case v != 0:
				fmt.Fprintf(&b, "%v=%s ", PoolAddr(a), DomainName(int(v)-1))
			case s.ghost[a] != 0:
				fmt.Fprintf(&b, "%v=free(was", PoolAddr(a))
				for d := range NumDomains {
					if s.ghost[a]&(1<<d) != 0 {
						fmt.Fprintf(&b, " %s", DomainName(d))
					}
				}
				b.WriteString(") ")
			}
		}
		for d, p := range s.pend {
			if p != 0 {
				fmt.Fprintf(&b, "%s=one of(", DomainName(d))
				for a := range PoolSize {
					if p&(1<<a) != 0 {
						fmt.Fprintf(&b, " %v", PoolAddr(a))
					}
				}
				if p&pendNone != 0 {
					b.WriteString(" none")
				}
				b.WriteString(") ")
			}
		}
		return b.String()
	},
}).ToModel()

func describe(i Input, o Output) string {
	var arg string
	switch i.Kind {
	case Alloc, Release:
		arg = DomainName(i.Domain)
	case Lookup:
		arg = PoolAddr(i.Addr).String()
	}
	var res string
	switch o.Outcome {
	case Unknown:
		res = "unknown"
	case NotFound:
		res = "not found"
	case Exhausted:
		res = "exhausted"
	case OK:
		switch i.Kind {
		case Alloc:
			res = PoolAddr(o.Addr).String()
		case Lookup:
			res = DomainName(o.Domain)
		case Release:
			res = fmt.Sprint(o.Released)
		case List:
			var parts []string
			for a, d := range o.Mappings {
				if d >= 0 {
					parts = append(parts, fmt.Sprintf("%v=%s", PoolAddr(a), DomainName(int(d))))
				}
			}
			res = "{" + strings.Join(parts, " ") + "}"
		}
	}
	return fmt.Sprintf("%s(%s %s) -> %s", i.Kind, i.Client, arg, res)
}
