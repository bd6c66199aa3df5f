package connector

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"go4.org/netipx"
	"golang.org/x/sys/unix"
)

// installNFT replaces the connector's nftables table, whatever an earlier
// run left, with one for the current pool. It runs as one transaction, so
// flows in progress never meet a moment without rules.
func (r Rules) installNFT() error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: NFTTable}
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	set := &nftables.Set{Table: t, Name: nftSet, KeyType: nftables.TypeIPAddr, Interval: true}
	if err := conn.AddSet(set, poolElements(r.Pool)); err != nil {
		return fmt.Errorf("nftables set: %w", err)
	}
	ch := conn.AddChain(&nftables.Chain{
		Name: nftChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle,
	})
	lo4 := netip.MustParseAddr("127.0.0.1").AsSlice()
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		match := []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		}
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.tproxyRule(proto, unix.NFPROTO_IPV4, match, lo4)})
	}
	if r.V6Prefix.IsValid() {
		pfx := r.V6Prefix.Addr().As16()
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			match := []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 12},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: pfx[:12]},
			}
			conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.tproxyRule(proto, unix.NFPROTO_IPV6, match, net.IPv6loopback)})
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: installing table inet %s: %w", NFTTable, err)
	}
	return nil
}

// tproxyRule is "meta l4proto P <match> meta mark set M tproxy to LO:PORT
// accept" for one family.
func (r Rules) tproxyRule(proto byte, family byte, match []expr.Any, lo []byte) []expr.Any {
	tfam := nftables.TableFamilyIPv4
	if family == unix.NFPROTO_IPV6 {
		tfam = nftables.TableFamilyIPv6
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
	}
	e = append(e, match...)
	return append(e,
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(r.Mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		&expr.Immediate{Register: 1, Data: lo},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(uint16(r.Port))},
		&expr.TProxy{Family: byte(tfam), TableFamily: byte(nftables.TableFamilyINet), RegAddr: 1, RegPort: 2},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
}

// poolElements are an interval set's elements for the ranges: each range's
// first address, and the address after its last marked as an interval's
// end. Like nft, a leading end element at 0.0.0.0 closes the gap before the
// first range; a range reaching 255.255.255.255 has no end element.
func poolElements(ranges []netipx.IPRange) []nftables.SetElement {
	var els []nftables.SetElement
	if len(ranges) > 0 && ranges[0].From() != netip.IPv4Unspecified() {
		els = append(els, nftables.SetElement{Key: netip.IPv4Unspecified().AsSlice(), IntervalEnd: true})
	}
	for _, rg := range ranges {
		els = append(els, nftables.SetElement{Key: rg.From().AsSlice()})
		if next := rg.To().Next(); next.IsValid() && next.Is4() {
			els = append(els, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return els
}

func (r Rules) removeNFT() error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	conn.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: NFTTable})
	if err := conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: removing table inet %s: %w", NFTTable, err)
	}
	return nil
}

func (r Rules) families() []int {
	if r.V6Prefix.IsValid() {
		return []int{unix.AF_INET, unix.AF_INET6}
	}
	return []int{unix.AF_INET}
}

// installRoutes adds the policy rule and the local route, after removing
// any rule an earlier run left for the same table.
func (r Rules) installRoutes() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("netlink: loopback: %w", err)
	}
	for _, fam := range r.families() {
		r.removeRulesOf(fam)
		rule := netlink.NewRule()
		rule.Family, rule.Mark, rule.Table, rule.Priority = fam, r.Mark, r.Table, r.Table
		if err := netlink.RuleAdd(rule); err != nil {
			return fmt.Errorf("netlink: adding rule %s: %w", rule, err)
		}
		dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if fam == unix.AF_INET6 {
			dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		route := &netlink.Route{
			Family: fam, Table: r.Table, Type: unix.RTN_LOCAL, Dst: dst,
			LinkIndex: lo.Attrs().Index, Scope: netlink.SCOPE_HOST,
		}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("netlink: adding local route to table %d: %w", r.Table, err)
		}
	}
	return nil
}

// removeRulesOf deletes every policy rule of family that looks up our table.
func (r Rules) removeRulesOf(fam int) {
	rules, err := netlink.RuleListFiltered(fam, &netlink.Rule{Table: r.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return
	}
	for i := range rules {
		if rules[i].Table == r.Table {
			_ = netlink.RuleDel(&rules[i])
		}
	}
}

func (r Rules) removeRoutes() error {
	var errs []error
	// Both families: a crashed run may have had a v6 prefix this one lacks.
	// Errors count only for the families in use, so a host without IPv6
	// can run the connector without a v6 prefix.
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		var ferrs []error
		r.removeRulesOf(fam)
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: r.Table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			ferrs = append(ferrs, err)
		}
		for i := range routes {
			if err := netlink.RouteDel(&routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
				ferrs = append(ferrs, err)
			}
		}
		if fam == unix.AF_INET || r.V6Prefix.IsValid() {
			errs = append(errs, ferrs...)
		}
	}
	return errors.Join(errs...)
}

// Install puts the rules in place, replacing any left by an earlier run.
func (r Rules) Install() error {
	if err := r.removeRoutes(); err != nil {
		return err
	}
	if err := r.installNFT(); err != nil {
		return err
	}
	return r.installRoutes()
}

// Remove takes the rules away; what is already gone is no error.
func (r Rules) Remove() error {
	return errors.Join(r.removeNFT(), r.removeRoutes())
}
