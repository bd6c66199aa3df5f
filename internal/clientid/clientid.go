// Package clientid names the client behind a source address, for every part
// of ippool that meets clients on the network: the DNS front end when a query
// arrives and the connector when a flow arrives. One implementation serves
// both because a client's flows must be the same client as its DNS queries,
// or the connector would look up another client's mappings.
//
// A client is named by its source address, or by the client map: a file of
// "prefix clientID" lines where the longest prefix holding the source wins.
package clientid

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/ippool/ippool/pool"
)

// Namer names the client behind a connection's or packet's remote address.
// *Map is the default; a tailnet names the node that sent it instead
// (package tailnet), which stays the same client whatever its address.
type Namer interface {
	OfRemote(remote net.Addr) (string, error)
}

// Map names clients by source prefix. It exists because a source address is
// a poor identity when many devices share one resolver or NAT: the operator
// can fold a whole prefix into one client, or give a known host a stable name
// that survives renumbering. A nil *Map names every client by its address.
type Map struct {
	// entries is sorted by prefix length, longest first, so the first match
	// is the longest. Files are short, so a linear scan beats a trie on
	// simplicity and is fast enough.
	entries []entry
}

type entry struct {
	prefix netip.Prefix
	id     string
}

// Load reads "prefix clientID" lines ('#' starts a comment). A bare address
// stands for a host prefix. Errors name the line, because the operator edits
// this file by hand.
func Load(path string) (*Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("client map: %w", err)
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads a client map from r; name is used in errors.
func Parse(name string, r io.Reader) (*Map, error) {
	sc := bufio.NewScanner(r)
	cm := &Map{}
	seen := make(map[netip.Prefix]int)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("client map %s:%d: want \"prefix clientID\", got %d fields", name, line, len(fields))
		}
		p, err := parsePrefixOrAddr(fields[0])
		if err != nil {
			return nil, fmt.Errorf("client map %s:%d: %v", name, line, err)
		}
		if err := pool.ValidateClientID(fields[1]); err != nil {
			return nil, fmt.Errorf("client map %s:%d: %v", name, line, err)
		}
		if prev, dup := seen[p]; dup {
			return nil, fmt.Errorf("client map %s:%d: prefix %s is already mapped on line %d", name, line, p, prev)
		}
		seen[p] = line
		cm.entries = append(cm.entries, entry{prefix: p, id: fields[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("client map %s: %w", name, err)
	}
	sort.SliceStable(cm.entries, func(i, j int) bool {
		return cm.entries[i].prefix.Bits() > cm.entries[j].prefix.Bits()
	})
	return cm, nil
}

// parsePrefixOrAddr masks host bits and folds IPv4-mapped IPv6 into IPv4,
// because source addresses are unmapped before lookup and would otherwise
// never match such an entry.
func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		p, err = netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid prefix", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid address or prefix", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped prefix shorter than /96", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func (m *Map) lookup(a netip.Addr) (string, bool) {
	if m == nil {
		return "", false
	}
	for _, e := range m.entries {
		if e.prefix.Contains(a) {
			return e.id, true
		}
	}
	return "", false
}

// Of names the client at source address a: the client map's longest prefix
// holding it, else the address itself. IPv4-mapped IPv6 sources are named in
// IPv4 form, so a client keeps its mappings whether a listener is dual-stack
// or not.
func (m *Map) Of(a netip.Addr) (string, error) {
	ip := a.Unmap().WithZone("")
	if !ip.IsValid() {
		return "", errors.New("no remote address")
	}
	if id, ok := m.lookup(ip); ok {
		return id, nil
	}
	id := ip.String()
	if err := pool.ValidateClientID(id); err != nil {
		return "", err
	}
	return id, nil
}

// OfRemote is Of for the remote address of a connection or packet.
func (m *Map) OfRemote(remote net.Addr) (string, error) {
	ip, ok := Source(remote)
	if !ok {
		return "", fmt.Errorf("no IP address in the remote address %v", remote)
	}
	return m.Of(ip)
}

// Source is the IP address of a packet's or connection's remote address,
// unmapped and without a zone, so that a dual-stack listener matches IPv4
// sources against IPv4 prefixes.
func Source(remote net.Addr) (netip.Addr, bool) {
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
