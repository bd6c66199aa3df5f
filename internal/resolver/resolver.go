// Package resolver asks upstream resolvers for A and AAAA records on behalf
// of the DNS front end and the connector, and caches their answers. It is
// the only part of ippool that believes what arrives from the network about
// names, so it guards its cache as unbound does (docs/design.md#the-resolver):
//
//   - every UDP query goes out of a socket connected to the upstream for
//     that query alone, so the kernel picks a random source port for it
//     (released when the exchange ends) and drops datagrams from any other
//     address or port;
//   - the query ID comes from a cryptographic generator;
//   - the query name's letters are in random case (draft-vixie-dnsext-0x20),
//     and a reply must echo the question (name, case, type, class) exactly;
//   - a reply that is not the one awaited (short, wrong ID, wrong question)
//     never ends the wait: it is counted, and past
//     Config.UnwantedReplyThreshold of them the whole cache is dropped, as
//     unbound's unwanted-reply-threshold does, since someone is guessing;
//   - A and AAAA answers in private networks (privateaddr) are dropped for
//     names outside Config.PrivateDomains, as unbound's private-address
//     does, so that a public name cannot point the gateway inwards.
package resolver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/privateaddr"
	"github.com/ippool/ippool/pool"
)

// ednsUDPSize is the reply size queries ask upstreams for: the DNS Flag Day
// 2020 value, which avoids IP fragmentation on every common path.
const ednsUDPSize = 1232

// Config configures a Resolver. Zero values take the documented defaults.
type Config struct {
	// Upstreams are resolvers, tried in order: host:port or an address
	// alone (port 53) for plain DNS; tls://host[:port][@name] for DNS over
	// TLS (port 853; name is what the certificate must carry, default the
	// host); an https:// URL for DNS over HTTPS (RFC 8484, POST). Encrypted
	// upstreams keep connections open between queries. Empty means the nameservers of /etc/resolv.conf; if
	// there are none, New fails rather than guess a resolver that might be
	// the DNS front end itself.
	Upstreams []string
	// IgnoreDestinations: an answer with an address in one of these
	// prefixes is flagged (Answer.Ignored). Its addresses are kept even
	// when private: an operator who names a network here means names that
	// point into it.
	IgnoreDestinations []netip.Prefix
	// CacheMinTTL and CacheMaxTTL bound how long answers are cached.
	// Defaults 5s and 1h.
	CacheMinTTL, CacheMaxTTL time.Duration
	// CacheSize bounds the number of cached answers. Default 65536.
	CacheSize int
	// UpstreamTimeout bounds one exchange with one upstream. Default 2s.
	UpstreamTimeout time.Duration
	// UpstreamCA is a PEM file of certificates trusted for encrypted
	// upstreams besides the system's roots.
	UpstreamCA string
	// UnwantedReplyThreshold is how many unwanted replies (see the package
	// comment) clear the cache; 0 means never.
	UnwantedReplyThreshold int
	// PrivateDomains are names (and the names under them) whose answers
	// may hold private addresses.
	PrivateDomains []string
	// AllowPrivate are private networks whose addresses any name's answer
	// may hold.
	AllowPrivate []netip.Prefix
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now is the cache's clock. Default time.Now.
	Now func() time.Time
}

// Defaults of Config.
const (
	DefaultCacheMinTTL = 5 * time.Second
	DefaultCacheMaxTTL = time.Hour
	DefaultCacheSize   = 65536
	// DefaultUnwantedReplyThreshold is serve's default; unbound suggests
	// ten million for a busy resolver, but ippool's upstream traffic is a
	// gateway's, and a flood of guesses shows in far fewer.
	DefaultUnwantedReplyThreshold = 10000
)

// Answer is what the front end and the connector need of an upstream reply.
// It is shared by every reader of the cache and must not be changed.
type Answer struct {
	Rcode int // dns.RcodeSuccess or dns.RcodeNameError; other codes are errors
	// RRs is the upstream answer section restricted to the asked type and
	// CNAMEs, less the private addresses dropped, kept as received so that
	// ignored names pass through unchanged.
	RRs []dns.RR
	// Ignored is true when an address lies in Config.IgnoreDestinations;
	// computed once at store time so cache hits cost nothing.
	Ignored bool
	// PrivateOnly is true when the upstream gave addresses of the asked
	// type and every one was dropped as private: the name has no address
	// of that type as far as clients are concerned.
	PrivateOnly bool
	Expires     time.Time
}

// Stats are counters since the resolver was created.
type Stats struct {
	CacheHits      uint64 // lookups answered from the cache
	CacheMisses    uint64 // lookups sent upstream
	UpstreamErrors uint64 // lookups no upstream answered
	// UnwantedReplies: UDP replies that were not the awaited one (short,
	// wrong ID, wrong question or case).
	UnwantedReplies uint64
	CacheCleared    uint64 // times UnwantedReplyThreshold cleared the cache
	PrivateDropped  uint64 // private addresses dropped from answers
}

type counters struct {
	hits, misses, errors, unwanted, cleared, privateDropped atomic.Uint64
}

// Resolver looks names up upstream through a cache. Its methods are safe for
// concurrent use.
type Resolver struct {
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	upstreams []*upstream
	tcpClient *dns.Client
	sockets   udpSockets // for UDP queries
	cache     cache
	flight    flight
	stats     counters
	// sinceClear counts unwanted replies towards the threshold.
	sinceClear atomic.Int64
	// clearLogged is when a clearing was last logged, Unix nanoseconds.
	clearLogged atomic.Int64
	private     []string // Config.PrivateDomains, normalized
	own         privateaddr.OwnNetworks
	// ownNetwork is own.Contains but in tests, which cannot know what
	// networks the machine they run on has (a test runner's may well be a
	// documentation range).
	ownNetwork func(netip.Addr) bool

	// ctx ends at Close, so that lookups in flight stop.
	ctx    context.Context
	cancel context.CancelFunc
}

// upstream is one configured upstream.
type upstream struct {
	addr string // host:port; for HTTPS, the URL
	kind int    // kindPlain, kindTLS or kindHTTPS
	// udp is addr parsed once, so a query's socket costs no lookup;
	// invalid when addr names a host.
	udp netip.AddrPort
	// noCaps is set once the upstream answered a question without echoing
	// its case (see exchange).
	noCaps atomic.Bool

	tls  *tls.Config    // kindTLS
	idle chan *tls.Conn // kindTLS: idle connections
	http *http.Client   // kindHTTPS
}

func (u *upstream) String() string { return u.addr }

// New checks cfg and returns a resolver.
func New(cfg Config) (*Resolver, error) {
	if cfg.CacheMinTTL == 0 {
		cfg.CacheMinTTL = DefaultCacheMinTTL
	}
	if cfg.CacheMaxTTL == 0 {
		cfg.CacheMaxTTL = DefaultCacheMaxTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
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
	switch {
	case cfg.CacheMinTTL < 0 || cfg.CacheMaxTTL < cfg.CacheMinTTL:
		return nil, fmt.Errorf("resolver: cache TTL bounds %v to %v are not an interval", cfg.CacheMinTTL, cfg.CacheMaxTTL)
	case cfg.UnwantedReplyThreshold < 0:
		return nil, errors.New("resolver: the unwanted-reply threshold must not be negative")
	}
	var err error
	if cfg.IgnoreDestinations, err = normalizePrefixes("ignore destination", cfg.IgnoreDestinations); err != nil {
		return nil, err
	}
	if cfg.AllowPrivate, err = normalizePrefixes("allowed private network", cfg.AllowPrivate); err != nil {
		return nil, err
	}
	var private []string
	for _, d := range cfg.PrivateDomains {
		n, err := pool.NormalizeDomain(strings.TrimSuffix(d, "."))
		if err != nil {
			return nil, fmt.Errorf("resolver: private domain: %w", err)
		}
		private = append(private, n)
	}
	addrs, err := resolveUpstreams(cfg.Upstreams)
	if err != nil {
		return nil, err
	}
	roots, err := loadRoots(cfg.UpstreamCA)
	if err != nil {
		return nil, err
	}
	r := &Resolver{
		cfg:       cfg,
		log:       cfg.Logger,
		now:       cfg.Now,
		tcpClient: &dns.Client{Net: "tcp", Timeout: cfg.UpstreamTimeout},
		cache:     cache{entries: make(map[cacheKey]*Answer), max: cfg.CacheSize},
		flight:    flight{calls: make(map[cacheKey]*flightCall)},
		private:   private,
	}
	for _, a := range addrs {
		u, err := parseUpstream(a, roots)
		if err != nil {
			return nil, err
		}
		if ap, err := netip.ParseAddrPort(u.addr); err == nil && u.kind == kindPlain {
			u.udp = ap
		}
		r.upstreams = append(r.upstreams, u)
	}
	r.ownNetwork = r.own.Contains
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Close stops lookups in flight and closes idle connections.
func (r *Resolver) Close() {
	r.cancel()
	for _, u := range r.upstreams {
		u.closeIdle()
	}
	r.sockets.closeAll()
}

// Stats returns a snapshot of the counters.
func (r *Resolver) Stats() Stats {
	c := &r.stats
	return Stats{
		CacheHits:       c.hits.Load(),
		CacheMisses:     c.misses.Load(),
		UpstreamErrors:  c.errors.Load(),
		UnwantedReplies: c.unwanted.Load(),
		CacheCleared:    c.cleared.Load(),
		PrivateDropped:  c.privateDropped.Load(),
	}
}

// ErrUpstream marks a lookup that no upstream answered usefully.
var ErrUpstream = errors.New("upstream lookup failed")

// Cached returns the answer for name and qtype if the cache holds a fresh
// one, without counting a hit: the DNS front end's fast path reads the
// cache on every query it answers and counts its hits in bulk (CountHits).
func (r *Resolver) Cached(name string, qtype uint16, now time.Time) (*Answer, bool) {
	return r.cache.get(cacheKey{name: name, qtype: qtype}, now)
}

// CountHits adds n cache hits that Cached served.
func (r *Resolver) CountHits(n uint64) { r.stats.hits.Add(n) }

// Lookup returns the answer for name (normalized, pool.NormalizeDomain) and
// qtype, from the cache when it is fresh. Concurrent lookups of one name
// and type share one upstream exchange.
func (r *Resolver) Lookup(name string, qtype uint16) (*Answer, error) {
	k := cacheKey{name: name, qtype: qtype}
	if a, ok := r.cache.get(k, r.now()); ok {
		r.stats.hits.Add(1)
		return a, nil
	}
	return r.flight.do(k, func() (*Answer, error) {
		// Another flight may have filled the cache between our miss and
		// our becoming the leader of this one.
		if a, ok := r.cache.get(k, r.now()); ok {
			r.stats.hits.Add(1)
			return a, nil
		}
		r.stats.misses.Add(1)
		a, err := r.resolve(name, qtype)
		if err != nil {
			r.stats.errors.Add(1)
			return nil, err
		}
		r.cache.put(k, a, r.now())
		return a, nil
	})
}

// resolve asks each upstream in turn. The lookup runs under the resolver's
// context, not a caller's, because coalesced waiters share its result and
// one caller giving up must not fail the others.
func (r *Resolver) resolve(name string, qtype uint16) (*Answer, error) {
	var errs []error
	for _, up := range r.upstreams {
		m, err := r.exchange(name, qtype, up)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			continue
		}
		if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
			errs = append(errs, fmt.Errorf("%s: rcode %s", up, dns.RcodeToString[m.Rcode]))
			continue
		}
		return r.digest(m, name, qtype), nil
	}
	err := fmt.Errorf("%w for %s %s: %w", ErrUpstream, name, dns.TypeToString[qtype], errors.Join(errs...))
	r.log.Warn("upstream lookup failed", "name", name, "type", dns.TypeToString[qtype], "err", err)
	return nil, err
}

// unwanted counts a reply that was not the awaited one, and clears the
// cache when they pass the threshold: so many means someone is guessing at
// our queries, and one guess may have landed.
func (r *Resolver) unwanted() {
	r.stats.unwanted.Add(1)
	t := int64(r.cfg.UnwantedReplyThreshold)
	if t <= 0 {
		return
	}
	if n := r.sinceClear.Add(1); n < t || !r.sinceClear.CompareAndSwap(n, 0) {
		return
	}
	r.cache.clear()
	cleared := r.stats.cleared.Add(1)
	// A flood clears the cache many times a second: one warning a minute
	// says as much as a thousand.
	now := time.Now().UnixNano()
	if last := r.clearLogged.Load(); now-last >= int64(time.Minute) && r.clearLogged.CompareAndSwap(last, now) {
		r.log.Warn("unwanted upstream replies passed the threshold: the cache is cleared, in case one of them was a forged answer that was believed",
			"threshold", t, "unwanted_total", r.stats.unwanted.Load(), "cleared_total", cleared)
	}
}

// resolveUpstreams returns the upstreams, or /etc/resolv.conf's when none
// is configured.
func resolveUpstreams(ups []string) ([]string, error) {
	if len(ups) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("resolver: no upstreams configured and /etc/resolv.conf is unusable: %w", err)
		}
		for _, srv := range cc.Servers {
			ups = append(ups, net.JoinHostPort(srv, cc.Port))
		}
		if len(ups) == 0 {
			return nil, errors.New("resolver: no upstreams configured and /etc/resolv.conf names no nameserver")
		}
	}
	return ups, nil
}

// normalizePrefixes masks host bits and folds IPv4-mapped prefixes into
// IPv4, because the addresses they are matched against are unmapped first.
// It copies: normalizing in place would edit the caller's slice.
func normalizePrefixes(what string, in []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, len(in))
	for i, p := range in {
		if !p.IsValid() {
			return nil, fmt.Errorf("resolver: %s %d is not a valid prefix", what, i+1)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out[i] = p.Masked()
	}
	return out, nil
}
