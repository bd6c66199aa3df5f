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
	return s.lookupAddrs(name, dns.TypeA)
}

// LookupAAAA is LookupA for IPv6 addresses, so that the connector reaches
// a domain that has only them.
func (s *Server) LookupAAAA(name string) ([]netip.Addr, bool, error) {
	return s.lookupAddrs(name, dns.TypeAAAA)
}

func (s *Server) lookupAddrs(name string, qtype uint16) ([]netip.Addr, bool, error) {
	a, err := s.lookup(name, qtype)
	if err != nil {
		return nil, false, err
	}
	var addrs []netip.Addr
	for _, rr := range a.rrs {
		var ip []byte
		switch v := rr.(type) {
		case *dns.A:
			if qtype == dns.TypeA {
				ip = v.A
			}
		case *dns.AAAA:
			if qtype == dns.TypeAAAA {
				ip = v.AAAA
			}
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	return addrs, a.ignored, nil
}
