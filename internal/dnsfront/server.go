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
//   - Sources outside Config.Allow: REFUSED, before anything else is done,
//     as unbound refuses sources outside its access control.
//   - Names outside Config.Domains: REFUSED, so a misconfigured client
//     learns quickly that this server is not its general resolver.
//   - Names inside Config.Domains that pool.NormalizeDomain refuses
//     (bad characters, too long, escaped dots): NXDOMAIN. They cannot exist
//     as a pool domain (S8), and NXDOMAIN is the answer resolvers cache;
//     FORMERR would claim the packet was broken when it was not.
//   - A query over Config.RateLimit or Config.NewClientRate: REFUSED. It is
//     a policy decision, not a fault; SERVFAIL would invite resolvers to
//     retry at once, and REFUSED sends them to another server of the
//     cluster, which is what an operator wants of a busy client.
//   - Pool exhausted, no quorum, no leader, upstream unreachable: SERVFAIL
//     with an Extended DNS Error naming the cause.
//
// Extended DNS Errors (RFC 8914) travel in the OPT record, and RFC 6891
// forbids an OPT in a reply to a query without one, so clients that do not
// send EDNS0 get the bare response code.
//
// A REFUSED reply is never larger than its query: it holds the header, the
// question and, when the query had an OPT record, an OPT without options;
// an Extended DNS Error code (without text) is added only where the query's
// own options leave room for it. A forged source therefore gets nothing out
// of this server that it did not put in, which is what keeps it from being
// used to amplify a flood. Queries whose question name is compressed (no
// client compresses the first name of a message) or cut short are dropped
// unanswered, because the reply would spell out in bytes of its own a name,
// type and class the query did not.
package dnsfront

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/time/rate"

	"github.com/ippool/ippool/internal/clientid"
	"github.com/ippool/ippool/internal/connlimit"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/internal/resolver"
	"github.com/ippool/ippool/pool"
)

// ednsUDPSize is the largest UDP reply we send (the resolver asks upstreams
// for the same): the
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
	// HasClient reports whether the pool holds anything of the client: an
	// allocation for one it does not hold adds a client to the state, and
	// those are bounded by Config.NewClientRate.
	HasClient(client string) bool
}

// NamePolicy decides whether a client may have an address for a name;
// service.Service implements it with the replicated policy. A Pool that
// implements it has every A and AAAA query checked, mapped names included,
// so that a policy change applies to mappings made before it.
type NamePolicy interface {
	// CheckName returns nil when c may have domain (normal form), else
	// an error saying which rule denies it.
	CheckName(c *policy.Client, domain string) error
}

// Stats are counters since the server was created.
type Stats struct {
	Queries        uint64 // messages handed to ServeDNS, responses excluded
	Answered       uint64 // replies with NOERROR or NXDOMAIN
	Refused        uint64 // replies with REFUSED (limited and not allowed ones included)
	ServFail       uint64 // replies with SERVFAIL
	OtherErrors    uint64 // replies with FORMERR, NOTIMP or BADVERS
	RateLimited    uint64 // queries refused by the per-client rate limit
	PolicyDenied   uint64 // A and AAAA queries for a name the policy denies the client
	UpstreamErrors uint64 // upstream lookups that no upstream answered
	CacheHits      uint64 // upstream lookups answered from the cache
	CacheMisses    uint64 // upstream lookups sent upstream

	NotAllowed       uint64 // queries refused because Config.Allow does not admit their source
	NewClientLimited uint64 // queries of new clients refused by Config.NewClientRate
	// Queries dropped unanswered: a compressed or truncated question, or
	// a UDP query the fast loops could not queue for the full path.
	Dropped uint64
	// TCP connections closed at accept, over Config.TCPMaxConns and over
	// Config.TCPMaxConnsPerSource.
	TCPRefusedTotal, TCPRefusedPerSource uint64
	TCPConns                             uint64 // TCP connections open now (a gauge, not a counter)
}

type counters struct {
	queries, answered, refused, servfail, other atomic.Uint64
	rateLimited, policyDenied                   atomic.Uint64
	notAllowed, newClientLimited, dropped       atomic.Uint64
	fast                                        atomic.Uint64 // answered by fastAnswer, for tests
}

// Server is a DNS server answering from a Pool. Its methods are safe for
// concurrent use.
type Server struct {
	cfg        Config
	pool       Pool
	log        *slog.Logger
	now        func() time.Time
	domains    []string // normalized; "" is the root
	clients    *clientid.Map
	namer      clientid.Namer // Config.Clients, else clients
	limits     *limiters
	newClients *rate.Limiter // nil: no limit
	ttl        uint32

	res *resolver.Resolver
	// ownsResolver: New made res, and Shutdown closes it.
	ownsResolver bool
	stats        counters
	// policy is the pool's NamePolicy, nil when it has none.
	policy NamePolicy

	// The UDP fast path's tables (fast.go) and its pool, nil when the
	// pool cannot answer without waiting.
	names        nameTable
	clientsBySrc srcTable
	local        LocalPool

	// ctx ends at Shutdown, so that upstream lookups and pool writes in
	// flight stop instead of holding shutdown up.
	ctx    context.Context
	cancel context.CancelFunc
	// writeDeadline bounds pool writes by WriteTimeout.
	writeDeadline *sharedDeadline

	mu       sync.Mutex
	udp, tcp *dns.Server
	fast     *udpLoops // nil: miekg/dns reads the UDP socket itself
	tcpConns *connlimit.Listener
	addr     string
}

// New checks cfg and returns a server that is not yet listening; ServeDNS
// may be called on it directly.
func New(cfg Config, p Pool) (*Server, error) {
	if p == nil {
		return nil, errors.New("dnsfront: no pool")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	domains, err := parseDomains(cfg.Domains)
	if err != nil {
		return nil, err
	}
	res, owns := cfg.Resolver, false
	if res == nil {
		if res, err = resolver.New(cfg.ResolverConfig()); err != nil {
			return nil, fmt.Errorf("dnsfront: %w", err)
		}
		owns = true
	}
	s := &Server{
		cfg:     cfg,
		pool:    p,
		log:     cfg.Logger,
		now:     cfg.Now,
		ttl:     uint32(cfg.TTL / time.Second),
		domains: domains,
		res:     res,
		limits:  newLimiters(cfg.RateLimit, cfg.Burst),
	}
	s.ownsResolver = owns
	s.policy, _ = p.(NamePolicy)
	s.newClients = newClientLimiter(cfg.NewClientRate, cfg.NewClientBurst)
	s.local, _ = p.(LocalPool)
	if cfg.ClientMap != "" {
		cm, err := clientid.Load(cfg.ClientMap)
		if err != nil {
			return nil, fmt.Errorf("dnsfront: %w", err)
		}
		s.clients = cm
	}
	s.namer = s.clients
	if cfg.Clients != nil {
		s.namer = cfg.Clients
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.writeDeadline = newSharedDeadline(s.ctx, cfg.WriteTimeout)
	return s, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	rs := s.res.Stats()
	var tcp connlimit.Stats
	s.mu.Lock()
	if s.tcpConns != nil {
		tcp = s.tcpConns.Stats()
	}
	s.mu.Unlock()
	return Stats{
		Queries:        c.queries.Load(),
		Answered:       c.answered.Load(),
		Refused:        c.refused.Load(),
		ServFail:       c.servfail.Load(),
		OtherErrors:    c.other.Load(),
		RateLimited:    c.rateLimited.Load(),
		PolicyDenied:   c.policyDenied.Load(),
		UpstreamErrors: rs.UpstreamErrors,
		CacheHits:      rs.CacheHits,
		CacheMisses:    rs.CacheMisses,

		NotAllowed:          c.notAllowed.Load(),
		NewClientLimited:    c.newClientLimited.Load(),
		Dropped:             c.dropped.Load(),
		TCPRefusedTotal:     tcp.RefusedTotal,
		TCPRefusedPerSource: tcp.RefusedPerSource,
		TCPConns:            uint64(tcp.Open),
	}
}
