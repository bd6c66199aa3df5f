package pool

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// The reads in this file answer the web console's pages (GET /v1/pool/
// clients, /v1/clients/{client}/occupancy and the paged client list). The
// server runs them under the state's read lock, which holds off applying
// the log, so each costs at most one pass over the clients or over one
// client's mappings, and its answer is bounded whatever the state's size.
// None of them changes the state.

// ClientUsage is how much of the pool one client holds.
type ClientUsage struct {
	Client string
	// Mappings counts the client's mapped addresses, expired ones
	// included: an expired mapping keeps its address until another domain
	// of the client takes it.
	Mappings int
	// Expired counts the mappings expired at the time asked (S6).
	Expired int
	// Held counts the addresses under a reuse hold (ReuseHold).
	Held int
}

// usageRank orders clients by mappings, most first, then by ID.
type usageRank struct {
	id string
	n  int
}

func (a usageRank) before(b usageRank) bool {
	return a.n > b.n || a.n == b.n && a.id < b.id
}

// TopClients ranks the clients whose ID starts with prefix by how many
// mappings they hold, most first (ties by ID), and returns the ranks
// [offset, offset+limit) with their usage at now, and how many clients
// match in all. It costs one pass over the clients plus a heap of
// offset+limit entries.
func (s *State) TopClients(prefix string, offset, limit int, now time.Time) ([]ClientUsage, int) {
	offset, limit = max(offset, 0), max(limit, 0)
	k := offset + limit
	// top is a heap whose root is the lowest rank kept, so a client that
	// ranks above it replaces it.
	var top []usageRank
	total := 0
	lower := func(i, j int) bool { return top[j].before(top[i]) }
	for id, c := range s.clients {
		if !strings.HasPrefix(id, prefix) {
			continue
		}
		total++
		r := usageRank{id, len(c.slab)}
		switch {
		case k == 0:
		case len(top) < k:
			top = append(top, r)
			siftUp(len(top)-1, lower, swapper(top))
		case r.before(top[0]):
			top[0] = r
			siftDown(0, len(top), lower, swapper(top))
		}
	}
	slices.SortFunc(top, func(a, b usageRank) int {
		if a.before(b) {
			return -1
		}
		return 1
	})
	if offset >= len(top) {
		return nil, total
	}
	out := make([]ClientUsage, 0, len(top)-offset)
	for _, r := range top[offset:] {
		out = append(out, s.usageOf(s.clients[r.id], now.UnixNano()))
	}
	return out, total
}

func (s *State) usageOf(c *client, now int64) ClientUsage {
	return ClientUsage{Client: c.id, Mappings: len(c.slab), Expired: s.expiredCount(c, now), Held: len(c.held)}
}

// expiredCount counts c's mappings expired at now. The expiry heap has the
// least recently used on top and no child used before its parent, so the
// walk visits only the expired mappings and the live ones just below them.
func (s *State) expiredCount(c *client, now int64) int {
	n := 0
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(c.expiry) || now-c.slab[c.expiry[i]].lastUsed <= int64(s.cfg.Lifetime) {
			continue
		}
		n++
		stack = append(stack, 2*i+1, 2*i+2)
	}
	return n
}

// Occupancy is a picture of one client's pool: the pool's addresses in
// pool order cut into Cells cells of Block addresses each (the last may
// have fewer), and what each cell holds.
type Occupancy struct {
	PoolSize int
	Block    int
	Cells    int
	// Used lists the cells holding at least one mapped or held address, in
	// order; every other cell is all free.
	Used []CellUsage
	// Ranges are the pool's addresses (the configured pool minus the
	// exclusions) as sorted runs, so a reader can name the addresses of a
	// cell: pool index i is the i-th address counting through the runs.
	Ranges [][2]netip.Addr
}

// CellUsage is what one cell of an Occupancy holds; the rest of its
// addresses are free.
type CellUsage struct {
	Cell    int
	Live    int
	Expired int
	Held    int
}

// Occupancy draws the client's pool in at most maxCells cells at now. It
// costs one pass over the client's mappings and held addresses, and the
// answer lists at most maxCells cells.
func (s *State) Occupancy(clientID string, maxCells int, now time.Time) Occupancy {
	size := int(s.set.size)
	maxCells = max(maxCells, 1)
	block := max(1, (size+maxCells-1)/maxCells)
	o := Occupancy{PoolSize: size, Block: block, Cells: (size + block - 1) / block}
	for _, sp := range s.set.spans {
		o.Ranges = append(o.Ranges, [2]netip.Addr{u32ToAddr(sp.from), u32ToAddr(sp.to)})
	}
	c := s.clients[clientID]
	if c == nil || size == 0 {
		return o
	}
	cells := make([]CellUsage, o.Cells)
	nowNs := now.UnixNano()
	for i := range c.slab {
		m := &c.slab[i]
		idx, ok := s.set.indexOf(m.addr)
		if !ok {
			continue
		}
		cell := &cells[int(idx)/block]
		if nowNs-m.lastUsed > int64(s.cfg.Lifetime) {
			cell.Expired++
		} else {
			cell.Live++
		}
	}
	for _, a := range c.held {
		if idx, ok := s.set.indexOf(a); ok {
			cells[int(idx)/block].Held++
		}
	}
	for i, cell := range cells {
		if cell.Live+cell.Expired+cell.Held > 0 {
			cell.Cell = i
			o.Used = append(o.Used, cell)
		}
	}
	return o
}

// MappingsPage returns a page of the client's mappings in address order:
// of those at or after from (every one when from is not a valid address),
// skip offset and return at most limit. total is the client's mapping
// count and first the position of the page's first mapping among all of
// them, so a reader can say "first+1 to first+len of total". It costs one
// pass over the mappings plus a heap of offset+limit entries, not a sort
// of them all.
func (s *State) MappingsPage(clientID string, from netip.Addr, offset, limit int) (page []Mapping, total, first int) {
	c := s.clients[clientID]
	if c == nil {
		return nil, 0, 0
	}
	offset, limit = max(offset, 0), max(limit, 0)
	var lo uint32
	if from.Is4() {
		lo = addrToU32(from)
	}
	k := offset + limit
	// keys are address<<32 | slab index, so they order by address; the
	// heap's root is the highest address kept.
	var keys []uint64
	higher := func(i, j int) bool { return keys[i] > keys[j] }
	below := 0
	for i := range c.slab {
		a := c.slab[i].addr
		if a < lo {
			below++
			continue
		}
		key := uint64(a)<<32 | uint64(i)
		switch {
		case k == 0:
		case len(keys) < k:
			keys = append(keys, key)
			siftUp(len(keys)-1, higher, swapper(keys))
		case key < keys[0]:
			keys[0] = key
			siftDown(0, len(keys), higher, swapper(keys))
		}
	}
	slices.Sort(keys)
	total = len(c.slab)
	first = below + offset
	if offset >= len(keys) {
		return nil, total, first
	}
	for _, key := range keys[offset:] {
		page = append(page, s.mappingOf(c, int32(uint32(key))))
	}
	return page, total, first
}

// siftUp and siftDown keep a binary heap in a slice whose root is the
// element no other one is above; above(i, j) says element i must sit
// above element j.
func siftUp(i int, above func(i, j int) bool, swap func(i, j int)) {
	for i > 0 {
		p := (i - 1) / 2
		if !above(i, p) {
			return
		}
		swap(i, p)
		i = p
	}
}

func siftDown(i, n int, above func(i, j int) bool, swap func(i, j int)) {
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if r := c + 1; r < n && above(r, c) {
			c = r
		}
		if !above(c, i) {
			return
		}
		swap(i, c)
		i = c
	}
}

func swapper[T any](s []T) func(i, j int) {
	return func(i, j int) { s[i], s[j] = s[j], s[i] }
}
