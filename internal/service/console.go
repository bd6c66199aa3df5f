package service

import (
	"context"
	"net/netip"

	"github.com/ippool/ippool/pool"
)

// The reads behind the web console's pages. Each runs once under the
// state's read lock and costs at most a pass over the clients or over one
// client's mappings (pool/usage.go). Like Mappings, the ones that show
// mappings may be up to B stale and no more: a server that is not current
// confirms them through the read barrier first.

// Sizes is the size of the local state: addresses per client, clients,
// mappings, distinct domains and held addresses. It is a gauge for the
// console, read without a barrier, so a cut-off server still shows what it
// holds.
type Sizes struct {
	PoolSize, Clients, Mappings, Domains, Held int
}

// Sizes reads the local state's size.
func (s *Service) Sizes() Sizes {
	var z Sizes
	s.node.Read(func(st *pool.State) {
		z.PoolSize = st.PoolSize()
		z.Clients, z.Mappings, z.Domains = st.Counts()
		z.Held = st.HeldCount()
	})
	return z
}

// LocalReadOK says whether this server answers from its local state now.
func (s *Service) LocalReadOK() bool { return s.node.LocalReadOK() }

// confirm waits for the read barrier when consistent is asked or this server
// is not current, as Mappings does.
func (s *Service) confirm(ctx context.Context, consistent bool) error {
	if consistent || !s.node.LocalReadOK() {
		return s.node.ReadBarrier(ctx)
	}
	return nil
}

// TopClients ranks the clients whose ID starts with prefix by mappings held
// and returns ranks [offset, offset+limit), how many clients match, and the
// pool size.
func (s *Service) TopClients(ctx context.Context, prefix string, offset, limit int) (page []pool.ClientUsage, total, poolSize int, err error) {
	if err := s.confirm(ctx, false); err != nil {
		return nil, 0, 0, err
	}
	now := s.opts.Now()
	s.node.Read(func(st *pool.State) {
		page, total = st.TopClients(prefix, offset, limit, now)
		poolSize = st.PoolSize()
	})
	return page, total, poolSize, nil
}

// Occupancy draws the client's pool in at most cells cells, after a read
// barrier when consistent is set.
func (s *Service) Occupancy(ctx context.Context, client string, cells int, consistent bool) (pool.Occupancy, error) {
	if err := pool.ValidateClientID(client); err != nil {
		return pool.Occupancy{}, err
	}
	if err := s.confirm(ctx, consistent); err != nil {
		return pool.Occupancy{}, err
	}
	now := s.opts.Now()
	var o pool.Occupancy
	s.node.Read(func(st *pool.State) { o = st.Occupancy(client, cells, now) })
	return o, nil
}

// MappingsPage is a page of the client's mappings in address order (see
// pool.State.MappingsPage), after a read barrier when consistent is set.
func (s *Service) MappingsPage(ctx context.Context, client string, from netip.Addr, offset, limit int, consistent bool) (page []pool.Mapping, total, first int, err error) {
	if err := pool.ValidateClientID(client); err != nil {
		return nil, 0, 0, err
	}
	if err := s.confirm(ctx, consistent); err != nil {
		return nil, 0, 0, err
	}
	s.node.Read(func(st *pool.State) { page, total, first = st.MappingsPage(client, from, offset, limit) })
	return page, total, first, nil
}
