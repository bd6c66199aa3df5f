package pool

import (
	"fmt"
	"net/netip"
)

// CheckV6Prefix checks a prefix that carries pool addresses in IPv6: the
// DNS front end answers AAAA with the prefix and the client's pool address in
// its last 32 bits, and the connector takes flows to it back to that
// address. So it must be an IPv6 /96 (not IPv4-mapped); it is returned
// masked.
func CheckV6Prefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() != 96 {
		return netip.Prefix{}, fmt.Errorf("v6 prefix %s is not an IPv6 /96, like fd7a:115c:a1e0:ab12::/96", p)
	}
	return p.Masked(), nil
}
