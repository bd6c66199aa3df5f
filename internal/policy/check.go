package policy

import (
	"net/netip"
	"strings"
)

// Client is who a check is for, as far as the caller knows it.
type Client struct {
	// ID is the client ID the pool knows it by.
	ID string
	// Addr is its source address, when it reached ippool from one (DNS,
	// the connector). Without it, cidr: selectors read ID as an address.
	Addr netip.Addr
	// Tags and User: a tailnet node's tags ("tag:NAME") and login, from
	// WhoIs.
	Tags []string
	User string
}

// Decision is the outcome of a check: the rule that matched first, or the
// default.
type Decision struct {
	// Rule is the rule's index in the document, -1 for the default.
	Rule   int
	Action Action
	name   string
	egress []netip.Addr
	max    int
}

// Allowed reports whether the client may go on (allow or egress).
func (d Decision) Allowed() bool { return d.Action != Deny }

// RuleName is the rule's name, "default" for the default.
func (d Decision) RuleName() string {
	if d.Rule < 0 {
		return "default"
	}
	return d.name
}

// MaxMappings is the rule's max_mappings, 0 when it has none.
func (d Decision) MaxMappings() int { return d.max }

// EgressAddr is the source address of an egress decision for client and
// domain: one of the rule's, chosen by a hash of both, so a client keeps
// its address for a domain whatever server its flows meet. Invalid for
// other decisions.
func (d Decision) EgressAddr(client, domain string) netip.Addr {
	if d.Action != Egress || len(d.egress) == 0 {
		return netip.Addr{}
	}
	// FNV-1a, inline: no allocation, and the same on every server.
	h := uint64(14695981039346656037)
	for i := 0; i < len(client); i++ {
		h = (h ^ uint64(client[i])) * 1099511628211
	}
	h = (h ^ 0) * 1099511628211
	for i := 0; i < len(domain); i++ {
		h = (h ^ uint64(domain[i])) * 1099511628211
	}
	return d.egress[h%uint64(len(d.egress))]
}

// CheckName decides whether c may have an address for domain at all: the
// check of DNS and of allocation, which know no port. A deny rule limited
// to some ports does not apply to it, since other ports of the name may be
// allowed; the connector checks each flow's port (CheckFlow). domain is in
// normal form (pool.NormalizeDomain).
func (p *Policy) CheckName(c *Client, domain string) Decision {
	var cand [words]uint64
	if !p.candidates(c, domain, &cand) {
		return p.fallback()
	}
	for w := range p.n {
		cand[w] &= p.portless[w]
	}
	if i := firstSet(cand[:p.n]); i >= 0 {
		return p.decision(i)
	}
	return p.fallback()
}

// CheckFlow decides whether c may open a flow to domain's port over proto.
func (p *Policy) CheckFlow(c *Client, domain string, proto Proto, port uint16) Decision {
	var cand [words]uint64
	if !p.candidates(c, domain, &cand) {
		return p.fallback()
	}
	for w := range p.n {
		for x := cand[w]; x != 0; x &= x - 1 {
			i := w*64 + trailingZeros(x)
			if r := &p.rules[i]; r.anyPort || r.coversPort(proto, port) {
				return p.decision(i)
			}
		}
	}
	return p.fallback()
}

func (r *compiledRule) coversPort(proto Proto, port uint16) bool {
	for _, pr := range r.ports {
		if pr.proto == proto && pr.from <= port && port <= pr.to {
			return true
		}
	}
	return false
}

func (p *Policy) decision(i int) Decision {
	r := &p.rules[i]
	return Decision{Rule: i, Action: r.action, name: r.name, egress: r.egress, max: r.maxMappings}
}

func (p *Policy) fallback() Decision {
	if p.deny {
		return Decision{Rule: -1, Action: Deny}
	}
	return Decision{Rule: -1, Action: Allow}
}

// candidates sets in cand the rules whose clients and domains match, and
// reports whether any does.
func (p *Policy) candidates(c *Client, domain string, cand *[words]uint64) bool {
	if p.n == 0 {
		return false
	}
	cl := cand[:p.n]
	copy(cl, p.anyClient)
	if len(p.ids) > 0 {
		orIn(cl, p.ids[c.ID])
	}
	for _, l := range p.idPrefLen {
		if len(c.ID) >= l {
			orIn(cl, p.idPrefix[c.ID[:l]])
		}
	}
	if len(p.cidrs) > 0 {
		addr := c.Addr
		if !addr.IsValid() {
			addr, _ = netip.ParseAddr(c.ID)
		}
		addr = addr.Unmap()
		lens := p.cidrBits6
		if addr.Is4() {
			lens = p.cidrBits4
		}
		if addr.IsValid() {
			for _, bits := range lens {
				if pr, err := addr.Prefix(bits); err == nil {
					orIn(cl, p.cidrs[pr])
				}
			}
		}
	}
	if len(p.tags) > 0 {
		for _, t := range c.Tags {
			orIn(cl, p.tags[t])
		}
	}
	if len(p.users) > 0 && c.User != "" {
		orIn(cl, p.users[c.User])
	}
	if !anySet(cl) {
		return false
	}
	var dom [words]uint64
	d := dom[:p.n]
	copy(d, p.anyDomain)
	if len(p.exact) > 0 {
		orIn(d, p.exact[domain])
	}
	if len(p.suffixes) > 0 {
		for s := domain; ; {
			i := strings.IndexByte(s, '.')
			if i < 0 {
				break
			}
			s = s[i+1:]
			orIn(d, p.suffixes[s])
		}
	}
	for w := range cl {
		cl[w] &= d[w]
	}
	return anySet(cl)
}

func orIn(dst []uint64, b bitset) {
	for w := range b {
		dst[w] |= b[w]
	}
}

func anySet(b []uint64) bool {
	for _, x := range b {
		if x != 0 {
			return true
		}
	}
	return false
}

// Count adds d to its rule's hit counter (the default's for -1).
func (p *Policy) Count(d Decision) {
	if d.Rule >= 0 && d.Rule < len(p.hits) {
		p.hits[d.Rule].Add(1)
	} else {
		p.defaultHits.Add(1)
	}
}

// RuleHits is one rule's name and how often it decided since the policy
// was compiled.
type RuleHits struct {
	Name string
	Hits uint64
}

// Hits are the rules' counters in document order, the default's last.
func (p *Policy) Hits() []RuleHits {
	out := make([]RuleHits, 0, len(p.rules)+1)
	for i := range p.rules {
		out = append(out, RuleHits{Name: p.rules[i].name, Hits: p.hits[i].Load()})
	}
	return append(out, RuleHits{Name: "default", Hits: p.defaultHits.Load()})
}
