package connector

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go4.org/netipx"

	"github.com/ippool/ippool/pool"
)

// guard says which addresses the connector must never dial. A domain that
// resolves to a pool address or to the gateway itself would send the flow
// back into the connector (a loop, each turn costing a flow and a socket);
// link-local addresses are the gateway's own network (a cloud's metadata
// service at 169.254.169.254 answers whoever asks from the gateway).
type guard struct {
	pool     Pool
	v6       netip.Prefix
	ignored  []netip.Prefix
	poolSet  atomic.Pointer[poolSnapshot]
	ownMu    sync.Mutex
	own      map[netip.Addr]bool
	ownAt    time.Time
	ownEvery time.Duration
	// allow is Config.AllowDial.
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
	g := &guard{pool: p, v6: v6, ownEvery: 5 * time.Second}
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
	case g.allowed(a) && !(g.v6.IsValid() && g.v6.Contains(a)) && !g.inPool(a):
		return ""
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "not a unicast address elsewhere"
	case a.IsLinkLocalUnicast():
		return "link-local (the gateway's own network)"
	case g.v6.IsValid() && g.v6.Contains(a):
		return "in the v6 prefix"
	}
	if g.inPool(a) {
		return "a pool address"
	}
	if g.isOwn(a) {
		return "an address of this gateway"
	}
	return ""
}

// isOwn reports whether a is an address of one of this host's interfaces,
// from a list read again every few seconds so that addresses added later
// are seen without a syscall per flow.
func (g *guard) isOwn(a netip.Addr) bool {
	g.ownMu.Lock()
	defer g.ownMu.Unlock()
	if now := time.Now(); g.own == nil || now.Sub(g.ownAt) > g.ownEvery {
		own := make(map[netip.Addr]bool)
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, ad := range addrs {
				if n, ok := ad.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						own[ip.Unmap()] = true
					}
				}
			}
		}
		g.own, g.ownAt = own, now
	}
	return g.own[a]
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
