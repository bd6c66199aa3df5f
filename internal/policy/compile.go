package policy

import (
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/ippool/ippool/pool"
)

// Action is what a rule does with what it matches.
type Action uint8

const (
	Allow Action = iota
	Deny
	// Egress allows, from one of the rule's source addresses.
	Egress
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case Egress:
		return "egress"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

func parseAction(s string) (Action, bool) {
	switch s {
	case "allow":
		return Allow, true
	case "deny":
		return Deny, true
	case "egress":
		return Egress, true
	}
	return 0, false
}

// Proto is a flow's transport.
type Proto uint8

const (
	TCP Proto = iota + 1
	UDP
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "any"
}

type portRange struct {
	proto    Proto
	from, to uint16
}

// compiledRule is a rule as checks read it.
type compiledRule struct {
	name        string
	action      Action
	anyPort     bool
	ports       []portRange
	egress      []netip.Addr
	maxMappings int
}

// bitset has one bit per rule, rule i at bit i.
type bitset []uint64

func (b bitset) set(i int) { b[i/64] |= 1 << (i % 64) }

// words is the most any bitset of a policy holds (MaxRules bits).
const words = MaxRules / 64

// Policy is a compiled document. It is immutable but for its hit counters;
// checks on it are safe from any goroutine.
type Policy struct {
	doc   Document
	rules []compiledRule
	n     int // words in use
	deny  bool

	// Client indexes.
	anyClient bitset
	ids       map[string]bitset
	idPrefix  map[string]bitset
	idPrefLen []int // distinct prefix lengths, longest first
	cidrs     map[netip.Prefix]bitset
	cidrBits4 []int
	cidrBits6 []int
	tags      map[string]bitset
	users     map[string]bitset

	// Domain indexes.
	anyDomain bitset
	exact     map[string]bitset
	suffixes  map[string]bitset // "*.example.com" stored as "example.com"

	// portless are the rules a check without a port (DNS, allocation)
	// reads: every rule but a deny limited to some ports, since other
	// ports of the same name may be allowed.
	portless bitset

	hits        []atomic.Uint64
	defaultHits atomic.Uint64
}

// Document is the document the policy was compiled from.
func (p *Policy) Document() Document { return p.doc }

// Len is the number of rules.
func (p *Policy) Len() int { return len(p.rules) }

// Compile checks a document and builds its indexes.
func Compile(doc Document) (*Policy, error) {
	if len(doc.Rules) > MaxRules {
		return nil, fieldErr(fmt.Sprintf("%d rules; at most %d are allowed", len(doc.Rules), MaxRules), "rules")
	}
	p := &Policy{
		doc: doc, n: (len(doc.Rules) + 63) / 64,
		ids: map[string]bitset{}, idPrefix: map[string]bitset{}, cidrs: map[netip.Prefix]bitset{},
		tags: map[string]bitset{}, users: map[string]bitset{}, exact: map[string]bitset{}, suffixes: map[string]bitset{},
		hits: make([]atomic.Uint64, len(doc.Rules)),
	}
	p.anyClient, p.anyDomain, p.portless = p.newSet(), p.newSet(), p.newSet()
	switch doc.Default {
	case "", "allow":
	case "deny":
		p.deny = true
	default:
		return nil, fieldErr(fmt.Sprintf("default %q is neither allow nor deny", doc.Default), "default")
	}
	selectors := 0
	for name, members := range doc.Groups {
		if !strings.HasPrefix(name, "group:") || len(name) == len("group:") {
			return nil, fieldErr(fmt.Sprintf("a group's name is written group:NAME, not %q", name), "groups", name)
		}
		for j, m := range members {
			if strings.HasPrefix(m, "group:") {
				return nil, fieldErr(fmt.Sprintf("%q: a group holds clients, not other groups", m), "groups", name, j)
			}
			if err := checkClientSelector(m); err != nil {
				return nil, fieldErr(err.Error(), "groups", name, j)
			}
		}
		selectors += len(members)
	}
	names := map[string]int{}
	for i, r := range doc.Rules {
		selectors += len(r.Clients) + len(r.Domains) + len(r.Ports) + len(r.Egress)
		if selectors > MaxSelectors {
			return nil, fieldErr(fmt.Sprintf("the document has over %d selectors, domains, ports and addresses; at most %d are allowed", MaxSelectors, MaxSelectors), "rules", i)
		}
		if r.Name == "" {
			return nil, fieldErr("a rule needs a name (hit counters and denials say it)", "rules", i)
		}
		if r.Name == "default" {
			return nil, fieldErr(`"default" names what decides when no rule matches; give the rule another name`, "rules", i, "name")
		}
		if j, dup := names[r.Name]; dup {
			return nil, fieldErr(fmt.Sprintf("rule name %q is also rule %d's", r.Name, j), "rules", i, "name")
		}
		names[r.Name] = i
		cr := compiledRule{name: r.Name, maxMappings: r.MaxMappings}
		var ok bool
		if cr.action, ok = parseAction(r.Action); !ok {
			return nil, fieldErr(fmt.Sprintf("action %q is not allow, deny or egress", r.Action), "rules", i, "action")
		}
		if r.MaxMappings < 0 {
			return nil, fieldErr("max_mappings is negative", "rules", i, "max_mappings")
		}
		if len(r.Clients) == 0 {
			return nil, fieldErr(`a rule names its clients ("*" for every client)`, "rules", i, "clients")
		}
		if len(r.Domains) == 0 {
			return nil, fieldErr(`a rule names its domains ("*" for every domain)`, "rules", i, "domains")
		}
		for j, sel := range r.Clients {
			if err := p.addClient(sel, i); err != nil {
				return nil, fieldErr(err.Error(), "rules", i, "clients", j)
			}
		}
		for j, d := range r.Domains {
			if err := p.addDomain(d, i); err != nil {
				return nil, fieldErr(err.Error(), "rules", i, "domains", j)
			}
		}
		cr.anyPort = len(r.Ports) == 0
		for j, s := range r.Ports {
			pr, all, err := parsePort(s)
			if err != nil {
				return nil, fieldErr(err.Error(), "rules", i, "ports", j)
			}
			if all {
				cr.anyPort = true
			} else {
				cr.ports = append(cr.ports, pr)
			}
		}
		if cr.anyPort {
			cr.ports = nil
		}
		switch {
		case cr.action == Egress && len(r.Egress) == 0:
			return nil, fieldErr("an egress rule names one or more source addresses in egress", "rules", i, "egress")
		case cr.action != Egress && len(r.Egress) > 0:
			return nil, fieldErr(fmt.Sprintf("egress addresses belong to egress rules, and this one's action is %s", r.Action), "rules", i, "egress")
		}
		for j, s := range r.Egress {
			a, err := parseAddr(s)
			if err != nil {
				return nil, fieldErr(err.Error(), "rules", i, "egress", j)
			}
			cr.egress = append(cr.egress, a)
		}
		if cr.anyPort || cr.action != Deny {
			p.portless.set(i)
		}
		p.rules = append(p.rules, cr)
	}
	p.idPrefLen = sortedLens(p.idPrefix, func(k string) int { return len(k) })
	for k := range p.cidrs {
		if k.Addr().Is4() {
			p.cidrBits4 = append(p.cidrBits4, k.Bits())
		} else {
			p.cidrBits6 = append(p.cidrBits6, k.Bits())
		}
	}
	p.cidrBits4, p.cidrBits6 = uniqueDesc(p.cidrBits4), uniqueDesc(p.cidrBits6)
	return p, nil
}

func (p *Policy) newSet() bitset { return make(bitset, p.n) }

func (p *Policy) setIn(m map[string]bitset, k string, i int) {
	b, ok := m[k]
	if !ok {
		b = p.newSet()
		m[k] = b
	}
	b.set(i)
}

// checkClientSelector checks a selector without indexing it.
func checkClientSelector(sel string) error {
	q := &Policy{n: 1, ids: map[string]bitset{}, idPrefix: map[string]bitset{}, cidrs: map[netip.Prefix]bitset{}, tags: map[string]bitset{}, users: map[string]bitset{}}
	q.anyClient = q.newSet()
	return q.addClient(sel, 0)
}

func (p *Policy) addClient(sel string, i int) error {
	if sel == "*" {
		p.anyClient.set(i)
		return nil
	}
	kind, v, ok := strings.Cut(sel, ":")
	if !ok || v == "" {
		return fmt.Errorf("client selector %q is none of *, id:NAME, id-prefix:PREFIX, cidr:PREFIX, group:NAME, tag:NAME, user:LOGIN", sel)
	}
	switch kind {
	case "id":
		p.setIn(p.ids, v, i)
	case "id-prefix":
		p.setIn(p.idPrefix, v, i)
	case "cidr":
		pr, err := netip.ParsePrefix(v)
		if err != nil {
			return fmt.Errorf("client selector %q: %q is not a CIDR prefix", sel, v)
		}
		if pr.Addr().Is4In6() {
			if pr.Bits() < 96 {
				return fmt.Errorf("client selector %q: an IPv4-mapped prefix of under 96 bits", sel)
			}
			pr = netip.PrefixFrom(pr.Addr().Unmap(), pr.Bits()-96)
		}
		pr = pr.Masked()
		b, ok := p.cidrs[pr]
		if !ok {
			b = p.newSet()
			p.cidrs[pr] = b
		}
		b.set(i)
	case "group":
		members, ok := p.doc.Groups[sel]
		if !ok {
			return fmt.Errorf("group %q is not defined in groups", sel)
		}
		for _, m := range members {
			if err := p.addClient(m, i); err != nil {
				return err
			}
		}
	case "tag":
		p.setIn(p.tags, sel, i)
	case "user":
		p.setIn(p.users, v, i)
	default:
		return fmt.Errorf("client selector %q: unknown kind %q (*, id:, id-prefix:, cidr:, group:, tag:, user:)", sel, kind)
	}
	return nil
}

func (p *Policy) addDomain(d string, i int) error {
	switch {
	case d == "*":
		p.anyDomain.set(i)
	case strings.HasPrefix(d, "*."):
		name, err := pool.NormalizeDomain(d[2:])
		if err != nil {
			return fmt.Errorf("domain %q: %v", d, err)
		}
		p.setIn(p.suffixes, name, i)
	default:
		if strings.Contains(d, "*") {
			return fmt.Errorf("domain %q: a wildcard stands alone (*) or as the first label (*.example.com)", d)
		}
		name, err := pool.NormalizeDomain(d)
		if err != nil {
			return fmt.Errorf("domain %q: %v", d, err)
		}
		p.setIn(p.exact, name, i)
	}
	return nil
}

// parsePort reads *, tcp:N, udp:N, tcp:N-M; all reports *.
func parsePort(s string) (portRange, bool, error) {
	if s == "*" {
		return portRange{}, true, nil
	}
	proto, v, ok := strings.Cut(s, ":")
	var pr portRange
	switch {
	case !ok:
	case proto == "tcp":
		pr.proto = TCP
	case proto == "udp":
		pr.proto = UDP
	}
	if pr.proto == 0 {
		return pr, false, fmt.Errorf("port %q is none of *, tcp:PORT, udp:PORT, tcp:FROM-TO, udp:FROM-TO", s)
	}
	from, to, isRange := strings.Cut(v, "-")
	f, err1 := strconv.ParseUint(from, 10, 16)
	t := f
	var err2 error
	if isRange {
		t, err2 = strconv.ParseUint(to, 10, 16)
	}
	if err1 != nil || err2 != nil || f == 0 || t < f {
		return pr, false, fmt.Errorf("port %q: ports are 1 to 65535, a range FROM-TO with FROM <= TO", s)
	}
	pr.from, pr.to = uint16(f), uint16(t)
	return pr, false, nil
}

func sortedLens(m map[string]bitset, length func(string) int) []int {
	var ls []int
	for k := range m {
		ls = append(ls, length(k))
	}
	return uniqueDesc(ls)
}

func uniqueDesc(xs []int) []int {
	slices.Sort(xs)
	xs = slices.Compact(xs)
	slices.Reverse(xs)
	return xs
}

// firstSet is the lowest set bit of b, -1 when none.
func firstSet(b []uint64) int {
	for w, x := range b {
		if x != 0 {
			return w*64 + bits.TrailingZeros64(x)
		}
	}
	return -1
}

func trailingZeros(x uint64) int { return bits.TrailingZeros64(x) }
