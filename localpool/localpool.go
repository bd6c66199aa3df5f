// Package localpool is an address pool for one process, with no replication:
// the pool state machine behind a lock, with the wall clock as its time. It
// is what natc calls SingleMachineIPPool, for programs that need no cluster.
package localpool

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/ippool/ippool/pool"
)

// Pool is safe for concurrent use.
type Pool struct {
	mu    sync.RWMutex
	state *pool.State
	// Now is the clock; tests may replace it before first use.
	Now func() time.Time
}

// New returns a pool allocating from cfg.
func New(cfg pool.Config) (*Pool, error) {
	s := pool.NewState()
	if _, err := s.SetConfig(cfg, time.Now()); err != nil {
		return nil, err
	}
	return &Pool{state: s, Now: time.Now}, nil
}

// IPForDomain returns the client's address for domain, allocating one if the
// client has none (docs/design.md#s1-ipfordomain-allocates-or-refreshes).
func (p *Pool) IPForDomain(_ context.Context, client, domain string) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Allocate(client, domain, p.Now())
}

// LocalIPForDomain is IPForDomain for a domain the client already has (a
// refresh, never an allocation); it reports false for any other. client
// must be a valid client ID and domain normalized.
func (p *Pool) LocalIPForDomain(client, domain string) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.state.Get(client, domain); !ok {
		return netip.Addr{}, false
	}
	a, err := p.state.Allocate(client, domain, p.Now())
	return a, err == nil
}

// DomainForIP returns the domain the client's address maps to and marks
// the mapping used at at (docs/design.md#s3-domainforip). The mark is taken
// under the write lock only when it moves last-used forward, so repeated
// lookups at the same instant share the read lock.
func (p *Pool) DomainForIP(_ context.Context, client string, addr netip.Addr, at time.Time) (string, error) {
	p.mu.RLock()
	m, ok := p.state.Lookup(client, addr)
	p.mu.RUnlock()
	if !ok {
		return "", notFound(client, addr)
	}
	if at.After(m.LastUsed) {
		p.mu.Lock()
		p.state.MarkUsed(client, addr, m.Domain, at)
		p.mu.Unlock()
	}
	return m.Domain, nil
}

// Get returns the client's mapping for domain without allocating.
func (p *Pool) Get(client, domain string) (pool.Mapping, bool) {
	d, err := pool.NormalizeDomain(domain)
	if err != nil {
		return pool.Mapping{}, false
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.state.Get(client, d)
}

// HasClient reports whether the pool holds any state of the client.
func (p *Pool) HasClient(client string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.state.HasClient(client)
}

// Mappings returns the client's mappings in address order.
func (p *Pool) Mappings(client string) []pool.Mapping {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.state.Mappings(client)
}

// Release drops the client's mapping for domain and reports whether it had one.
func (p *Pool) Release(client, domain string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.Now()
	ok, err := p.state.Release(client, domain, now)
	// One process answers every request from the one state, so no answer
	// can be stale: the reuse hold has nothing to protect here.
	p.state.LiftHolds(client, now)
	return ok, err
}

// ReleaseClient drops every mapping of the client and returns how many.
func (p *Pool) ReleaseClient(client string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.Now()
	n, err := p.state.ReleaseClient(client, now)
	p.state.LiftHolds(client, now)
	return n, err
}

func notFound(client string, addr netip.Addr) error {
	return &pool.Error{Code: pool.CodeNotFound, Msg: "client " + client + " has no mapping for " + addr.String()}
}
