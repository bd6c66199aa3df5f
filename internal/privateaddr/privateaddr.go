// Package privateaddr says which addresses are not the public internet's:
// the networks a gateway may sit in front of (RFC 1918, CGNAT, unique local
// IPv6), the host's own (loopback, link-local, this network), and those no
// unicast flow goes to. The resolver drops such answers for public names and
// the connector refuses to dial them, as unbound's private-address and egress
// proxies such as Smokescreen do, so that a name someone else controls cannot
// point the gateway at what lies behind it.
package privateaddr

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Prefixes are the special networks, IPv4 then IPv6. IPv4-mapped IPv6
// addresses are judged by their IPv4 address.
var Prefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // this network (RFC 791)
	netip.MustParsePrefix("10.0.0.0/8"),     // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),  // shared address space, CGNAT (RFC 6598); cloud metadata at 100.100.100.200
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local; cloud metadata at 169.254.169.254
	netip.MustParsePrefix("172.16.0.0/12"),  // RFC 1918
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments (RFC 6890)
	netip.MustParsePrefix("192.168.0.0/16"), // RFC 1918
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and the broadcast address
	netip.MustParsePrefix("::/127"),         // unspecified and loopback
	netip.MustParsePrefix("fc00::/7"),       // unique local (RFC 4193)
	netip.MustParsePrefix("fe80::/10"),      // link-local
	netip.MustParsePrefix("ff00::/8"),       // multicast
}

// IsPrivate reports whether a lies in one of Prefixes. An invalid address is
// private: nothing may be sent to it.
func IsPrivate(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() {
		return true
	}
	for _, p := range Prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// OwnNetworks are the networks of this host's interfaces, read again at
// most every refresh so that addresses added later are seen without a
// syscall per check. The zero value is ready; Refresh 0 means 5 s.
type OwnNetworks struct {
	Refresh time.Duration

	mu       sync.Mutex
	prefixes []netip.Prefix
	addrs    map[netip.Addr]bool
	at       time.Time
}

// Contains reports whether a lies in a network of one of this host's
// interfaces.
func (o *OwnNetworks) Contains(a netip.Addr) bool {
	a = a.Unmap()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refresh(time.Now())
	for _, p := range o.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// IsOwnAddress reports whether a is an address of one of this host's
// interfaces.
func (o *OwnNetworks) IsOwnAddress(a netip.Addr) bool {
	a = a.Unmap()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refresh(time.Now())
	return o.addrs[a]
}

func (o *OwnNetworks) refresh(now time.Time) {
	every := o.Refresh
	if every == 0 {
		every = 5 * time.Second
	}
	if o.addrs != nil && now.Sub(o.at) < every {
		return
	}
	addrs := make(map[netip.Addr]bool)
	var prefixes []netip.Prefix
	if ifAddrs, err := net.InterfaceAddrs(); err == nil {
		for _, ad := range ifAddrs {
			n, ok := ad.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			addrs[ip] = true
			bits, _ := n.Mask.Size()
			if ip.Is4() && bits > 32 {
				bits -= 96
			}
			if p, err := ip.Prefix(bits); err == nil {
				prefixes = append(prefixes, p)
			}
		}
	}
	o.addrs, o.prefixes, o.at = addrs, prefixes, now
}
