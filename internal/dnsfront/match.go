package dnsfront

import (
	"strings"

	"github.com/miekg/dns"
)

// match returns the longest configured domain holding the normalized name;
// "" stands for the root.
func (s *Server) match(name string) (string, bool) {
	best, found := "", false
	for _, d := range s.domains {
		if len(d) < len(best) || (found && len(d) == len(best)) {
			continue
		}
		if d == "" || name == d ||
			len(name) > len(d) && strings.HasSuffix(name, d) && name[len(name)-len(d)-1] == '.' {
			best, found = d, true
		}
	}
	return best, found
}

func (s *Server) matchRoot() bool {
	for _, d := range s.domains {
		if d == "" {
			return true
		}
	}
	return false
}

// matchEscaped matches a name the pool refuses. Such a name may hold
// escaped dots ("a\.b.example."), so labels are split the way the DNS
// library does rather than at every '.'.
func (s *Server) matchEscaped(qname string) (string, bool) {
	best, found := "", false
	for _, d := range s.domains {
		if len(d) < len(best) || (found && len(d) == len(best)) {
			continue
		}
		if d == "" || dns.IsSubDomain(dns.Fqdn(d), strings.ToLower(qname)) {
			best, found = d, true
		}
	}
	return best, found
}
