package resolver

import (
	"net/netip"

	"github.com/miekg/dns"
)

// LookupA returns the IPv4 addresses name has upstream, through the same
// upstreams, cache and in-flight sharing as the DNS front end's answers, and
// whether any of them lies in Config.IgnoreDestinations. The connector
// resolves a flow's domain here, so the flow goes where the name pointed
// when the client asked (or to its newer addresses once the cached answer
// expired), and a busy domain costs one upstream query per TTL for DNS and
// flows together. name is in normal form (pool.NormalizeDomain). NXDOMAIN,
// a name without A records and a public name whose every address is private
// give no addresses and no error.
func (r *Resolver) LookupA(name string) ([]netip.Addr, bool, error) {
	return r.lookupAddrs(name, dns.TypeA)
}

// LookupAAAA is LookupA for IPv6 addresses.
func (r *Resolver) LookupAAAA(name string) ([]netip.Addr, bool, error) {
	return r.lookupAddrs(name, dns.TypeAAAA)
}

func (r *Resolver) lookupAddrs(name string, qtype uint16) ([]netip.Addr, bool, error) {
	a, err := r.Lookup(name, qtype)
	if err != nil {
		return nil, false, err
	}
	var addrs []netip.Addr
	for _, rr := range a.RRs {
		var ip netip.Addr
		switch v := rr.(type) {
		case *dns.A:
			ip, _ = netip.AddrFromSlice(v.A)
		case *dns.AAAA:
			ip, _ = netip.AddrFromSlice(v.AAAA)
		}
		if ip.IsValid() && rr.Header().Rrtype == qtype {
			if qtype == dns.TypeA {
				ip = ip.Unmap()
			}
			addrs = append(addrs, ip)
		}
	}
	return addrs, a.Ignored, nil
}
