// Package dnsfront is the DNS front end of ippool: a resolver that answers A
// and AAAA questions for configured domains with an address from the pool,
// so that a client's traffic for a domain reaches the NAT connector at an
// address that names the domain.
//
// Every name is still resolved upstream before it is given an address,
// because a name that does not exist must stay NXDOMAIN (a pool address for
// it would hide typos and burn addresses), and because names that resolve
// into IgnoreDestinations are reachable without the connector and are
// passed through untouched.
//
// Response codes, and why:
//
//   - Names outside Config.Domains: REFUSED, so a misconfigured client
//     learns quickly that this server is not its general resolver.
//   - Names inside Config.Domains that pool.NormalizeDomain refuses
//     (bad characters, too long, escaped dots): NXDOMAIN. They cannot exist
//     as a pool domain (S8), and NXDOMAIN is the answer resolvers cache;
//     FORMERR would claim the packet was broken when it was not.
//   - A new allocation over Config.RateLimit: REFUSED with an Extended DNS
//     Error. It is a policy decision, not a fault; SERVFAIL would invite
//     resolvers to retry at once, and REFUSED sends them to another server
//     of the cluster, which is what an operator wants of a busy client.
//   - Pool exhausted, no quorum, no leader, upstream unreachable: SERVFAIL
//     with an Extended DNS Error naming the cause.
//
// Extended DNS Errors (RFC 8914) travel in the OPT record, and RFC 6891
// forbids an OPT in a reply to a query without one, so clients that do not
// send EDNS0 get the bare response code.
package dnsfront

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/time/rate"

	"github.com/ippool/ippool/pool"
)

// ednsUDPSize is the largest UDP reply we send (and ask upstreams for): the
// DNS Flag Day 2020 value, which avoids IP fragmentation on every common
// path.
const ednsUDPSize = 1232

// Pool is what the DNS front end needs of an address pool. localpool.Pool
// implements it, and so does the cluster service.
type Pool interface {
	// IPForDomain returns the client's address for domain, allocating one
	// if the client has none.
	IPForDomain(ctx context.Context, client, domain string) (netip.Addr, error)
	// Get returns the client's mapping for a normalized domain without
	// allocating. The front end uses it only to decide whether a query
	// would allocate, and so whether the rate limit applies.
	Get(client, domain string) (pool.Mapping, bool)
}

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

// Stats are counters since the server was created.
type Stats struct {
	Queries        uint64 // messages handed to ServeDNS, responses excluded
	Answered       uint64 // replies with NOERROR or NXDOMAIN
	Refused        uint64 // replies with REFUSED (rate-limited ones included)
	ServFail       uint64 // replies with SERVFAIL
	OtherErrors    uint64 // replies with FORMERR, NOTIMP or BADVERS
	RateLimited    uint64 // new allocations refused by the rate limit
	UpstreamErrors uint64 // upstream lookups that no upstream answered
	CacheHits      uint64 // upstream lookups answered from the cache
	CacheMisses    uint64 // upstream lookups sent upstream
}

type counters struct {
	queries, answered, refused, servfail, other         atomic.Uint64
	rateLimited, upstreamErrors, cacheHits, cacheMisses atomic.Uint64
}

// Server is a DNS server answering from a Pool. Its methods are safe for
// concurrent use.
type Server struct {
	cfg       Config
	pool      Pool
	log       *slog.Logger
	now       func() time.Time
	domains   []string // normalized; "" is the root
	upstreams []string
	clients   *clientMap
	limits    *limiters
	ttl       uint32

	udpClient, tcpClient *dns.Client
	udpConns             connPool
	cache                cache
	flight               flight
	stats                counters

	// ctx ends at Shutdown, so that upstream lookups and pool writes in
	// flight stop instead of holding shutdown up.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	udp, tcp *dns.Server
	addr     string
}

// New checks cfg and returns a server that is not yet listening; ServeDNS
// may be called on it directly.
func New(cfg Config, p Pool) (*Server, error) {
	if p == nil {
		return nil, errors.New("dnsfront: no pool")
	}
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
	switch {
	case cfg.TTL < 0 || cfg.TTL > 24*time.Hour:
		return nil, fmt.Errorf("dnsfront: TTL %v is outside 0 to 24h", cfg.TTL)
	case cfg.CacheMinTTL < 0 || cfg.CacheMaxTTL < cfg.CacheMinTTL:
		return nil, fmt.Errorf("dnsfront: cache TTL bounds %v to %v are not an interval", cfg.CacheMinTTL, cfg.CacheMaxTTL)
	case cfg.RateLimit < 0 || cfg.Burst < 0:
		return nil, errors.New("dnsfront: rate limit and burst must not be negative")
	}
	if cfg.V6Prefix.IsValid() {
		if !cfg.V6Prefix.Addr().Is6() || cfg.V6Prefix.Addr().Is4In6() || cfg.V6Prefix.Bits() != 96 {
			return nil, fmt.Errorf("dnsfront: V6Prefix %s is not an IPv6 /96", cfg.V6Prefix)
		}
		cfg.V6Prefix = cfg.V6Prefix.Masked()
	}
	// Copied: normalizing in place would edit the caller's slice.
	cfg.IgnoreDestinations = append([]netip.Prefix(nil), cfg.IgnoreDestinations...)
	for i, p := range cfg.IgnoreDestinations {
		if !p.IsValid() {
			return nil, fmt.Errorf("dnsfront: ignore destination %d is not a valid prefix", i+1)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		cfg.IgnoreDestinations[i] = p.Masked()
	}

	s := &Server{
		cfg:       cfg,
		pool:      p,
		log:       cfg.Logger,
		now:       cfg.Now,
		ttl:       uint32(cfg.TTL / time.Second),
		udpClient: &dns.Client{Net: "udp", Timeout: cfg.UpstreamTimeout, UDPSize: ednsUDPSize},
		udpConns:  connPool{max: 64},
		tcpClient: &dns.Client{Net: "tcp", Timeout: cfg.UpstreamTimeout},
		cache:     cache{entries: make(map[cacheKey]*upstreamAnswer), max: cfg.CacheSize},
		flight:    flight{calls: make(map[cacheKey]*flightCall)},
	}

	if len(cfg.Domains) == 0 {
		return nil, errors.New("dnsfront: no domains configured; use \".\" to answer every name")
	}
	for _, d := range cfg.Domains {
		if d == "." {
			s.domains = append(s.domains, "")
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
		s.domains = append(s.domains, n)
	}

	ups := cfg.Upstreams
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
	for _, u := range ups {
		if a, err := netip.ParseAddr(u); err == nil {
			u = netip.AddrPortFrom(a, 53).String()
		}
		if _, port, err := net.SplitHostPort(u); err != nil || port == "" {
			return nil, fmt.Errorf("dnsfront: upstream %q is not host:port", u)
		}
		s.upstreams = append(s.upstreams, u)
	}

	if cfg.ClientMap != "" {
		cm, err := loadClientMap(cfg.ClientMap)
		if err != nil {
			return nil, fmt.Errorf("dnsfront: %w", err)
		}
		s.clients = cm
	}
	if cfg.RateLimit > 0 {
		burst := cfg.Burst
		if burst == 0 {
			burst = max(1, int(cfg.RateLimit))
		}
		s.limits = &limiters{m: make(map[string]*rate.Limiter), limit: rate.Limit(cfg.RateLimit), burst: burst}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Queries:        c.queries.Load(),
		Answered:       c.answered.Load(),
		Refused:        c.refused.Load(),
		ServFail:       c.servfail.Load(),
		OtherErrors:    c.other.Load(),
		RateLimited:    c.rateLimited.Load(),
		UpstreamErrors: c.upstreamErrors.Load(),
		CacheHits:      c.cacheHits.Load(),
		CacheMisses:    c.cacheMisses.Load(),
	}
}

// Start listens on UDP and TCP and returns once both accept queries, so a
// caller (or a test) may send a query as soon as it returns.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp != nil {
		return errors.New("dnsfront: already started")
	}
	if s.ctx.Err() != nil {
		return errors.New("dnsfront: server was shut down")
	}
	pc, ln, err := listenBoth(s.cfg.Addr)
	if err != nil {
		return err
	}
	udp := &dns.Server{PacketConn: pc, Handler: s, UDPSize: 4096}
	tcp := &dns.Server{Listener: ln, Handler: s, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	for _, srv := range []*dns.Server{udp, tcp} {
		up := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(up) }
		go func() {
			err := srv.ActivateAndServe()
			if err != nil {
				s.log.Error("dns server stopped", "addr", s.cfg.Addr, "err", err)
			}
			failed <- err
		}()
		select {
		case <-up:
		case err := <-failed:
			pc.Close()
			ln.Close()
			if srv == tcp {
				_ = udp.Shutdown()
			}
			return fmt.Errorf("dnsfront: serve: %w", err)
		}
	}
	s.udp, s.tcp, s.addr = udp, tcp, pc.LocalAddr().String()
	return nil
}

// listenBoth binds UDP first and then TCP on the same port. With port 0 the
// kernel picks the UDP port, which may be taken for TCP; a few tries find
// one free for both.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dnsfront: listen address %q: %w", addr, err)
	}
	tries := 1
	if port == "0" || port == "" {
		tries = 16
	}
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dnsfront: %w", err)
		}
		_, bound, _ := net.SplitHostPort(pc.LocalAddr().String())
		ln, err := net.Listen("tcp", net.JoinHostPort(host, bound))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if i+1 >= tries {
			return nil, nil, fmt.Errorf("dnsfront: %w", err)
		}
	}
}

// Addr is the bound address, the same port for UDP and TCP; empty before
// Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Shutdown stops listening and waits, until ctx ends, for queries in
// flight. Lookups in flight are cancelled first, so they end promptly.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	s.mu.Lock()
	udp, tcp := s.udp, s.tcp
	s.udp, s.tcp = nil, nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range []*dns.Server{udp, tcp} {
		if srv != nil {
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.udpConns.closeAll()
	return errors.Join(errs...)
}

// reply is a response under construction plus the Extended DNS Error that
// goes into its OPT record if the query allows one.
type reply struct {
	msg *dns.Msg
	ede *dns.EDNS0_EDE
}

// ServeDNS answers one query. It writes at most one reply, and none to a
// message that is itself a response, so that two servers cannot bounce a
// packet between them.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if r == nil || r.Response {
		return
	}
	s.stats.queries.Add(1)
	rep := s.answer(w.RemoteAddr(), r)
	s.write(w, r, rep)
}

func (s *Server) answer(remote net.Addr, r *dns.Msg) reply {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	rep := reply{msg: m}
	switch {
	case r.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return rep
	case len(r.Question) != 1:
		m.Question = nil
		m.Rcode = dns.RcodeFormatError
		return rep
	}
	if opt := r.IsEdns0(); opt != nil && opt.Version() != 0 {
		m.Rcode = dns.RcodeBadVers
		return rep
	}
	q := r.Question[0]
	if q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeRefused
		return rep
	}

	norm, nerr := pool.NormalizeDomain(q.Name)
	if nerr != nil {
		// The root, escaped names and other names the pool refuses.
		if q.Name == "." {
			if s.matchRoot() {
				return rep
			}
			m.Rcode = dns.RcodeRefused
			return rep
		}
		apex, ok := s.matchEscaped(q.Name)
		if !ok {
			m.Rcode = dns.RcodeRefused
			return rep
		}
		m.Authoritative = true
		return s.negative(rep, apex, dns.RcodeNameError, s.ttl)
	}
	apex, ok := s.match(norm)
	if !ok {
		m.Rcode = dns.RcodeRefused
		return rep
	}

	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		return s.address(rep, remote, q, norm, apex)
	case dns.TypeSOA, dns.TypeNS:
		m.Authoritative = true
		if apex != "" && norm == apex {
			if q.Qtype == dns.TypeSOA {
				m.Answer = append(m.Answer, s.soa(apex, q.Name))
			} else {
				m.Answer = append(m.Answer, &dns.NS{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: s.ttl},
					Ns:  "ns." + dns.Fqdn(apex),
				})
			}
			return rep
		}
		return s.negative(rep, apex, dns.RcodeSuccess, s.ttl)
	default:
		m.Authoritative = true
		return s.negative(rep, apex, dns.RcodeSuccess, s.ttl)
	}
}

// address answers A and AAAA within the domains.
func (s *Server) address(rep reply, remote net.Addr, q dns.Question, norm, apex string) reply {
	m := rep.msg
	up, err := s.lookup(norm, dns.TypeA)
	if err != nil {
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeNoReachableAuthority, "upstream lookup failed for "+norm)
	}
	if up.rcode == dns.RcodeNameError {
		return s.negative(rep, apex, dns.RcodeNameError, s.remaining(up))
	}
	if up.ignored {
		src := up
		if q.Qtype == dns.TypeAAAA {
			src, err = s.lookup(norm, dns.TypeAAAA)
			if err != nil {
				return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeNoReachableAuthority, "upstream lookup failed for "+norm)
			}
		}
		m.Answer = s.passthrough(src, q.Name)
		if len(m.Answer) == 0 {
			return s.negative(rep, apex, src.rcode, s.remaining(src))
		}
		return rep
	}
	m.Authoritative = true
	if q.Qtype == dns.TypeAAAA && !s.cfg.V6Prefix.IsValid() {
		// No allocation: an address nobody can use would only consume
		// the pool and the client's rate limit.
		return s.negative(rep, apex, dns.RcodeSuccess, s.ttl)
	}

	client, err := s.clientID(remote)
	if err != nil {
		s.log.Debug("query from an unusable client address", "remote", remote, "err", err)
		return s.fail(rep, dns.RcodeRefused, dns.ExtendedErrorCodeProhibited, "no usable client identity for this source")
	}
	if s.limits != nil {
		if _, mapped := s.pool.Get(client, norm); !mapped && !s.limits.allow(client, s.now()) {
			s.stats.rateLimited.Add(1)
			return s.fail(rep, dns.RcodeRefused, dns.ExtendedErrorCodeOther, "rate limit of new addresses exceeded for client "+client)
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.WriteTimeout)
	addr, err := s.pool.IPForDomain(ctx, client, norm)
	cancel()
	if err != nil {
		return s.poolError(rep, client, norm, err)
	}
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: s.ttl}
	if q.Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: addr.AsSlice()})
		return rep
	}
	b := s.cfg.V6Prefix.Addr().As16()
	v4 := addr.Unmap().As4()
	copy(b[12:], v4[:])
	m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: b[:]})
	return rep
}

func (s *Server) poolError(rep reply, client, domain string, err error) reply {
	switch {
	case errors.Is(err, pool.ErrPoolExhausted):
		s.log.Warn("pool exhausted", "client", client, "domain", domain)
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, "pool exhausted for client "+client)
	case errors.Is(err, pool.ErrRateLimited):
		s.stats.rateLimited.Add(1)
		return s.fail(rep, dns.RcodeRefused, dns.ExtendedErrorCodeOther, "rate limit of new addresses exceeded for client "+client)
	case errors.Is(err, pool.ErrNoQuorum), errors.Is(err, pool.ErrNoLeader),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.log.Warn("pool not ready", "client", client, "domain", domain, "err", err)
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeNotReady, "address pool unavailable: "+string(pool.CodeOf(err)))
	case errors.Is(err, pool.ErrInvalidClient):
		return s.fail(rep, dns.RcodeRefused, dns.ExtendedErrorCodeProhibited, "invalid client "+client)
	default:
		s.log.Error("pool error", "client", client, "domain", domain, "err", err)
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, "address pool error")
	}
}

func (s *Server) fail(rep reply, rcode int, info uint16, text string) reply {
	rep.msg.Rcode = rcode
	rep.msg.Answer = nil
	rep.ede = &dns.EDNS0_EDE{InfoCode: info, ExtraText: text}
	return rep
}

// negative answers NXDOMAIN or NODATA with the apex's SOA in the authority
// section, which is what lets resolvers cache the negative answer (RFC 2308).
func (s *Server) negative(rep reply, apex string, rcode int, ttl uint32) reply {
	rep.msg.Rcode = rcode
	rep.msg.Answer = nil
	if apex != "" {
		soa := s.soa(apex, dns.Fqdn(apex))
		soa.Hdr.Ttl = min(soa.Hdr.Ttl, ttl)
		soa.Minttl = soa.Hdr.Ttl
		rep.msg.Ns = append(rep.msg.Ns, soa)
	}
	return rep
}

func (s *Server) soa(apex, owner string) *dns.SOA {
	z := dns.Fqdn(apex)
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: owner, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.ttl},
		Ns:      "ns." + z,
		Mbox:    "hostmaster." + z,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.ttl,
	}
}

// passthrough copies upstream records, giving the owner name the case the
// client asked in (resolvers compare the answer to their question) and a TTL
// that counts down with the cache entry, so a client never holds a record
// longer than the upstream allowed plus the cache floor.
func (s *Server) passthrough(a *upstreamAnswer, qname string) []dns.RR {
	ttl := s.remaining(a)
	out := make([]dns.RR, 0, len(a.rrs))
	for _, rr := range a.rrs {
		c := dns.Copy(rr)
		h := c.Header()
		if strings.EqualFold(h.Name, qname) {
			h.Name = qname
		}
		h.Ttl = min(h.Ttl, ttl)
		out = append(out, c)
	}
	return out
}

func (s *Server) remaining(a *upstreamAnswer) uint32 {
	d := a.expires.Sub(s.now())
	if d <= 0 {
		return 0
	}
	return uint32((d + time.Second - 1) / time.Second)
}

// match returns the longest configured domain holding the normalized name;
// "" stands for the root.
func (s *Server) match(name string) (string, bool) {
	best, found := "", false
	for _, d := range s.domains {
		if len(d) < len(best) || (found && len(d) == len(best)) {
			continue
		}
		if d == "" || name == d ||
			len(name) > len(d) && strings.HasSuffix(name, d) && name[len(name)-len(d)-1] == '.' {
			best, found = d, true
		}
	}
	return best, found
}

func (s *Server) matchRoot() bool {
	for _, d := range s.domains {
		if d == "" {
			return true
		}
	}
	return false
}

// matchEscaped matches a name the pool refuses. Such a name may hold
// escaped dots ("a\.b.example."), so labels are split the way the DNS
// library does rather than at every '.'.
func (s *Server) matchEscaped(qname string) (string, bool) {
	best, found := "", false
	for _, d := range s.domains {
		if len(d) < len(best) || (found && len(d) == len(best)) {
			continue
		}
		if d == "" || dns.IsSubDomain(dns.Fqdn(d), strings.ToLower(qname)) {
			best, found = d, true
		}
	}
	return best, found
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

// write finishes the reply for its transport and sends it. UDP replies are
// cut to the client's advertised size (at most ednsUDPSize) with TC set, so
// the client retries over TCP rather than lose records silently.
func (s *Server) write(w dns.ResponseWriter, r *dns.Msg, rep reply) {
	m := rep.msg
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = min(max(int(opt.UDPSize()), dns.MinMsgSize), ednsUDPSize)
		m.SetEdns0(uint16(size), false)
		if rep.ede != nil {
			o := m.IsEdns0()
			o.Option = append(o.Option, rep.ede)
		}
	}
	if _, isTCP := w.RemoteAddr().(*net.TCPAddr); isTCP {
		size = dns.MaxMsgSize
	}
	m.Truncate(size)

	switch m.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		s.stats.answered.Add(1)
	case dns.RcodeRefused:
		s.stats.refused.Add(1)
	case dns.RcodeServerFailure:
		s.stats.servfail.Add(1)
	default:
		s.stats.other.Add(1)
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("writing reply failed", "remote", w.RemoteAddr(), "err", err)
	}
}

// limiters holds one token bucket per client. Buckets that have refilled
// are indistinguishable from new ones, so they are dropped when the map
// grows large; that bounds memory under a flood of spoofed sources.
type limiters struct {
	mu    sync.Mutex
	m     map[string]*rate.Limiter
	limit rate.Limit
	burst int
}

const maxLimiters = 1 << 16

func (l *limiters) allow(client string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[client]
	if !ok {
		if len(l.m) >= maxLimiters {
			for id, x := range l.m {
				if x.TokensAt(now) >= float64(l.burst) {
					delete(l.m, id)
				}
			}
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[client] = lim
	}
	return lim.AllowN(now, 1)
}
