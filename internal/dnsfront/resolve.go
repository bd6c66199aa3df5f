package dnsfront

import (
	"net/netip"

	"github.com/miekg/dns"
)

// LookupA returns the IPv4 addresses name has upstream, through the same
// upstreams, cache and in-flight sharing as the answers, and whether any of
// them lies in Config.IgnoreDestinations. The connector resolves a flow's
// domain here, so the flow goes where the name pointed when the client asked
// (or to its newer addresses once the cached answer expired), and a busy
// domain costs one upstream query per TTL for DNS and flows together. name
// is in normal form (pool.NormalizeDomain). NXDOMAIN and a name without A
// records give no addresses and no error.
func (s *Server) LookupA(name string) ([]netip.Addr, bool, error) {
	a, err := s.lookup(name, dns.TypeA)
	if err != nil {
		return nil, false, err
	}
	var addrs []netip.Addr
	for _, rr := range a.rrs {
		if v, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(v.A); ok {
				addrs = append(addrs, ip.Unmap())
			}
		}
	}
	return addrs, a.ignored, nil
}
