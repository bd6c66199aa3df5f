package dnsfront

import (
	"net"

	"github.com/ippool/ippool/internal/clientid"
)

// allowed reports whether Config.Allow admits the source. The list is short
// (a handful of prefixes), so a scan costs less than building a trie.
func (s *Server) allowed(remote net.Addr) bool {
	ip, ok := clientid.Source(remote)
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
