package connector

import (
	"fmt"
	"net/netip"
	"strings"

	"go4.org/netipx"
)

// Names of what the connector installs, fixed so that a run after a crash
// finds and replaces what the crashed one left.
const (
	NFTTable = "ippool" // inet family
	nftChain = "prerouting"
	nftSet   = "pool4"
)

// Rules is what steers flows to the connector: an nftables table whose
// prerouting chain sends TCP and UDP to pool addresses (and to the v6 prefix)
// to the connector's port with TPROXY, marking them; a policy rule sending
// marked packets to a routing table whose only route delivers everything
// locally. Without the local route the kernel would forward the packets (or
// drop them) instead of handing them to the socket TPROXY chose.
type Rules struct {
	Port     int
	Mark     uint32
	Table    int
	Pool     []netipx.IPRange // the pool's addresses, exclusions removed
	V6Prefix netip.Prefix
}

// RulesFor is the rules of cfg's connector for a pool of the given
// addresses.
func RulesFor(cfg Config, pool []netipx.IPRange) (Rules, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return Rules{}, err
	}
	return Rules{Port: cfg.Port, Mark: cfg.Mark, Table: cfg.Table, Pool: pool, V6Prefix: cfg.V6Prefix}, nil
}

func rangeText(r netipx.IPRange) string {
	if r.From() == r.To() {
		return r.From().String()
	}
	if p, ok := r.Prefix(); ok {
		return p.String()
	}
	return r.From().String() + "-" + r.To().String()
}

// Script is the shell commands (nft and ip) that install the rules, for an
// operator who runs the connector with its own rule management off.
func (r Rules) Script() string {
	var b strings.Builder
	mark := fmt.Sprintf("%#x", r.Mark)
	fmt.Fprintf(&b, "# ippool connector rules: TCP and UDP to the pool's addresses go to the connector on port %d.\n", r.Port)
	fmt.Fprintf(&b, "# Needs CAP_NET_ADMIN. The set lists the pool as it is now: run this again after 'ippool pool set'.\n")
	fmt.Fprintf(&b, "nft -f - <<'EOF'\n")
	// Adding the table first makes the delete succeed on a first run, so
	// the script replaces whatever an earlier run left, in one transaction.
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\n", NFTTable, NFTTable)
	fmt.Fprintf(&b, "table inet %s {\n", NFTTable)
	fmt.Fprintf(&b, "\tset %s {\n\t\ttype ipv4_addr\n\t\tflags interval\n", nftSet)
	if len(r.Pool) > 0 {
		var elems []string
		for _, rg := range r.Pool {
			elems = append(elems, rangeText(rg))
		}
		fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
	}
	fmt.Fprintf(&b, "\t}\n")
	fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n", nftChain)
	for _, proto := range []string{"tcp", "udp"} {
		fmt.Fprintf(&b, "\t\tmeta l4proto %s ip daddr @%s meta mark set %s tproxy ip to 127.0.0.1:%d accept\n", proto, nftSet, mark, r.Port)
	}
	if r.V6Prefix.IsValid() {
		for _, proto := range []string{"tcp", "udp"} {
			fmt.Fprintf(&b, "\t\tmeta l4proto %s ip6 daddr %s meta mark set %s tproxy ip6 to [::1]:%d accept\n", proto, r.V6Prefix, mark, r.Port)
		}
	}
	fmt.Fprintf(&b, "\t}\n}\nEOF\n")
	families := []string{"ip"}
	if r.V6Prefix.IsValid() {
		families = append(families, "ip -6")
	}
	for _, ip := range families {
		any := "0.0.0.0/0"
		if ip != "ip" {
			any = "::/0"
		}
		fmt.Fprintf(&b, "%s rule del fwmark %s lookup %d priority %d 2>/dev/null || true\n", ip, mark, r.Table, r.Table)
		fmt.Fprintf(&b, "%s rule add fwmark %s lookup %d priority %d\n", ip, mark, r.Table, r.Table)
		fmt.Fprintf(&b, "%s route replace local %s dev lo table %d\n", ip, any, r.Table)
	}
	fmt.Fprintf(&b, "# To remove: nft delete table inet %s; ip rule del fwmark %s lookup %d; ip route flush table %d", NFTTable, mark, r.Table, r.Table)
	if r.V6Prefix.IsValid() {
		fmt.Fprintf(&b, "; the same with ip -6")
	}
	b.WriteString("\n")
	return b.String()
}
