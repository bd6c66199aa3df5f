package dnsfront

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/ippool/ippool/pool"
)

// clientMap names clients by source prefix. It exists because a source
// address is a poor identity when many devices share one resolver or NAT: the
// operator can fold a whole prefix into one client, or give a known host a
// stable name that survives renumbering.
type clientMap struct {
	// entries is sorted by prefix length, longest first, so the first match
	// is the longest. Files are short, so a linear scan beats a trie on
	// simplicity and is fast enough.
	entries []clientMapEntry
}

type clientMapEntry struct {
	prefix netip.Prefix
	id     string
}

// loadClientMap reads "prefix clientID" lines. A bare address stands for a
// host prefix. Errors name the line, because the operator edits this file
// by hand.
func loadClientMap(path string) (*clientMap, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("client map: %w", err)
	}
	defer f.Close()
	return parseClientMap(path, bufio.NewScanner(f))
}

func parseClientMap(name string, sc *bufio.Scanner) (*clientMap, error) {
	cm := &clientMap{}
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
		cm.entries = append(cm.entries, clientMapEntry{prefix: p, id: fields[1]})
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

func (cm *clientMap) lookup(a netip.Addr) (string, bool) {
	if cm == nil {
		return "", false
	}
	for _, e := range cm.entries {
		if e.prefix.Contains(a) {
			return e.id, true
		}
	}
	return "", false
}

// clientID names the client by its source address, or by the client map.
// IPv4-mapped IPv6 sources are named in IPv4 form, so a client keeps its
// mappings whether the listener is dual-stack or not.
func (s *Server) clientID(remote net.Addr) (string, error) {
	var ap netip.AddrPort
	switch a := remote.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
		return "", errors.New("no remote address")
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return "", err
		}
	}
	ip := ap.Addr().Unmap().WithZone("")
	if !ip.IsValid() {
		return "", errors.New("no remote address")
	}
	if id, ok := s.clients.lookup(ip); ok {
		return id, nil
	}
	id := ip.String()
	if err := pool.ValidateClientID(id); err != nil {
		return "", err
	}
	return id, nil
}
