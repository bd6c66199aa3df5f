package dnsfront

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/ippool/ippool/internal/clientid"
	"github.com/ippool/ippool/internal/resolver"
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
	// Upstreams are resolvers, tried in order, written as in
	// resolver.Config (plain, tls:// or https://). Empty means the
	// nameservers of /etc/resolv.conf.
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
	// Clients, when set, names every query's client instead of the source
	// address and ClientMap (a tailnet names the node that sent it). The
	// UDP fast path names clients by ClientMap only, so it is off then.
	Clients clientid.Namer
	// PolicyDenyRcode answers a name the policy denies: dns.RcodeNameError
	// (the default: to the client the name does not exist) or
	// dns.RcodeRefused.
	PolicyDenyRcode int
	// Allow lists the source prefixes that may query; any other source is
	// answered REFUSED before any other work. Nil or empty means
	// DefaultAllow. IPv4-mapped IPv6 sources match as IPv4.
	Allow []netip.Prefix
	// RateLimit is the refill rate, in tokens per second, of each client's
	// bucket; 0 means no limit. Burst is the bucket size, default
	// max(1, RateLimit). A query takes a token for each upstream lookup it
	// needs (a cache miss: the A lookup, and the AAAA lookup of a name
	// passed through) and for a new allocation, except that a query which
	// took one for its lookup allocates without a second. With no token
	// left the query is REFUSED before that work is done, so a client's
	// upstream lookups and new allocations are both bounded by its bucket.
	// Answers from local state (a mapped name whose upstream answer is
	// cached, a cached NXDOMAIN) take none.
	RateLimit float64
	Burst     int
	// NewClientRate bounds, per second across all sources, the queries
	// from clients the pool holds nothing of that would cost a token
	// above; 0 means no limit. NewClientBurst is the bucket size, default
	// max(1, NewClientRate). It is what stops a flood of forged sources,
	// each a new client with a full bucket of its own, from filling the
	// state and the Raft log; past it such queries are REFUSED. Known
	// clients are never held back by it.
	NewClientRate  float64
	NewClientBurst int
	// TCPMaxConns and TCPMaxConnsPerSource cap open DNS-over-TCP
	// connections in all and per source address; a connection past either
	// is closed at once. Defaults 256 and 16.
	TCPMaxConns, TCPMaxConnsPerSource int
	// TCPTimeout is how long a TCP connection may take to deliver its
	// next query in full (the first one included) and to take a reply.
	// Default 10s.
	TCPTimeout time.Duration
	// WriteTimeout bounds IPForDomain, give or take a sixteenth (writes
	// share deadlines: see sharedDeadline). Default 2s: well inside a stub
	// resolver's retry interval, so that a cluster without quorum answers
	// SERVFAIL before the client has given up on us.
	WriteTimeout time.Duration
	// UpstreamTimeout bounds one exchange with one upstream. Default 2s.
	UpstreamTimeout time.Duration
	// UnwantedReplyThreshold, PrivateDomains, AllowPrivate and UpstreamCA
	// are the resolver's (resolver.Config).
	UnwantedReplyThreshold int
	PrivateDomains         []string
	AllowPrivate           []netip.Prefix
	UpstreamCA             string
	// Resolver, when set, is the resolver to look names up with, shared
	// with others (the connector); the fields above that configure one
	// (Upstreams to AllowPrivate) are then unused, and Shutdown leaves it
	// open. Nil means New makes one of those fields (ResolverConfig).
	Resolver *resolver.Resolver
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now is the clock of the cache and the rate limiter. Default time.Now.
	Now func() time.Time
}

// Defaults of Config, and of serve's flags that set it.
const (
	DefaultTTL                  = 60 * time.Second
	DefaultCacheMinTTL          = 5 * time.Second
	DefaultCacheMaxTTL          = time.Hour
	DefaultTCPMaxConns          = 256
	DefaultTCPMaxConnsPerSource = 16
	DefaultTCPTimeout           = 10 * time.Second
)

// DefaultAllowText is DefaultAllow as serve's --dns-allow writes it.
const DefaultAllowText = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"

func (cfg *Config) setDefaults() {
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.CacheMinTTL == 0 {
		cfg.CacheMinTTL = DefaultCacheMinTTL
	}
	if cfg.CacheMaxTTL == 0 {
		cfg.CacheMaxTTL = DefaultCacheMaxTTL
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
	if len(cfg.Allow) == 0 {
		cfg.Allow = DefaultAllow()
	}
	if cfg.TCPMaxConns <= 0 {
		cfg.TCPMaxConns = DefaultTCPMaxConns
	}
	if cfg.TCPMaxConnsPerSource <= 0 {
		cfg.TCPMaxConnsPerSource = DefaultTCPMaxConnsPerSource
	}
	if cfg.TCPTimeout <= 0 {
		cfg.TCPTimeout = DefaultTCPTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
}

// ResolverConfig is the resolver configuration that cfg's fields describe.
func (cfg *Config) ResolverConfig() resolver.Config {
	return resolver.Config{
		Upstreams:              cfg.Upstreams,
		IgnoreDestinations:     cfg.IgnoreDestinations,
		CacheMinTTL:            cfg.CacheMinTTL,
		CacheMaxTTL:            cfg.CacheMaxTTL,
		CacheSize:              cfg.CacheSize,
		UpstreamTimeout:        cfg.UpstreamTimeout,
		UnwantedReplyThreshold: cfg.UnwantedReplyThreshold,
		PrivateDomains:         cfg.PrivateDomains,
		AllowPrivate:           cfg.AllowPrivate,
		UpstreamCA:             cfg.UpstreamCA,
		Logger:                 cfg.Logger,
		Now:                    cfg.Now,
	}
}

// validate checks the settings and puts the prefixes in normal form.
func (cfg *Config) validate() error {
	switch {
	case cfg.Clients != nil && cfg.ClientMap != "":
		return errors.New("dnsfront: a client map and another way of naming clients exclude each other")
	case cfg.TTL < 0 || cfg.TTL > 24*time.Hour:
		return fmt.Errorf("dnsfront: TTL %v is outside 0 to 24h", cfg.TTL)
	case cfg.CacheMinTTL < 0 || cfg.CacheMaxTTL < cfg.CacheMinTTL:
		return fmt.Errorf("dnsfront: cache TTL bounds %v to %v are not an interval", cfg.CacheMinTTL, cfg.CacheMaxTTL)
	case cfg.RateLimit < 0 || cfg.Burst < 0:
		return errors.New("dnsfront: rate limit and burst must not be negative")
	case cfg.NewClientRate < 0 || cfg.NewClientBurst < 0:
		return errors.New("dnsfront: new-client rate and burst must not be negative")
	}
	if cfg.V6Prefix.IsValid() {
		p, err := pool.CheckV6Prefix(cfg.V6Prefix)
		if err != nil {
			return fmt.Errorf("dnsfront: %w", err)
		}
		cfg.V6Prefix = p
	}
	var err error
	if cfg.Allow, err = normalizePrefixes("allowed source", cfg.Allow); err != nil {
		return err
	}
	cfg.IgnoreDestinations, err = normalizePrefixes("ignore destination", cfg.IgnoreDestinations)
	return err
}

// normalizePrefixes masks host bits and folds IPv4-mapped prefixes into
// IPv4, because the addresses they are matched against are unmapped first.
// It copies: normalizing in place would edit the caller's slice.
func normalizePrefixes(what string, in []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, len(in))
	for i, p := range in {
		if !p.IsValid() {
			return nil, fmt.Errorf("dnsfront: %s %d is not a valid prefix", what, i+1)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out[i] = p.Masked()
	}
	return out, nil
}

// DefaultAllow is the sources allowed to query when Config.Allow is empty:
// loopback and the private ranges (RFC 1918, the shared address space of
// RFC 6598 that carrier NAT and tailnets use, IPv6 unique local addresses).
// A public source is refused, as unbound refuses every source but
// localhost unless told otherwise, so that a server reachable from the
// internet looks up and allocates nothing for strangers; the refusal is no
// larger than the query, so forging a victim's source buys no amplification.
// Link-local sources are left out: a host picks one only to reach a server
// it addresses by a link-local address (RFC 6724 matches scopes), which a
// resolver configuration rarely does; allow fe80::/10 or 169.254.0.0/16
// explicitly for that.
func DefaultAllow() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range strings.Split(DefaultAllowText, ",") {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
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
