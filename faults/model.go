package faults

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
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

// state is one client's state in the model: for each pool address the
// domain it maps to (0 free, d+1 mapped to domain d), and for each address
// the set of domains it has ever been mapped to and lost ("ghosts").
//
// Why ghosts. By DESIGN.md's consistency table a lookup HIT is answered from
// the local state of whichever server is asked, and "may lag the leader by
// the replication delay" — without bound while that server is cut off from
// the majority (a deposed leader in a minority keeps answering local reads).
// So a hit is not linearizable and must not be checked as if it were. What a
// hit must never be is wrong: it may only name a domain that the address
// maps to now, or did map to earlier in the linearization (a stale but real
// mapping). A lookup MISS is confirmed through the read barrier (S4), so it
// is checked strictly: the address is free in the linearized state at some
// point within the call. Allocations and releases go through the leader's
// log, and are checked strictly, including S2's deterministic order (the
// lowest free address) and S1's "one domain per address".
type state struct {
	m     [PoolSize]uint8
	ghost [PoolSize]uint32
}

func (s state) domainAddr(d int) (int, bool) {
	for a, v := range s.m {
		if int(v) == d+1 {
			return a, true
		}
	}
	return 0, false
}

// alloc applies an allocation: the existing address, else the lowest free
// one (S2: fresh addresses, lowest first; nothing expires in a test since the
// lifetime is 48h), else exhaustion.
func (s state) alloc(d int) (state, int, bool) {
	if a, ok := s.domainAddr(d); ok {
		return s, a, true
	}
	for a, v := range s.m {
		if v == 0 {
			s.m[a] = uint8(d + 1)
			return s, a, true
		}
	}
	return s, 0, false
}

func (s state) release(d int) (state, bool) {
	a, ok := s.domainAddr(d)
	if !ok {
		return s, false
	}
	s.m[a] = 0
	s.ghost[a] |= 1 << d
	return s, true
}

func step(st any, in, out any) (bool, any) {
	s := st.(state)
	i := in.(Input)
	o := out.(Output)
	switch i.Kind {
	case Alloc:
		ns, a, ok := s.alloc(i.Domain)
		switch o.Outcome {
		case Unknown:
			return true, ns
		case Exhausted:
			return !ok, s
		case OK:
			if TolerateStaleFastPath && o.Addr >= 0 && s.ghost[o.Addr]&(1<<i.Domain) != 0 && (!ok || a != o.Addr) {
				// A stale S7 answer: a read of a mapping since released.
				return true, s
			}
			return ok && a == o.Addr, ns
		}
	case Release:
		ns, had := s.release(i.Domain)
		switch o.Outcome {
		case Unknown:
			return true, ns
		case OK:
			return had == o.Released, ns
		}
	case Lookup:
		switch o.Outcome {
		case NotFound:
			return s.m[i.Addr] == 0, s
		case OK:
			if o.Domain < 0 {
				return false, s
			}
			return int(s.m[i.Addr]) == o.Domain+1 || s.ghost[i.Addr]&(1<<o.Domain) != 0, s
		}
	case List:
		for a, v := range s.m {
			if int(v)-1 != int(o.Mappings[a]) {
				return false, s
			}
		}
		return o.Outcome == OK, s
	}
	return false, s
}

// TolerateStaleFastPath, when set (flag -faults.tolerate-stale-alloc), lets
// an allocation answer a mapping its domain HAD but lost to a release, as a
// stale read. The S7 fast path does that today (see
// TestStaleFastPathAfterRelease); the switch exists so the rest of the
// checks can still be measured while that bug stands. It is off by default.
var TolerateStaleFastPath bool

// Model is the porcupine model of S1–S6 for this workload. Clients are
// independent (each has the whole pool), so the history is partitioned by
// client and each partition checked alone.
var Model = porcupine.Model{
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
	Init: func() any { return state{} },
	Step: step,
	Hash: func(st any) uint64 {
		s := st.(state)
		h := fnv.New64a()
		h.Write(s.m[:])
		for _, g := range s.ghost {
			h.Write([]byte{byte(g), byte(g >> 8), byte(g >> 16), byte(g >> 24)})
		}
		return h.Sum64()
	},
	DescribeOperation: func(in, out any) string { return describe(in.(Input), out.(Output)) },
	DescribeState: func(st any) string {
		s := st.(state)
		var b strings.Builder
		for a, v := range s.m {
			if v != 0 {
				fmt.Fprintf(&b, "%v=%s ", PoolAddr(a), DomainName(int(v)-1))
			}
		}
		return b.String()
	},
}

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
