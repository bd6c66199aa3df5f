// Package connector carries a client's flows sent to a pool address to the
// domain that address stands for, for that client: the step after the DNS
// front end answered the client with a pool address.
//
// The kernel hands the connector every TCP connection and UDP datagram sent
// to a pool address (or to a --v6-prefix address, which is a pool address in
// IPv6 form) through TPROXY, with the flow's original destination kept as the
// socket's local address. For each flow the connector names the client as the
// DNS front end does (package clientid), asks the pool which domain that
// client's address means (DomainForIP, which marks the mapping used),
// resolves the domain through the DNS front end's upstreams and cache, and
// relays the flow to the domain's address on the original port. The kernel's
// TCP stack carries the bytes; Go copies between the two TCP sockets with
// splice, so they never enter user space.
//
// Flows the pool has no mapping for, and flows past a limit, are reset at
// once (UDP: dropped) and counted, so that a client learns quickly and the
// connector's memory stays bounded whatever clients send.
package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/ippool/ippool/internal/clientid"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
)

// Pool is what the connector needs of the address pool; service.Service
// implements it.
type Pool interface {
	// Lookup returns the client's mapping of addr and marks it used at at.
	Lookup(ctx context.Context, client string, addr netip.Addr, at time.Time) (pool.Mapping, error)
	// PoolConfig is the replicated pool configuration, false before the
	// cluster has one.
	PoolConfig() (pool.Config, bool)
}

// Policy decides each new flow; service.Service implements it with the
// replicated policy, so a change applies to mappings made before it.
type Policy interface {
	CheckFlow(c *policy.Client, domain string, proto policy.Proto, port uint16) policy.Decision
	// EgressAddrs are every egress rule's source addresses.
	EgressAddrs() []netip.Addr
}

// Resolver gives a domain's addresses. dnsfront.Server implements it with
// its upstreams and cache, so a flow goes where a DNS answer for the domain
// would have gone.
type Resolver interface {
	// LookupA returns the IPv4 addresses (none for NXDOMAIN or no A
	// record) and whether any lies in the ignored destinations.
	LookupA(name string) (addrs []netip.Addr, ignored bool, err error)
	// LookupAAAA is LookupA for IPv6 addresses (AAAA records).
	LookupAAAA(name string) (addrs []netip.Addr, ignored bool, err error)
}

// Config configures a Connector. Zero values take the documented defaults.
type Config struct {
	// Port is where TPROXY delivers flows: listeners on 127.0.0.1 and,
	// with V6Prefix, ::1. Default 7490.
	Port int
	// V6Prefix is the DNS front end's /96: flows to it are flows to the
	// pool address in its last 32 bits.
	V6Prefix netip.Prefix
	// IgnoreDestinations: a domain with an address in one of these is not
	// carried (the DNS front end answers such names with their own
	// addresses, so no client should be sent here for them).
	IgnoreDestinations []netip.Prefix
	// Clients names a flow's client from its source; nil names it by the
	// address. Use the DNS front end's map.
	Clients *clientid.Map
	// Allow opens these prefixes to flows although they are private
	// (privateaddr.IsPrivate: RFC 1918, CGNAT, loopback, link-local, ...)
	// or in one of this host's networks, which the connector otherwise
	// never dials: a name's owner could point it at what lies behind the
	// gateway. Pool and v6 prefix addresses stay refused, as do multicast
	// and unspecified ones.
	Allow []netip.Prefix

	// DialTimeout bounds one connection attempt to one address of the
	// domain. Default 5s.
	DialTimeout time.Duration
	// LookupTimeout bounds the pool lookup. Default 2s.
	LookupTimeout time.Duration
	// IdleTimeout closes a TCP flow that moved no byte either way for
	// this long. Default 15m.
	IdleTimeout time.Duration
	// HalfCloseTimeout ends a TCP flow once one side has finished (its FIN
	// passed on as a half-close) and no byte moved either way for this
	// long: an upstream that never closes would otherwise hold the flow,
	// and the client's place under the limits, for the idle timeout.
	// Default 60s.
	HalfCloseTimeout time.Duration
	// UDPIdleTimeout ends a UDP flow after this long without a datagram.
	// Default 60s.
	UDPIdleTimeout time.Duration
	// KeepAlive is the TCP keepalive idle time on both sides of a flow, so
	// that a peer gone without a FIN is noticed. Default 30s.
	KeepAlive time.Duration

	// MaxFlows bounds concurrent flows (TCP and UDP). Default 16384.
	MaxFlows int
	// MaxClientFlows bounds one client's concurrent flows. Default 1024.
	MaxClientFlows int
	// ClientRate is new flows per second per client; 0 or less: no limit
	// (as in every limit of this repository; DefaultClientRate is serve's).
	// ClientBurst is the bucket, default 2*ClientRate.
	ClientRate  float64
	ClientBurst int

	// Rules, when true, makes Start install the nftables table, the local
	// route and the policy rule that steer flows to Port, and Close remove
	// them; false leaves them to the operator (RulesFor prints them).
	Rules bool
	// Mark is the packet mark TPROXY sets and the policy rule matches.
	// Default 0x1b1.
	Mark uint32
	// Table is the routing table of the local route, and the policy
	// rule's priority. Default 7490.
	Table int

	// Policy, when set, decides each flow after its mapping is found.
	Policy Policy

	Metrics *Metrics
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultPort           = 7490
	DefaultMark           = 0x1b1
	DefaultTable          = 7490
	DefaultMaxFlows       = 16384
	DefaultMaxClientFlows = 1024
	DefaultClientRate     = 200
	// DefaultHalfCloseTimeout is Config.HalfCloseTimeout's default: long
	// enough for an answer after the request's FIN, short against an
	// upstream that holds a finished flow open.
	DefaultHalfCloseTimeout = 60 * time.Second
)

func (cfg *Config) setDefaults() {
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 2 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 15 * time.Minute
	}
	if cfg.HalfCloseTimeout <= 0 {
		cfg.HalfCloseTimeout = DefaultHalfCloseTimeout
	}
	if cfg.UDPIdleTimeout <= 0 {
		cfg.UDPIdleTimeout = time.Minute
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.MaxClientFlows <= 0 {
		cfg.MaxClientFlows = DefaultMaxClientFlows
	}
	if cfg.ClientBurst <= 0 {
		cfg.ClientBurst = max(1, int(2*cfg.ClientRate))
	}
	if cfg.Mark == 0 {
		cfg.Mark = DefaultMark
	}
	if cfg.Table == 0 {
		cfg.Table = DefaultTable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

func (cfg *Config) validate() error {
	if cfg.Port < 1 || cfg.Port > 65535 {
		return fmt.Errorf("connector: port %d is not 1 to 65535", cfg.Port)
	}
	if cfg.V6Prefix.IsValid() {
		p, err := pool.CheckV6Prefix(cfg.V6Prefix)
		if err != nil {
			return fmt.Errorf("connector: %w", err)
		}
		cfg.V6Prefix = p
	}
	// Table 0 is unspec and 253 to 255 are the kernel's default, main and
	// local tables: a local route for everything there would swallow all
	// traffic.
	if cfg.Table < 1 || cfg.Table >= 1<<31 || (cfg.Table >= 253 && cfg.Table <= 255) {
		return fmt.Errorf("connector: routing table %d is reserved or out of range", cfg.Table)
	}
	if cfg.MaxClientFlows > cfg.MaxFlows {
		cfg.MaxClientFlows = cfg.MaxFlows
	}
	return nil
}

// Result is what became of a flow; the metrics count flows by it.
type Result string

const (
	Relayed       Result = "relayed"        // carried to the domain
	NoMapping     Result = "no_mapping"     // the client has no mapping for the address
	LookupFailed  Result = "lookup_failed"  // the pool did not answer (no quorum)
	ResolveFailed Result = "resolve_failed" // the domain has no usable address upstream
	Refused       Result = "refused"        // every address is forbidden: the pool, private, the gateway's networks, ignored
	Denied        Result = "denied"         // the policy denies the client this domain and port
	NoEgress      Result = "no_egress"      // the policy's egress address for it is not assigned on this host
	DialFailed    Result = "dial_failed"    // no address of the domain accepted
	Limited       Result = "limited"        // past a flow limit
)

// Connector relays flows sent to pool addresses. Create it with New, then
// Start it.
type Connector struct {
	cfg    Config
	pool   Pool
	res    Resolver
	log    *slog.Logger
	m      *Metrics
	limits *limits
	guard  *guard
	flows  flowSet // carried by ServeConn

	ctx    context.Context
	cancel context.CancelFunc
	plat   platform // the system's listeners, flows and rules
	// attemptDelay is connectionAttemptDelay, shorter in tests.
	attemptDelay time.Duration
	// lastMissing is what logMissingEgress last logged; watchPool's only.
	lastMissing string
}

// New checks cfg and returns a Connector that is not yet listening.
func New(cfg Config, p Pool, r Resolver) (*Connector, error) {
	if p == nil || r == nil {
		return nil, errors.New("connector: needs a pool and a resolver")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Connector{
		cfg: cfg, pool: p, res: r, log: cfg.Logger, m: cfg.Metrics, attemptDelay: connectionAttemptDelay,
		limits: newLimits(cfg.MaxFlows, cfg.MaxClientFlows, cfg.ClientRate, cfg.ClientBurst),
	}
	c.m.watch(c.limits)
	c.m.watchEgress(c)
	c.guard = newGuard(p, cfg.V6Prefix, cfg.IgnoreDestinations)
	for _, pr := range cfg.Allow {
		if pr.Addr().Is4In6() && pr.Bits() >= 96 {
			pr = netip.PrefixFrom(pr.Addr().Unmap(), pr.Bits()-96)
		}
		c.guard.allow = append(c.guard.allow, pr.Masked())
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// poolAddr is the pool address a flow was sent to: the destination itself,
// or the IPv4 address in the last 32 bits of a V6Prefix destination.
func (c *Connector) poolAddr(dst netip.Addr) (netip.Addr, bool) {
	dst = dst.Unmap()
	if dst.Is4() {
		return dst, true
	}
	if c.cfg.V6Prefix.IsValid() && c.cfg.V6Prefix.Contains(dst.WithZone("")) {
		b := dst.As16()
		return netip.AddrFrom4([4]byte(b[12:])), true
	}
	return netip.Addr{}, false
}

// flowInfo is what is known of a flow, for its log line.
type flowInfo struct {
	proto  string
	src    netip.AddrPort
	dst    netip.AddrPort
	client string
	domain string
	// egress is the local address the policy has the flow dialled from;
	// invalid for the host's choice.
	egress netip.Addr
	target netip.AddrPort
	result Result
	err    error
}

func (f *flowInfo) logAttrs() []any {
	a := []any{"proto", f.proto, "src", f.src, "dst", f.dst, "client", f.client, "result", string(f.result)}
	if f.domain != "" {
		a = append(a, "domain", f.domain)
	}
	if f.target.IsValid() {
		a = append(a, "target", f.target)
	}
	if f.err != nil {
		a = append(a, "err", f.err)
	}
	return a
}

// admit names the flow's client and takes a place for it under the limits.
// On success the caller must call c.limits.release(f.client) when the flow
// ends.
func (c *Connector) admit(f *flowInfo) bool {
	client, err := c.cfg.Clients.Of(f.src.Addr())
	if err != nil {
		f.result, f.err = NoMapping, err
		return false
	}
	f.client = client
	if why := c.limits.admit(client, time.Now()); why != "" {
		f.result, f.err = Limited, errors.New(why)
		return false
	}
	return true
}

// route finds where a flow goes: the domain the client's pool address means
// and the addresses to try, in order: both families, those the guard
// refuses left out, the client's family first, interleaved (RFC 8305). It
// sets f.result when there is none.
func (c *Connector) route(f *flowInfo) []netip.Addr {
	pa, ok := c.poolAddr(f.dst.Addr())
	if !ok {
		f.result, f.err = NoMapping, fmt.Errorf("%v is neither IPv4 nor in the v6 prefix", f.dst.Addr())
		return nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.LookupTimeout)
	m, err := c.pool.Lookup(ctx, f.client, pa, time.Now())
	cancel()
	if err != nil {
		var pe *pool.Error
		if errors.As(err, &pe) && (pe.Code == pool.CodeNotFound || pe.Code == pool.CodeInvalidAddress) {
			f.result = NoMapping
		} else {
			f.result = LookupFailed
		}
		f.err = err
		return nil
	}
	f.domain = m.Domain
	if !c.checkPolicy(f) {
		return nil
	}
	v4, v6 := c.resolve(m.Domain)
	switch {
	case v4.err != nil && v6.err != nil:
		f.result, f.err = ResolveFailed, errors.Join(v4.err, v6.err)
		return nil
	case len(v4.addrs) == 0 && len(v6.addrs) == 0:
		// One family failing is no reason to give up while the other
		// may yet have answered: the error is what is known.
		f.result, f.err = ResolveFailed, errors.Join(v4.err, v6.err)
		if f.err == nil {
			f.err = errors.New("no A or AAAA record upstream")
		}
		return nil
	}
	ignored := v4.ignored || v6.ignored
	for _, a := range append(v4.addrs[:len(v4.addrs):len(v4.addrs)], v6.addrs...) {
		ignored = ignored || c.guard.isIgnored(a)
	}
	if ignored {
		f.result, f.err = Refused, errors.New("the domain resolves into --ignore-destinations")
		return nil
	}
	ok4, ok6 := c.allowedAddrs(f, v4.addrs), c.allowedAddrs(f, v6.addrs)
	if f.egress.IsValid() {
		// A source address dials its own family only.
		if f.egress.Is4() {
			ok6 = nil
		} else {
			ok4 = nil
		}
	}
	if len(ok4) == 0 && len(ok6) == 0 {
		f.result = Refused
		return nil
	}
	f.err = nil
	// The client's own family first: a client that reached the pool over
	// IPv6 has IPv6, and the domain likely answers it as it would the
	// client directly.
	if f.dst.Addr().Is6() {
		return interleave(ok6, ok4)
	}
	return interleave(ok4, ok6)
}

// allowedAddrs are the addresses of addrs the guard lets the flow dial; the
// last refused one's reason is left in f.err.
func (c *Connector) allowedAddrs(f *flowInfo, addrs []netip.Addr) []netip.Addr {
	var ok []netip.Addr
	for _, a := range addrs {
		if why := c.guard.forbidden(a); why != "" {
			f.err = fmt.Errorf("%v is %s", a, why)
			continue
		}
		ok = append(ok, a.Unmap())
	}
	return ok
}

// done counts and logs a flow that ended.
func (c *Connector) done(f *flowInfo, attrs ...any) {
	c.m.flow(f.proto, f.result)
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("flow", append(f.logAttrs(), attrs...)...)
	}
}

// Start listens and, with Config.Rules, installs the rules that steer flows
// here. It fails on systems without TPROXY.
func (c *Connector) Start() error { return c.start() }

// Close removes the rules it installed, stops listening and ends every flow.
func (c *Connector) Close() error {
	c.cancel()
	return errors.Join(c.close(), c.flows.close(5*time.Second))
}

// checkPolicy decides the flow against the policy and reports whether it
// may go on; for an egress rule it sets the flow's source address, which
// must be assigned on this host (a flow is refused rather than sent from
// another address, which the destination's allow list would refuse).
func (c *Connector) checkPolicy(f *flowInfo) bool {
	if c.cfg.Policy == nil {
		return true
	}
	proto := policy.TCP
	if f.proto == "udp" {
		proto = policy.UDP
	}
	d := c.cfg.Policy.CheckFlow(&policy.Client{ID: f.client, Addr: f.src.Addr().Unmap()}, f.domain, proto, f.dst.Port())
	if !d.Allowed() {
		f.result, f.err = Denied, fmt.Errorf("policy rule %q denies it", d.RuleName())
		return false
	}
	if e := d.EgressAddr(f.client, f.domain); e.IsValid() {
		if !c.guard.own.IsOwnAddress(e) {
			f.result, f.err = NoEgress, fmt.Errorf("policy rule %q sends it from %v, which no interface of this host has", d.RuleName(), e)
			return false
		}
		f.egress = e
	}
	return true
}

// MissingEgress are the policy's egress addresses that no interface of this
// host has: flows the policy sends from one of them are refused here
// (no_egress). With several connectors, each should hold them all, or hand
// them over as a floating address (docs/policy.md).
func (c *Connector) MissingEgress() []netip.Addr {
	if c.cfg.Policy == nil {
		return nil
	}
	var missing []netip.Addr
	for _, a := range c.cfg.Policy.EgressAddrs() {
		if !c.guard.own.IsOwnAddress(a) {
			missing = append(missing, a)
		}
	}
	return missing
}

// logMissingEgress logs the egress addresses this host lacks when they
// change: at start, on a policy change, and when an address comes or goes.
func (c *Connector) logMissingEgress() {
	missing := c.MissingEgress()
	key := fmt.Sprint(missing)
	if key == c.lastMissing {
		return
	}
	c.lastMissing = key
	if len(missing) > 0 {
		c.log.Warn("connector: the policy's egress addresses are not assigned on this host; their flows are refused (no_egress)", "missing", missing)
	} else if key != "[]" {
		c.log.Info("connector: every egress address of the policy is assigned on this host")
	}
}
