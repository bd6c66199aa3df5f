package connector

import (
	"net/netip"
	"sync/atomic"
	"time"

	"go4.org/netipx"

	"github.com/ippool/ippool/internal/privateaddr"
	"github.com/ippool/ippool/pool"
)

// guard says which addresses the connector must never dial. A domain that
// resolves to a pool address or into the v6 prefix would send the flow back
// into the connector (a loop, each turn costing a flow and a socket): those
// are refused whatever Config.Allow says. Private networks (RFC 1918, CGNAT,
// loopback, link-local; privateaddr.Prefixes) and this host's own networks
// are what lies behind the gateway: a name anyone controls may point at them
// (10.0.0.5, or a cloud's metadata service at 169.254.169.254 or
// 100.100.100.200), so they are refused unless Config.Allow opens them, as
// egress proxies such as Smokescreen do.
type guard struct {
	pool    Pool
	v6      netip.Prefix
	ignored []netip.Prefix
	poolSet atomic.Pointer[poolSnapshot]
	own     privateaddr.OwnNetworks
	// allow is Config.Allow.
	allow []netip.Prefix
	// poolAt is when maybeRefreshPool last read the pool (Unix ns).
	poolAt atomic.Int64
}

// poolSnapshot is the pool configuration and its addresses as a set.
type poolSnapshot struct {
	cfg    pool.Config
	set    *netipx.IPSet
	ranges []netipx.IPRange
}

func newGuard(p Pool, v6 netip.Prefix, ignored []netip.Prefix) *guard {
	g := &guard{pool: p, v6: v6}
	for _, pr := range ignored {
		if pr.Addr().Is4In6() && pr.Bits() >= 96 {
			pr = netip.PrefixFrom(pr.Addr().Unmap(), pr.Bits()-96)
		}
		g.ignored = append(g.ignored, pr.Masked())
	}
	g.refreshPool()
	return g
}

// refreshPool reads the pool configuration and reports whether it changed.
func (g *guard) refreshPool() bool {
	cfg, ok := g.pool.PoolConfig()
	if !ok {
		return false
	}
	if old := g.poolSet.Load(); old != nil && old.cfg.Equal(cfg) {
		return false
	}
	set, err := cfg.Addresses()
	if err != nil {
		return false
	}
	g.poolSet.Store(&poolSnapshot{cfg: cfg, set: set, ranges: set.Ranges()})
	return true
}

// poolRanges are the pool's addresses as ranges, nil before it is known.
func (g *guard) poolRanges() []netipx.IPRange {
	if s := g.poolSet.Load(); s != nil {
		return s.ranges
	}
	return nil
}

func (g *guard) isIgnored(a netip.Addr) bool {
	for _, p := range g.ignored {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forbidden says why a must not be dialed, "" when it may.
func (g *guard) forbidden(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return "invalid"
	case g.v6.IsValid() && g.v6.Contains(a):
		return "in the v6 prefix"
	case g.inPool(a):
		return "a pool address"
	case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		// Not one host: no --connector-allow makes a flow of it.
		return "not a unicast address"
	case g.allowed(a):
		return ""
	case privateaddr.IsPrivate(a):
		return "a private address (give --connector-allow to reach it)"
	case g.own.Contains(a):
		return "in a network of this gateway (give --connector-allow to reach it)"
	}
	return ""
}

func (g *guard) inPool(a netip.Addr) bool {
	s := g.poolSet.Load()
	return s != nil && s.set.Contains(a)
}

func (g *guard) allowed(a netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// maybeRefreshPool reads the pool configuration again when it is not known
// yet or was last read over poolEvery ago. Flows that arrive without
// Start (ServeConn) have no watchPool to do it for them.
func (g *guard) maybeRefreshPool(now time.Time) {
	at := g.poolAt.Load()
	if g.poolSet.Load() != nil && now.UnixNano()-at < int64(poolRefreshEvery) {
		return
	}
	if g.poolAt.CompareAndSwap(at, now.UnixNano()) {
		g.refreshPool()
	}
}

// poolRefreshEvery is how stale maybeRefreshPool lets the pool get: as
// stale as watchPool lets TPROXY's.
const poolRefreshEvery = 2 * time.Second
