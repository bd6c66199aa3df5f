package dnsfront

import (
	"net"
	"net/netip"
)

// sourceOf is the remote address of a packet or connection, unmapped so
// that a dual-stack listener matches IPv4 sources against IPv4 prefixes.
func sourceOf(remote net.Addr) (netip.Addr, bool) {
	var ap netip.AddrPort
	switch a := remote.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
		return netip.Addr{}, false
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.Addr{}, false
		}
	}
	ip := ap.Addr().Unmap().WithZone("")
	return ip, ip.IsValid()
}

// allowed reports whether Config.Allow admits the source. The list is short
// (a handful of prefixes), so a scan costs less than building a trie.
func (s *Server) allowed(remote net.Addr) bool {
	ip, ok := sourceOf(remote)
	if !ok {
		return false
	}
	for _, p := range s.cfg.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
