// Package pool is the ippool state machine: for every client, the pairing of
// domains and IPv4 addresses drawn from one shared pool configuration.
//
// It does no I/O, reads no clock and starts no goroutine. Every operation is
// given its time, so a log of operations applied to two States leaves them
// byte-identical (docs/design.md#s9-determinism). A State is not safe for concurrent use; the
// cluster and the single-machine pool put a lock around it.
package pool

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Mapping is one client's pairing of a domain and an address.
type Mapping struct {
	Client   string
	Domain   string
	Addr     netip.Addr
	LastUsed time.Time
}

// State holds every client's mappings and the pool configuration.
type State struct {
	cfg        Config
	set        addrSet
	configured bool

	clients map[string]*client
	domains domainTable
	// idle is a heap of clients by idleKey, a last-activity time that may
	// be stale (older than the client's lastActivity): the client on top is
	// the next that may have gone idle. Keys are brought up to date only
	// when a client reaches the top, not on every write, which spares each
	// allocation a pointer-chasing heap walk.
	idle     []*client
	mappings int
	// holding is the clients with held addresses (hold.go).
	holding   map[*client]struct{}
	heldCount int
	// forgetBound is the mappings one write may forget (0: no bound); set
	// by ApplyEntry from the entry's version (ForgetPerWrite).
	forgetBound int

	dedup dedupWindow
}

// NewState returns an empty, unconfigured State.
func NewState() *State {
	return &State{clients: make(map[string]*client), domains: newDomainTable(), dedup: newDedupWindow(defaultDedupSize), holding: make(map[*client]struct{})}
}

// client is one client's mappings. A mapping lives in slab; byAddr and
// byDomain index it both ways; expiry orders it for reuse (S2).
type client struct {
	id       string
	byAddr   slotIndex
	byDomain slotIndex
	slab     []mapping
	expiryAt []int32 // position of slab[i] in expiry
	expiry   []int32 // heap of slab indices, least recently used first

	// Unused addresses: every pool index below next that holds no mapping is
	// in free; indices from next on are scanned on demand, so a client that
	// was restored or re-pooled costs nothing until it allocates.
	free []uint32
	next uint32
	// held are addresses released from this client less than ReuseHold
	// ago, sorted; neither mapped nor free.
	held []uint32

	// lastActivity is the latest last-used time this client ever had, so
	// when it is over a lifetime ago every mapping has expired.
	lastActivity int64
	idleKey      int64 // lastActivity when last placed in the idle heap
	idleAt       int
}

type mapping struct {
	addr     uint32
	domain   uint32
	lastUsed int64
}

func newClient(id string) *client { return &client{id: id} }

// reserve sizes a new client's slices and indexes for n mappings, as a
// snapshot that says how many it holds is read: growing them one append
// at a time copied each several times over (a quarter of a 10M decode's
// time, and 0.3 GB of garbage).
func (c *client) reserve(n int) {
	c.slab = make([]mapping, 0, n)
	c.expiryAt = make([]int32, 0, n)
	c.expiry = make([]int32, 0, n)
	c.byAddr.reserve(n)
	c.byDomain.reserve(n)
}

func (c *client) findAddr(a uint32) (int32, bool) {
	return find(&c.byAddr, a, byAddrKey{c.slab})
}

func (c *client) findDomain(d uint32) (int32, bool) {
	return find(&c.byDomain, d, byDomainKey{c.slab})
}

type expiryOrder struct{ c *client }

func (o expiryOrder) less(a, b int32) bool {
	ma, mb := &o.c.slab[a], &o.c.slab[b]
	return ma.lastUsed < mb.lastUsed || ma.lastUsed == mb.lastUsed && ma.addr < mb.addr
}
func (o expiryOrder) placed(i int32, pos int) { o.c.expiryAt[i] = int32(pos) }

type idleOrder struct{}

func (idleOrder) less(a, b *client) bool {
	return a.idleKey < b.idleKey || a.idleKey == b.idleKey && a.id < b.id
}

// pushIdle puts a new client in the idle heap.
func (s *State) pushIdle(c *client) {
	c.idleKey = c.lastActivity
	s.idle = heapPush(s.idle, c, idleOrder{})
}
func (idleOrder) placed(c *client, pos int) { c.idleAt = pos }

// Config returns the pool configuration, and false before one is set.
func (s *State) Config() (Config, bool) { return s.cfg, s.configured }

// PoolSize is the number of addresses each client can hold.
func (s *State) PoolSize() int { return int(s.set.size) }

// Counts returns the number of clients, mappings and distinct domains held.
func (s *State) Counts() (clients, mappings, domains int) {
	return len(s.clients), s.mappings, s.domains.count()
}

// DomainBytes is the bytes of the distinct domain names held: what
// Quotas.MaxDomainBytes bounds.
func (s *State) DomainBytes() int64 { return s.domains.bytes }

// Contains reports whether addr is in the pool.
func (s *State) Contains(addr netip.Addr) bool {
	return addr.Is4() && s.set.contains(addrToU32(addr))
}

// Lookup returns the mapping of the client's address (S3), without marking
// it used. It allocates only a copy of the domain's text: the table's own
// lives in an arena that a caller keeping the string would pin.
func (s *State) Lookup(clientID string, addr netip.Addr) (Mapping, bool) {
	c := s.clients[clientID]
	if c == nil || !addr.Is4() {
		return Mapping{}, false
	}
	i, ok := c.findAddr(addrToU32(addr))
	if !ok {
		return Mapping{}, false
	}
	return s.mappingOf(c, i), true
}

// Get returns the client's mapping for domain, if any, without allocating.
// domain must be normalized (see NormalizeDomain).
func (s *State) Get(clientID, domain string) (Mapping, bool) {
	c := s.clients[clientID]
	if c == nil {
		return Mapping{}, false
	}
	d, ok := s.domains.lookup(domain)
	if !ok {
		return Mapping{}, false
	}
	i, ok := c.findDomain(d)
	if !ok {
		return Mapping{}, false
	}
	m := s.mappingAt(c, i)
	m.Domain = domain
	return m, true
}

// HasClient reports whether the state holds anything of the client: a
// mapping, expired or not, or a reuse hold. Allocating for a client it does
// not hold adds one to the state.
func (s *State) HasClient(clientID string) bool {
	_, ok := s.clients[clientID]
	return ok
}

// Mappings returns the client's mappings in address order.
func (s *State) Mappings(clientID string) []Mapping {
	c := s.clients[clientID]
	if c == nil {
		return nil
	}
	out := make([]Mapping, len(c.slab))
	for i := range c.slab {
		out[i] = s.mappingOf(c, int32(i))
	}
	slices.SortFunc(out, func(a, b Mapping) int { return a.Addr.Compare(b.Addr) })
	return out
}

// Clients returns every client ID in sorted order.
func (s *State) Clients() []string {
	ids := make([]string, 0, len(s.clients))
	for id := range s.clients {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Expired reports whether a mapping last used at lastUsed is expired at now (S6).
func (s *State) Expired(lastUsed, now time.Time) bool {
	return now.UnixNano()-lastUsed.UnixNano() > int64(s.cfg.Lifetime)
}

// mappingOf is the mapping at c's slab index i, its domain copied out of
// the table's arena.
func (s *State) mappingOf(c *client, i int32) Mapping {
	m := s.mappingAt(c, i)
	m.Domain = strings.Clone(s.domains.name(c.slab[i].domain))
	return m
}

// mappingAt is the mapping without its domain.
func (s *State) mappingAt(c *client, i int32) Mapping {
	m := &c.slab[i]
	return Mapping{Client: c.id, Addr: u32ToAddr(m.addr), LastUsed: time.Unix(0, m.lastUsed).UTC()}
}

// SetConfig installs a pool configuration. Mappings whose address is outside
// the new pool are released; it returns how many.
func (s *State) SetConfig(cfg Config, now time.Time) (int, error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	set, err := cfg.addrSet()
	if err != nil {
		return 0, err
	}
	s.cfg, s.set, s.configured = cfg, set, true
	released := 0
	inPool := set.contains
	// Sorted so that the order of releases, and so every internal index,
	// is the same on every server.
	for _, id := range s.Clients() {
		c := s.clients[id]
		for i := len(c.slab) - 1; i >= 0; i-- {
			if !set.contains(c.slab[i].addr) {
				s.removeMapping(c, int32(i), true)
				released++
			}
		}
		// An address outside the pool is never allocated: no need to hold it.
		s.clearHolds(c, inPool)
		// Pool indices changed meaning: rescan lazily from the start.
		c.free, c.next = c.free[:0], 0
		s.dropIfEmpty(c)
	}
	s.forgetIdleClients(now.UnixNano())
	return released, nil
}

// Outside counts the mappings SetConfig(cfg) would release, and how many
// clients hold them, without changing anything: what a dry run of a pool
// change reports.
func (s *State) Outside(cfg Config) (mappings, clients int, err error) {
	if err := cfg.Validate(); err != nil {
		return 0, 0, err
	}
	set, err := cfg.addrSet()
	if err != nil {
		return 0, 0, err
	}
	for _, c := range s.clients {
		n := 0
		for i := range c.slab {
			if !set.contains(c.slab[i].addr) {
				n++
			}
		}
		if n > 0 {
			mappings, clients = mappings+n, clients+1
		}
	}
	return mappings, clients, nil
}

// Allocate returns the client's address for domain, allocating one if the
// client has none (S1, S2), and marks it used at now.
func (s *State) Allocate(clientID, domain string, now time.Time) (netip.Addr, error) {
	if err := ValidateClientID(clientID); err != nil {
		return netip.Addr{}, err
	}
	domain, err := NormalizeDomain(domain)
	if err != nil {
		return netip.Addr{}, err
	}
	a, _, err := s.allocate(clientID, domain, now.UnixNano(), 0, Quotas{})
	if err != nil {
		return netip.Addr{}, err
	}
	return u32ToAddr(a), nil
}

// How an allocation was satisfied.
const (
	allocExisting = 0
	allocUnused   = 1
	allocReused   = 2
)

// allocate is S1 and S2 at now. A client it would add past maxClients
// clients (when not 0), or a mapping or domain text past a quota, is
// refused with quota_exceeded.
func (s *State) allocate(clientID, domain string, now int64, maxClients int, q Quotas) (uint32, int, error) {
	if !s.configured {
		return 0, 0, errorf(CodeNotConfigured, "the pool is not configured yet")
	}
	c := s.clients[clientID]
	isNew := c == nil
	if isNew && maxClients > 0 && len(s.clients) >= maxClients {
		// Clients idle long enough go first, as after any write at this
		// time: the refusal below is then exact. Should some be forgotten
		// and the bound still be reached (it was lowered), this failed
		// write has changed the state, alike on every server, and its
		// retry finds nothing more to forget.
		s.forgetAllIdle(now)
		if len(s.clients) >= maxClients {
			return 0, 0, s.clientsError(clientID, maxClients)
		}
	}
	if !isNew {
		if d, ok := s.domains.lookup(domain); ok {
			if i, ok := c.findDomain(d); ok {
				s.touch(c, i, now)
				s.forgetIdleClients(now)
				return c.slab[i].addr, allocExisting, nil
			}
		}
	}
	reuseOnly := false
	if !q.IsZero() && s.quotaError(c, domain, q) != nil {
		// As for the client bound: what has gone idle at this time goes
		// first, so that expiry frees quota even when every allocation is
		// refused and nothing else writes.
		s.forgetAllIdle(now)
		c = s.clients[clientID]
		isNew = c == nil
		if err := s.quotaError(c, domain, q); err != nil {
			// Past a quota only the client's own expired mapping may be
			// taken, which adds no mapping; should even that add domain
			// text past its bound, nothing is written.
			if !s.canReuseWithin(c, domain, now, q) {
				return 0, 0, err
			}
			reuseOnly = true
		}
	}
	if isNew {
		c = newClient(clientID)
	}
	// Past a quota takeUnused, which would add a mapping, is not asked.
	if idx, ok := s.unusedUnless(c, reuseOnly); ok {
		if isNew {
			s.clients[clientID] = c
			c.lastActivity = now
			s.pushIdle(c)
		}
		a := s.set.addrAt(idx)
		s.addMapping(c, a, s.domains.intern(domain), now)
		s.forgetIdleClients(now)
		return a, allocUnused, nil
	}
	if len(c.expiry) > 0 {
		i := c.expiry[0]
		m := &c.slab[i]
		if s.expiredFor(m.lastUsed, now) {
			// Reuse: the old domain loses the address in both directions.
			remove(&c.byDomain, i, byDomainKey{c.slab})
			s.domains.release(m.domain)
			m.domain = s.domains.intern(domain)
			insert(&c.byDomain, i, byDomainKey{c.slab})
			s.touch(c, i, now)
			s.forgetIdleClients(now)
			return m.addr, allocReused, nil
		}
	}
	if len(c.held) > 0 {
		return 0, 0, errorf(CodePoolExhausted, "pool exhausted for client %q: of its %d addresses %d are mapped, none idle longer than %v, and %d were released less than %v ago", clientID, s.set.size, len(c.slab), s.cfg.Lifetime+ReuseHold, len(c.held), ReuseHold)
	}
	return 0, 0, errorf(CodePoolExhausted, "pool exhausted for client %q: all %d addresses are mapped and none has been idle longer than %v", clientID, s.set.size, s.cfg.Lifetime+ReuseHold)
}

func (s *State) clientsError(clientID string, maxClients int) error {
	return errorf(CodeQuotaExceeded, "client %q is new and the cluster already holds %d clients, its limit (%s %d); it can be added once idle clients are forgotten (idle longer than %v) or the limit is raised", clientID, len(s.clients), QuotaFlagClients, maxClients, s.cfg.Lifetime+ReuseHold)
}

// QuotaRefusal returns the quota_exceeded error an allocation of domain
// (in normal form) for the client at now would get under these bounds, or
// nil when it might succeed. It changes nothing: a server asks it of its
// own state before proposing, so that a refusal costs no log entry. It
// answers nil whenever applying could decide otherwise: when an idle
// client may be forgotten at now, or the client may take its own expired
// mapping.
func (s *State) QuotaRefusal(clientID, domain string, now time.Time, maxClients int, q Quotas) error {
	if !s.configured {
		return nil
	}
	at := now.UnixNano()
	if len(s.idle) > 0 && s.expiredFor(s.idle[0].idleKey, at) {
		return nil
	}
	c := s.clients[clientID]
	if c == nil && maxClients > 0 && len(s.clients) >= maxClients {
		return s.clientsError(clientID, maxClients)
	}
	if c != nil {
		if d, ok := s.domains.lookup(domain); ok {
			if _, ok := c.findDomain(d); ok {
				return nil
			}
		}
	}
	if q.IsZero() {
		return nil
	}
	if err := s.quotaError(c, domain, q); err != nil && !s.canReuseWithin(c, domain, at, q) {
		return err
	}
	return nil
}

func (s *State) unusedUnless(c *client, reuseOnly bool) (uint32, bool) {
	if reuseOnly {
		return 0, false
	}
	return c.takeUnused(&s.set)
}

// quotaError says which quota a new mapping of domain for c (nil: a new
// client) would pass, or nil when it would pass none.
func (s *State) quotaError(c *client, domain string, q Quotas) error {
	held := 0
	id := "new client"
	if c != nil {
		held, id = len(c.slab), "client "+c.id
	}
	switch {
	case q.MaxMappingsPerClient > 0 && held >= q.MaxMappingsPerClient:
		return errorf(CodeQuotaExceeded, "%s already holds %d mappings, its limit (%s %d); it can map more once it releases some or they expire and are reused", id, held, QuotaFlagMappingsPerClient, q.MaxMappingsPerClient)
	case q.MaxMappings > 0 && s.mappings >= q.MaxMappings:
		return errorf(CodeQuotaExceeded, "the cluster already holds %d mappings, its limit (%s %d); more can be added once mappings are released or their clients go idle (longer than %v), or the limit is raised", s.mappings, QuotaFlagMappings, q.MaxMappings, s.cfg.Lifetime+ReuseHold)
	case q.MaxDomainBytes > 0 && s.domains.bytes+s.domains.growth(domain) > q.MaxDomainBytes:
		return errorf(CodeQuotaExceeded, "the cluster holds %d bytes of domain names and %q (%d bytes) would pass its limit (%s %d); more can be added once mappings are released or their clients go idle (longer than %v), or the limit is raised", s.domains.bytes, domain, len(domain), QuotaFlagDomainBytes, q.MaxDomainBytes, s.cfg.Lifetime+ReuseHold)
	}
	return nil
}

// canReuseWithin reports whether c may take its least recently used
// mapping for domain at now without passing the domain text bound: the
// mapping has expired, and the name it drops frees at least what the new
// one adds, or the total stays within the bound.
func (s *State) canReuseWithin(c *client, domain string, now int64, q Quotas) bool {
	if c == nil || len(c.expiry) == 0 {
		return false
	}
	m := &c.slab[c.expiry[0]]
	if !s.expiredFor(m.lastUsed, now) {
		return false
	}
	if q.MaxDomainBytes == 0 {
		return true
	}
	freed := int64(0)
	if s.domains.refs[m.domain] == 1 {
		freed = int64(len(s.domains.name(m.domain)))
	}
	return s.domains.bytes+s.domains.growth(domain)-freed <= q.MaxDomainBytes
}

// takeUnused returns the lowest pool index that holds no mapping and is not
// held.
func (c *client) takeUnused(set *addrSet) (uint32, bool) {
	if len(c.free) > 0 {
		var idx uint32
		idx, c.free = heapPop(c.free)
		return idx, true
	}
	for c.next < set.size {
		idx := c.next
		c.next++
		a := set.addrAt(idx)
		if _, mapped := c.findAddr(a); !mapped && !c.isHeld(a) {
			return idx, true
		}
	}
	return 0, false
}

func (s *State) addMapping(c *client, addr, domain uint32, now int64) {
	i := int32(len(c.slab))
	c.slab = append(c.slab, mapping{addr: addr, domain: domain, lastUsed: now})
	c.expiryAt = append(c.expiryAt, 0)
	insert(&c.byAddr, i, byAddrKey{c.slab})
	insert(&c.byDomain, i, byDomainKey{c.slab})
	c.expiry = heapPush(c.expiry, i, expiryOrder{c})
	s.mappings++
	s.noteActivity(c, now)
}

// touch marks slab[i] used at now; time never moves backwards.
func (s *State) touch(c *client, i int32, now int64) {
	if now > c.slab[i].lastUsed {
		c.slab[i].lastUsed = now
	}
	heapFix(c.expiry, int(c.expiryAt[i]), expiryOrder{c})
	s.noteActivity(c, now)
}

func (s *State) noteActivity(c *client, now int64) {
	c.lastActivity = max(c.lastActivity, now)
}

// removeMapping deletes slab[i], moving the last slab entry into its place.
// A held address waits for OpUnhold; otherwise it is free at once.
func (s *State) removeMapping(c *client, i int32, hold bool) {
	m := c.slab[i]
	c.expiry = heapRemove(c.expiry, int(c.expiryAt[i]), expiryOrder{c})
	remove(&c.byAddr, i, byAddrKey{c.slab})
	remove(&c.byDomain, i, byDomainKey{c.slab})
	s.domains.release(m.domain)
	if hold {
		s.hold(c, m.addr)
	} else if idx, ok := s.set.indexOf(m.addr); ok && idx < c.next {
		c.free = heapPush(c.free, idx, indexOrder{})
	}
	last := int32(len(c.slab) - 1)
	if i != last {
		moved := c.slab[last]
		replace(&c.byAddr, last, i, byAddrKey{c.slab})
		replace(&c.byDomain, last, i, byDomainKey{c.slab})
		c.slab[i] = moved
		c.expiryAt[i] = c.expiryAt[last]
		c.expiry[c.expiryAt[i]] = i
	}
	c.slab = c.slab[:last]
	c.expiryAt = c.expiryAt[:last]
	s.mappings--
}

// dropIfEmpty forgets a client that holds no mapping and no held address.
func (s *State) dropIfEmpty(c *client) {
	if len(c.slab) == 0 && len(c.held) == 0 {
		s.idle = heapRemove(s.idle, c.idleAt, idleOrder{})
		delete(s.clients, c.id)
	}
}

// ForgetPerWrite is about the most mappings one write forgets in entries of
// version 4 on: whole clients, oldest first, until at least this many
// mappings are gone, the rest at the next writes. A batch that goes idle at
// once (10M mappings after an outage) would otherwise be forgotten inside
// one apply, seconds in which no write commits; at 4,096 a write spends
// about a millisecond, and 20,000 writes a second forget 80M mappings a
// second. etcd bounds lease revocation alike. Older entries forget every
// idle client, as the servers that wrote them did, and a refusal by the
// client bound or a quota forgets every idle client first, so that it
// is exact.
const ForgetPerWrite = 4096

// forgetBoundFor is the forgetting bound of an entry of version v (0: the
// version this build writes).
func forgetBoundFor(v int) int {
	if v != 0 && v < 4 {
		return 0
	}
	return ForgetPerWrite
}

// forgetIdleClients forgets the clients whose every mapping has expired at
// now, and ReuseHold with it, so the state is bounded by live use: at most
// forgetBound mappings' worth a write. It runs after each write, at the
// write's time, so every server forgets the same clients at the same point
// of the log.
func (s *State) forgetIdleClients(now int64) { s.forget(now, s.forgetBound) }

// forgetAllIdle forgets every idle client, whatever the bound.
func (s *State) forgetAllIdle(now int64) { s.forget(now, 0) }

func (s *State) forget(now int64, bound int) {
	forgotten := 0
	// Every key is at most its client's lastActivity, so once the top key is
	// recent enough no client is idle.
	for len(s.idle) > 0 && (bound == 0 || forgotten < bound) && s.expiredFor(s.idle[0].idleKey, now) {
		c := s.idle[0]
		if !s.expiredFor(c.lastActivity, now) {
			// Active since it was placed: re-key it and look again.
			c.idleKey = c.lastActivity
			heapFix(s.idle, 0, idleOrder{})
			continue
		}
		forgotten += max(len(c.slab), 1)
		for i := len(c.slab) - 1; i >= 0; i-- {
			s.removeMapping(c, int32(i), false)
		}
		s.clearHolds(c, nil)
		s.dropIfEmpty(c)
	}
}

// MarkUsed records that the client's addr was used for domain at at (S5). It
// changes nothing and returns false when addr now maps to another domain or
// the mapping was already marked at a later time.
func (s *State) MarkUsed(clientID string, addr netip.Addr, domain string, at time.Time) bool {
	if !addr.Is4() {
		return false
	}
	return s.markUsed(clientID, addrToU32(addr), domain, at.UnixNano())
}

func (s *State) markUsed(clientID string, addr uint32, domain string, at int64) bool {
	defer s.forgetIdleClients(at)
	c := s.clients[clientID]
	if c == nil {
		return false
	}
	i, ok := c.findAddr(addr)
	if !ok || s.domains.name(c.slab[i].domain) != domain || c.slab[i].lastUsed >= at {
		return false
	}
	s.touch(c, i, at)
	return true
}

// Release drops the client's mapping for domain and reports whether it had one.
func (s *State) Release(clientID, domain string, now time.Time) (bool, error) {
	if err := ValidateClientID(clientID); err != nil {
		return false, err
	}
	domain, err := NormalizeDomain(domain)
	if err != nil {
		return false, err
	}
	return s.release(clientID, domain, now.UnixNano()), nil
}

func (s *State) release(clientID, domain string, now int64) bool {
	defer s.forgetIdleClients(now)
	c := s.clients[clientID]
	if c == nil {
		return false
	}
	d, ok := s.domains.lookup(domain)
	if !ok {
		return false
	}
	i, ok := c.findDomain(d)
	if !ok {
		return false
	}
	s.removeMapping(c, i, true)
	s.noteActivity(c, now)
	return true
}

// ReleaseClient drops every mapping of the client and returns how many.
func (s *State) ReleaseClient(clientID string, now time.Time) (int, error) {
	if err := ValidateClientID(clientID); err != nil {
		return 0, err
	}
	return s.releaseClient(clientID, now.UnixNano()), nil
}

func (s *State) releaseClient(clientID string, now int64) int {
	defer s.forgetIdleClients(now)
	c := s.clients[clientID]
	if c == nil {
		return 0
	}
	n := len(c.slab)
	for i := n - 1; i >= 0; i-- {
		s.removeMapping(c, int32(i), true)
	}
	s.noteActivity(c, now)
	s.dropIfEmpty(c)
	return n
}
