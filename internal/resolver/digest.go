package resolver

import (
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/privateaddr"
)

// digest turns an upstream reply to name and qtype into a cache entry.
// Negative answers live for the SOA minimum (RFC 2308) so that a name that
// does not exist is not asked for again on every query.
func (r *Resolver) digest(m *dns.Msg, name string, qtype uint16) *Answer {
	a := &Answer{Rcode: m.Rcode}
	var ttl uint32
	first := true
	privateOK := r.isPrivateDomain(name)
	addrs, dropped := 0, 0
	for _, rr := range m.Answer {
		h := rr.Header()
		if h.Rrtype != qtype && h.Rrtype != dns.TypeCNAME {
			continue
		}
		if first || h.Ttl < ttl {
			ttl, first = h.Ttl, false
		}
		var ip netip.Addr
		switch v := rr.(type) {
		case *dns.A:
			ip, _ = netip.AddrFromSlice(v.A)
		case *dns.AAAA:
			ip, _ = netip.AddrFromSlice(v.AAAA)
		}
		if ip.IsValid() {
			ip = ip.Unmap()
			addrs++
			ignored := contains(r.cfg.IgnoreDestinations, ip)
			if !privateOK && !ignored && r.isPrivate(ip) {
				dropped++
				continue
			}
			a.Ignored = a.Ignored || ignored
		}
		a.RRs = append(a.RRs, rr)
	}
	if dropped > 0 {
		r.stats.privateDropped.Add(uint64(dropped))
		a.PrivateOnly = dropped == addrs
	}
	d := r.cfg.CacheMinTTL
	switch {
	case a.Rcode == dns.RcodeSuccess && addrs > 0:
		d = time.Duration(ttl) * time.Second
	default:
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				d = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
				break
			}
		}
	}
	d = max(r.cfg.CacheMinTTL, min(d, r.cfg.CacheMaxTTL))
	a.Expires = r.now().Add(d)
	return a
}

// isPrivate reports whether ip is an address no public name may have: in a
// private network of privateaddr or of this host's interfaces, and not in
// Config.AllowPrivate.
func (r *Resolver) isPrivate(ip netip.Addr) bool {
	if contains(r.cfg.AllowPrivate, ip) {
		return false
	}
	return privateaddr.IsPrivate(ip) || r.ownNetwork(ip)
}

// isPrivateDomain reports whether name is at or under a Config.PrivateDomains
// entry.
func (r *Resolver) isPrivateDomain(name string) bool {
	name = strings.TrimSuffix(name, ".")
	for _, d := range r.private {
		if len(name) == len(d) && strings.EqualFold(name, d) ||
			len(name) > len(d) && name[len(name)-len(d)-1] == '.' && strings.EqualFold(name[len(name)-len(d):], d) {
			return true
		}
	}
	return false
}

func contains(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
