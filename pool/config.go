package pool

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"go4.org/netipx"
)

// DefaultLifetime is how long a mapping may sit unused before its address
// may be given to another domain of the same client.
const DefaultLifetime = 48 * time.Hour

// maxPoolSize keeps every pool index inside an int32, with room to spare.
// It is a /1; nobody needs more, and a typo like 0.0.0.0/0 is caught.
const maxPoolSize = 1 << 31

// Config is the replicated pool configuration. It is set once when a cluster
// is bootstrapped and changed only by an explicit operation, so every server
// allocates from the same addresses with the same lifetime.
type Config struct {
	// Pool is the union of the configured prefixes and ranges, sorted.
	Pool []netipx.IPRange
	// Exclude is subtracted from Pool; it may reach outside it.
	Exclude []netipx.IPRange
	// Lifetime is how long a mapping may stay unused before it expires.
	Lifetime time.Duration
}

// ParseConfig builds a Config from the operator's text: comma-separated
// prefixes ("10.0.0.0/16"), ranges ("10.0.0.1-10.0.0.99") or single addresses.
// It refuses IPv6, malformed, empty or overlapping items, naming the item.
func ParseConfig(pool, exclude string, lifetime time.Duration) (Config, error) {
	p, err := ParseRanges(pool)
	if err != nil {
		return Config{}, err
	}
	x, err := ParseRanges(exclude)
	if err != nil {
		return Config{}, errorf(CodeInvalidConfig, "exclude: %v", err)
	}
	c := Config{Pool: p, Exclude: x, Lifetime: lifetime}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ParseRanges parses a comma-separated list of IPv4 prefixes, ranges and
// addresses, sorted by first address. An empty string is an empty list.
func ParseRanges(s string) ([]netipx.IPRange, error) {
	var out []netipx.IPRange
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		r, err := parseRange(item)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sortRanges(out)
	return out, nil
}

func parseRange(item string) (netipx.IPRange, error) {
	switch {
	case strings.Contains(item, "/"):
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return netipx.IPRange{}, errorf(CodeInvalidConfig, "%q is not a valid prefix: %v", item, err)
		}
		if !p.Addr().Is4() {
			return netipx.IPRange{}, errorf(CodeInvalidConfig, "%q is not IPv4; the pool holds IPv4 addresses only", item)
		}
		if p.Masked() != p {
			return netipx.IPRange{}, errorf(CodeInvalidConfig, "%q has host bits set; did you mean %s?", item, p.Masked())
		}
		return netipx.RangeOfPrefix(p), nil
	case strings.Contains(item, "-"):
		from, to, _ := strings.Cut(item, "-")
		a, err1 := netip.ParseAddr(strings.TrimSpace(from))
		b, err2 := netip.ParseAddr(strings.TrimSpace(to))
		if err1 != nil || err2 != nil {
			return netipx.IPRange{}, errorf(CodeInvalidConfig, "%q is not a valid range: want FIRST-LAST, like 10.0.0.1-10.0.0.99", item)
		}
		if !a.Is4() || !b.Is4() {
			return netipx.IPRange{}, errorf(CodeInvalidConfig, "%q is not IPv4; the pool holds IPv4 addresses only", item)
		}
		if b.Less(a) {
			return netipx.IPRange{}, errorf(CodeInvalidConfig, "range %q is empty: its last address is below its first", item)
		}
		return netipx.IPRangeFrom(a, b), nil
	default:
		a, err := netip.ParseAddr(item)
		if err != nil {
			return netipx.IPRange{}, errorf(CodeInvalidConfig, "%q is not a prefix, a range or an address", item)
		}
		if !a.Is4() {
			return netipx.IPRange{}, errorf(CodeInvalidConfig, "%q is not IPv4; the pool holds IPv4 addresses only", item)
		}
		return netipx.IPRangeFrom(a, a), nil
	}
}

func sortRanges(rs []netipx.IPRange) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].From().Less(rs[j].From()) })
}

// Validate checks what ParseConfig checks, for a Config built in code or
// decoded from the log.
func (c Config) Validate() error {
	if len(c.Pool) == 0 {
		return errorf(CodeInvalidConfig, "the pool is empty: give at least one IPv4 prefix or range")
	}
	if c.Lifetime <= 0 {
		return errorf(CodeInvalidConfig, "lifetime %v is not positive", c.Lifetime)
	}
	for _, list := range [][]netipx.IPRange{c.Pool, c.Exclude} {
		if len(list) > maxRanges {
			return errorf(CodeInvalidConfig, "%d ranges exceed the limit of %d per list", len(list), maxRanges)
		}
		for i, r := range list {
			if !r.IsValid() || !r.From().Is4() || !r.To().Is4() {
				return errorf(CodeInvalidConfig, "%s is not a valid IPv4 range", r)
			}
			if i > 0 && !list[i-1].From().Less(r.From()) {
				return errorf(CodeInvalidConfig, "ranges are not sorted at %s", r)
			}
		}
	}
	for i := 1; i < len(c.Pool); i++ {
		if c.Pool[i-1].Overlaps(c.Pool[i]) {
			return errorf(CodeInvalidConfig, "pool items %s and %s overlap", rangeString(c.Pool[i-1]), rangeString(c.Pool[i]))
		}
	}
	set, err := c.addrSet()
	if err != nil {
		return err
	}
	if set.size == 0 {
		return errorf(CodeInvalidConfig, "the pool %s has no address left after excluding %s", c.PoolString(), c.ExcludeString())
	}
	return nil
}

// Equal reports whether two configurations describe the same pool.
func (c Config) Equal(o Config) bool {
	return c.Lifetime == o.Lifetime && slices.Equal(c.Pool, o.Pool) && slices.Equal(c.Exclude, o.Exclude)
}

// MinLifetime is the shortest lifetime a new configuration may have: below
// it, mappings would expire between a DNS answer and the connection it
// announces.
const MinLifetime = time.Second

// reservedPrefixes are addresses a pool must not hand out: traffic to them
// never reaches a gateway (unspecified, loopback, link-local, multicast,
// limited broadcast).
var reservedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
}

// CheckNew applies, on top of Validate, the limits a configuration given
// by an operator (flags, the API) must meet: no reserved addresses in the
// effective pool, a lifetime of at least MinLifetime. Stored and replicated
// configurations are not held to it, so a data dir or log written before
// these limits still reads back to the same state.
func (c Config) CheckNew() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Lifetime < MinLifetime {
		return errorf(CodeInvalidConfig, "lifetime %v is under the minimum of %v", c.Lifetime, MinLifetime)
	}
	set, err := c.Addresses()
	if err != nil {
		return err
	}
	for _, p := range reservedPrefixes {
		if set.OverlapsPrefix(p) {
			return errorf(CodeInvalidConfig, "the pool holds addresses of %s, which never reach a gateway (unspecified, loopback, link-local, multicast or broadcast); exclude them or choose another range", p)
		}
	}
	return nil
}

// PoolString renders the pool in the form ParseConfig reads.
func (c Config) PoolString() string { return rangesString(c.Pool) }

// ExcludeString renders the exclusions in the form ParseConfig reads.
func (c Config) ExcludeString() string { return rangesString(c.Exclude) }

// String is the text form MarshalText writes: "pool 10.0.0.0/16 exclude
// 10.0.0.1 lifetime 48h0m0s" (no exclude part when there is none).
func (c Config) String() string {
	s := "pool " + c.PoolString()
	if len(c.Exclude) > 0 {
		s += " exclude " + c.ExcludeString()
	}
	return s + " lifetime " + c.Lifetime.String()
}

// MarshalText writes the configuration as one value, so the data dir's
// record and the servers' messages to each other carry it whole rather
// than as three strings parsed back separately.
func (c Config) MarshalText() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return []byte(c.String()), nil
}

// UnmarshalText reads what MarshalText writes, and validates it: a
// configuration that does not parse is an error, never a default.
func (c *Config) UnmarshalText(b []byte) error {
	f := strings.Fields(string(b))
	bad := func(why string) error {
		return errorf(CodeInvalidConfig, "pool configuration %q: %s; want \"pool RANGES [exclude RANGES] lifetime DURATION\"", b, why)
	}
	if len(f) != 4 && len(f) != 6 || f[0] != "pool" || f[len(f)-2] != "lifetime" {
		return bad("not in the form")
	}
	exclude := ""
	if len(f) == 6 {
		if f[2] != "exclude" {
			return bad("the second item is not exclude")
		}
		exclude = f[3]
	}
	lifetime, err := time.ParseDuration(f[len(f)-1])
	if err != nil {
		return bad(err.Error())
	}
	parsed, err := ParseConfig(f[1], exclude, lifetime)
	if err != nil {
		return bad(err.Error())
	}
	*c = parsed
	return nil
}

func rangesString(rs []netipx.IPRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = rangeString(r)
	}
	return strings.Join(parts, ",")
}

func rangeString(r netipx.IPRange) string {
	if r.From() == r.To() {
		return r.From().String()
	}
	if p, ok := r.Prefix(); ok {
		return p.String()
	}
	return r.From().String() + "-" + r.To().String()
}

// span is one run of consecutive pool addresses; before counts the pool
// addresses in earlier spans, so pool index and address convert in O(log spans).
type span struct {
	from, to uint32
	before   uint32
}

// addrSet is the effective pool: Pool minus Exclude, as sorted disjoint spans.
type addrSet struct {
	spans []span
	size  uint32
}

// Addresses is the effective pool as a set: Pool minus Exclude.
func (c Config) Addresses() (*netipx.IPSet, error) {
	var b netipx.IPSetBuilder
	for _, r := range c.Pool {
		b.AddRange(r)
	}
	for _, r := range c.Exclude {
		b.RemoveRange(r)
	}
	set, err := b.IPSet()
	if err != nil {
		return nil, errorf(CodeInvalidConfig, "building the pool: %v", err)
	}
	return set, nil
}

func (c Config) addrSet() (addrSet, error) {
	ipset, err := c.Addresses()
	if err != nil {
		return addrSet{}, err
	}
	var s addrSet
	var total uint64
	for _, r := range ipset.Ranges() {
		from, to := addrToU32(r.From()), addrToU32(r.To())
		s.spans = append(s.spans, span{from: from, to: to, before: uint32(total)})
		total += uint64(to-from) + 1
		if total > maxPoolSize {
			return addrSet{}, errorf(CodeInvalidConfig, "the pool has more than %d addresses; use a smaller prefix", uint64(maxPoolSize))
		}
	}
	s.size = uint32(total)
	return s, nil
}

// indexOf returns the pool index of a, or false when a is not in the pool.
func (s *addrSet) indexOf(a uint32) (uint32, bool) {
	i := sort.Search(len(s.spans), func(i int) bool { return s.spans[i].to >= a })
	if i == len(s.spans) || s.spans[i].from > a {
		return 0, false
	}
	return s.spans[i].before + (a - s.spans[i].from), true
}

// addrAt returns the address at pool index idx < size.
func (s *addrSet) addrAt(idx uint32) uint32 {
	i := sort.Search(len(s.spans), func(i int) bool { return s.spans[i].before > idx }) - 1
	return s.spans[i].from + (idx - s.spans[i].before)
}

func (s *addrSet) contains(a uint32) bool {
	_, ok := s.indexOf(a)
	return ok
}

func addrToU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32ToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
