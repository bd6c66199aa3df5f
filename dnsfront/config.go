package dnsfront

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/pool"
)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Addr is host:port for both UDP and TCP. With port 0 one port is
	// chosen for both, so that a truncated UDP reply can be retried over
	// TCP at the same address.
	Addr string
	// Domains are the names answered: a name matches when it equals or is
	// under one of them; "." matches every name. At least one is required.
	Domains []string
	// Upstreams are host:port resolvers, tried in order. Empty means the
	// nameservers of /etc/resolv.conf; if there are none, New fails rather
	// than guess a resolver that might be this server itself.
	Upstreams []string
	// IgnoreDestinations: a name with any upstream A record in one of these
	// prefixes is answered with the upstream records, not a pool address.
	IgnoreDestinations []netip.Prefix
	// V6Prefix is a /96; AAAA answers are this prefix with the pool's IPv4
	// address in the last 32 bits. The zero value answers AAAA with
	// NOERROR and no records, so clients fall back to IPv4.
	V6Prefix netip.Prefix
	// TTL of synthesized answers. Default 60s.
	TTL time.Duration
	// CacheMinTTL and CacheMaxTTL bound how long upstream answers are
	// cached. Defaults 5s and 1h.
	CacheMinTTL, CacheMaxTTL time.Duration
	// CacheSize bounds the number of cached upstream answers. Default 65536.
	CacheSize int
	// ClientMap is an optional file of "prefix clientID" lines ('#'
	// starts a comment); the longest prefix holding the query's source
	// names its client. Sources matching no line are named by their
	// address.
	ClientMap string
	// RateLimit is new allocations per second per client; 0 means no
	// limit. Burst is the bucket size, default max(1, RateLimit).
	RateLimit float64
	Burst     int
	// WriteTimeout bounds IPForDomain. Default 2s: well inside a stub
	// resolver's retry interval, so that a cluster without quorum answers
	// SERVFAIL before the client has given up on us.
	WriteTimeout time.Duration
	// UpstreamTimeout bounds one exchange with one upstream. Default 2s.
	UpstreamTimeout time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now is the clock of the cache and the rate limiter. Default time.Now.
	Now func() time.Time
}

func (cfg *Config) setDefaults() {
	if cfg.TTL == 0 {
		cfg.TTL = 60 * time.Second
	}
	if cfg.CacheMinTTL == 0 {
		cfg.CacheMinTTL = 5 * time.Second
	}
	if cfg.CacheMaxTTL == 0 {
		cfg.CacheMaxTTL = time.Hour
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 65536
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 2 * time.Second
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
}

// validate checks the settings and puts the prefixes in normal form.
func (cfg *Config) validate() error {
	switch {
	case cfg.TTL < 0 || cfg.TTL > 24*time.Hour:
		return fmt.Errorf("dnsfront: TTL %v is outside 0 to 24h", cfg.TTL)
	case cfg.CacheMinTTL < 0 || cfg.CacheMaxTTL < cfg.CacheMinTTL:
		return fmt.Errorf("dnsfront: cache TTL bounds %v to %v are not an interval", cfg.CacheMinTTL, cfg.CacheMaxTTL)
	case cfg.RateLimit < 0 || cfg.Burst < 0:
		return errors.New("dnsfront: rate limit and burst must not be negative")
	}
	if cfg.V6Prefix.IsValid() {
		if !cfg.V6Prefix.Addr().Is6() || cfg.V6Prefix.Addr().Is4In6() || cfg.V6Prefix.Bits() != 96 {
			return fmt.Errorf("dnsfront: V6Prefix %s is not an IPv6 /96", cfg.V6Prefix)
		}
		cfg.V6Prefix = cfg.V6Prefix.Masked()
	}
	// Copied: normalizing in place would edit the caller's slice.
	cfg.IgnoreDestinations = append([]netip.Prefix(nil), cfg.IgnoreDestinations...)
	for i, p := range cfg.IgnoreDestinations {
		if !p.IsValid() {
			return fmt.Errorf("dnsfront: ignore destination %d is not a valid prefix", i+1)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		cfg.IgnoreDestinations[i] = p.Masked()
	}
	return nil
}

// parseDomains normalizes the domains to answer; "." (every name) becomes
// the empty suffix.
func parseDomains(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, errors.New("dnsfront: no domains configured; use \".\" to answer every name")
	}
	var out []string
	for _, d := range in {
		if d == "." {
			out = append(out, "")
			continue
		}
		n, err := pool.NormalizeDomain(d)
		if err != nil {
			return nil, fmt.Errorf("dnsfront: domain: %w", err)
		}
		// Leave room for the synthesized SOA's mailbox, which must also
		// be a valid name.
		if len("hostmaster.")+len(n) > 253 {
			return nil, fmt.Errorf("dnsfront: domain %q is too long to hold a synthesized SOA", d)
		}
		out = append(out, n)
	}
	return out, nil
}

// resolveUpstreams returns the upstreams as host:port, port 53 when an
// address comes alone; none configured means /etc/resolv.conf's.
func resolveUpstreams(ups []string) ([]string, error) {
	if len(ups) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("dnsfront: no upstreams configured and /etc/resolv.conf is unusable: %w", err)
		}
		for _, srv := range cc.Servers {
			ups = append(ups, net.JoinHostPort(srv, cc.Port))
		}
		if len(ups) == 0 {
			return nil, errors.New("dnsfront: no upstreams configured and /etc/resolv.conf names no nameserver")
		}
	}
	var out []string
	for _, u := range ups {
		if a, err := netip.ParseAddr(u); err == nil {
			u = netip.AddrPortFrom(a, 53).String()
		}
		if _, port, err := net.SplitHostPort(u); err != nil || port == "" {
			return nil, fmt.Errorf("dnsfront: upstream %q is not host:port", u)
		}
		out = append(out, u)
	}
	return out, nil
}
