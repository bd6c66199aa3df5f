package pool

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// model is the contract written as plainly as possible: a linear scan over
// the pool for every allocation, as the seed did, with S2's order, and the
// reuse hold: a released address is held from its client until unheld, and
// an expired one is reusable only ReuseHold after its lifetime ran out.
type model struct {
	addrs    []netip.Addr
	lifetime int64
	clients  map[string]map[netip.Addr]modelMapping
	held     map[string]map[netip.Addr]bool
	activity map[string]int64
}

type modelMapping struct {
	domain   string
	lastUsed int64
}

func newModel(cfg Config) *model {
	m := &model{clients: map[string]map[netip.Addr]modelMapping{}, held: map[string]map[netip.Addr]bool{}, activity: map[string]int64{}}
	m.setConfig(cfg)
	return m
}

func (m *model) setConfig(cfg Config) int {
	set, _ := cfg.addrSet()
	m.addrs = nil
	for i := uint32(0); i < set.size; i++ {
		m.addrs = append(m.addrs, u32ToAddr(set.addrAt(i)))
	}
	m.lifetime = int64(cfg.Lifetime)
	released := 0
	for c, ms := range m.clients {
		for a := range ms {
			if !slices.Contains(m.addrs, a) {
				delete(ms, a)
				released++
			}
		}
		for a := range m.held[c] {
			if !slices.Contains(m.addrs, a) {
				delete(m.held[c], a)
			}
		}
		m.dropIfEmpty(c)
	}
	return released
}

func (m *model) dropIfEmpty(c string) {
	if len(m.clients[c]) == 0 && len(m.held[c]) == 0 {
		delete(m.clients, c)
		delete(m.held, c)
		delete(m.activity, c)
	}
}

func (m *model) forget(now int64) {
	for c, last := range m.activity {
		if now-last > m.lifetime+int64(ReuseHold) {
			delete(m.clients, c)
			delete(m.held, c)
			delete(m.activity, c)
		}
	}
}

func (m *model) hold(c string, a netip.Addr, now int64) {
	if m.held[c] == nil {
		m.held[c] = map[netip.Addr]bool{}
	}
	m.held[c][a] = true
	m.activity[c] = max(m.activity[c], now)
}

func (m *model) unhold(c string, a netip.Addr, now int64) bool {
	defer m.forget(now)
	if !m.held[c][a] {
		return false
	}
	delete(m.held[c], a)
	m.dropIfEmpty(c)
	return true
}

func (m *model) use(c string, a netip.Addr, d string, now int64) {
	old, ok := m.clients[c][a]
	if ok && old.domain == d && old.lastUsed > now {
		now = old.lastUsed
	}
	m.clients[c][a] = modelMapping{d, now}
	m.activity[c] = max(m.activity[c], now)
}

// allocate returns the address, whether it reused an expired mapping, and
// whether it failed for exhaustion.
func (m *model) allocate(c, d string, now int64) (addr netip.Addr, ok bool) {
	ms := m.clients[c]
	if ms == nil {
		ms = map[netip.Addr]modelMapping{}
		m.clients[c] = ms
		m.activity[c] = now
	}
	// A failed allocation changes nothing, so only a success forgets.
	defer func() {
		if ok {
			m.forget(now)
		}
	}()
	for a, mm := range ms {
		if mm.domain == d {
			m.use(c, a, d, now)
			return a, true
		}
	}
	for _, a := range m.addrs {
		if _, used := ms[a]; !used && !m.held[c][a] {
			m.use(c, a, d, now)
			return a, true
		}
	}
	var best netip.Addr
	var bestUsed int64
	for _, a := range m.addrs {
		mm, used := ms[a]
		if used && now-mm.lastUsed > m.lifetime+int64(ReuseHold) && (!best.IsValid() || mm.lastUsed < bestUsed) {
			best, bestUsed = a, mm.lastUsed
		}
	}
	if !best.IsValid() {
		m.dropIfEmpty(c)
		return netip.Addr{}, false
	}
	m.use(c, best, d, now)
	return best, true
}

func (m *model) markUsed(c string, a netip.Addr, d string, at int64) bool {
	defer m.forget(at)
	mm, ok := m.clients[c][a]
	if !ok || mm.domain != d || mm.lastUsed >= at {
		return false
	}
	m.use(c, a, d, at)
	return true
}

func (m *model) release(c, d string, now int64) bool {
	defer m.forget(now)
	for a, mm := range m.clients[c] {
		if mm.domain == d {
			delete(m.clients[c], a)
			m.hold(c, a, now)
			return true
		}
	}
	return false
}

func (m *model) releaseClient(c string, now int64) int {
	defer m.forget(now)
	n := len(m.clients[c])
	if _, ok := m.activity[c]; !ok {
		return 0
	}
	for a := range m.clients[c] {
		delete(m.clients[c], a)
		m.hold(c, a, now)
	}
	m.activity[c] = max(m.activity[c], now)
	m.dropIfEmpty(c)
	return n
}

// checkAgainst compares every mapping of s with the model.
func (m *model) checkAgainst(t *rapid.T, s *State) {
	if got, want := s.Clients(), sortedKeys(m.clients); !slices.Equal(got, want) {
		t.Fatalf("clients %v, model has %v", got, want)
	}
	gotHeld := map[string][]netip.Addr{}
	s.Holds(func(h Hold) bool {
		gotHeld[h.Client] = append(gotHeld[h.Client], h.Addr)
		return true
	})
	for c := range m.clients {
		var want []netip.Addr
		for a := range m.held[c] {
			want = append(want, a)
		}
		slices.SortFunc(want, netip.Addr.Compare)
		if !slices.Equal(gotHeld[c], want) {
			t.Fatalf("client %s holds %v, model holds %v", c, gotHeld[c], want)
		}
		delete(gotHeld, c)
	}
	if len(gotHeld) > 0 {
		t.Fatalf("holds of clients the model does not have: %v", gotHeld)
	}
	for c, ms := range m.clients {
		got := s.Mappings(c)
		if len(got) != len(ms) {
			t.Fatalf("client %s has %d mappings, model has %d", c, len(got), len(ms))
		}
		for _, g := range got {
			want := ms[g.Addr]
			if g.Domain != want.domain || g.LastUsed.UnixNano() != want.lastUsed {
				t.Fatalf("client %s %v: %s@%d, model has %s@%d", c, g.Addr, g.Domain, g.LastUsed.UnixNano(), want.domain, want.lastUsed)
			}
		}
	}
	if err := s.checkInvariants(); err != nil {
		t.Fatal(err)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkInvariants verifies the internal indexes agree with each other: one
// domain per address and one address per domain for each client, heaps in
// order, reference counts exact.
func (s *State) checkInvariants() error {
	refs := map[uint32]uint32{}
	total, heldTotal := 0, 0
	for id, c := range s.clients {
		if len(c.slab) == 0 && len(c.held) == 0 {
			return fmt.Errorf("client %s is empty but kept", id)
		}
		if _, listed := s.holding[c]; listed != (len(c.held) > 0) {
			return fmt.Errorf("client %s: holding set disagrees with its %d held addresses", id, len(c.held))
		}
		for i, a := range c.held {
			if i > 0 && a <= c.held[i-1] {
				return fmt.Errorf("client %s: held addresses out of order", id)
			}
			if _, mapped := c.findAddr(a); mapped || !s.set.contains(a) {
				return fmt.Errorf("client %s holds %v, which is mapped or outside the pool", id, u32ToAddr(a))
			}
			if idx, _ := s.set.indexOf(a); slices.Contains(c.free, idx) {
				return fmt.Errorf("client %s: held %v is also free", id, u32ToAddr(a))
			}
		}
		heldTotal += len(c.held)
		if c.byAddr.n != len(c.slab) || c.byDomain.n != len(c.slab) || len(c.expiry) != len(c.slab) {
			return fmt.Errorf("client %s: %d mappings but %d/%d/%d index entries", id, len(c.slab), c.byAddr.n, c.byDomain.n, len(c.expiry))
		}
		for i, m := range c.slab {
			ai, _ := c.findAddr(m.addr)
			di, _ := c.findDomain(m.domain)
			if ai != int32(i) || di != int32(i) || c.expiry[c.expiryAt[i]] != int32(i) {
				return fmt.Errorf("client %s: mapping %d is not indexed consistently", id, i)
			}
			if !s.set.contains(m.addr) {
				return fmt.Errorf("client %s maps %v outside the pool", id, u32ToAddr(m.addr))
			}
			if m.lastUsed > c.lastActivity {
				return fmt.Errorf("client %s: last used after last activity", id)
			}
			refs[m.domain]++
		}
		for i := 1; i < len(c.expiry); i++ {
			if (expiryOrder{c}).less(c.expiry[i], c.expiry[(i-1)/2]) {
				return fmt.Errorf("client %s: expiry heap out of order", id)
			}
		}
		for _, f := range c.free {
			if f >= c.next {
				return fmt.Errorf("client %s: free index %d at or above next %d", id, f, c.next)
			}
			if _, mapped := c.findAddr(s.set.addrAt(f)); mapped {
				return fmt.Errorf("client %s: free index %d is mapped", id, f)
			}
		}
		if s.idle[c.idleAt] != c {
			return fmt.Errorf("client %s: idle heap position is wrong", id)
		}
		total += len(c.slab)
	}
	for i := 1; i < len(s.idle); i++ {
		if (idleOrder{}).less(s.idle[i], s.idle[(i-1)/2]) {
			return fmt.Errorf("idle heap out of order at %d", i)
		}
	}
	if heldTotal != s.heldCount || len(s.holding) > len(s.clients) {
		return fmt.Errorf("counted %d held addresses, state says %d", heldTotal, s.heldCount)
	}
	if total != s.mappings || len(s.idle) != len(s.clients) {
		return fmt.Errorf("counted %d mappings and %d idle entries; state says %d and %d clients", total, len(s.idle), s.mappings, len(s.clients))
	}
	var domainBytes int64
	held := 0
	var bad error
	s.domains.forEach(func(id uint32) {
		name := s.domains.name(id)
		domainBytes += int64(len(name))
		held++
		if got, ok := s.domains.lookup(name); (!ok || got != id) && bad == nil {
			bad = fmt.Errorf("domain %q (index %d) looks up as %d, %v", name, id, got, ok)
		}
	})
	if bad != nil {
		return bad
	}
	if domainBytes != s.domains.bytes {
		return fmt.Errorf("domains hold %d bytes, table says %d", domainBytes, s.domains.bytes)
	}
	if len(refs) != held || held != s.domains.count() {
		return fmt.Errorf("%d domains in use, table holds %d and counts %d", len(refs), held, s.domains.count())
	}
	for d, n := range refs {
		if s.domains.refs[d] != n {
			return fmt.Errorf("domain %q: %d references, table says %d", s.domains.name(d), n, s.domains.refs[d])
		}
	}
	return nil
}

var (
	propClients = []string{"a", "b", "c"}
	propDomains = []string{"d0.x", "d1.x", "d2.x", "d3.x", "d4.x", "d5.x", "d6.x", "d7.x"}
	propPools   = []string{"10.0.0.0/30", "10.0.0.0/29", "10.0.0.1-10.0.0.3,10.0.0.9-10.0.0.10", "10.0.0.4/30,10.0.1.0/31"}
)

// Time in the property test moves in units of a tenth of a second: the
// lifetime is 100 units, ReuseHold 50.
const (
	propUnit     = int64(time.Second / 10)
	propLifetime = 100 * time.Duration(propUnit)
)

// TestPropertyMatchesModel drives a State and the model with the same random
// operations and requires the same answers and the same state after each.
// A second State fed the same ops must give byte-identical snapshots, and
// from time to time the State is replaced by its own snapshot round trip.
func TestPropertyMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg, _ := ParseConfig(rapid.SampledFrom(propPools).Draw(t, "pool"), "", propLifetime)
		s, twin := NewState(), NewState()
		s.SetConfig(cfg, time.Unix(0, 0))
		twin.SetConfig(cfg, time.Unix(0, 0))
		m := newModel(cfg)
		now := int64(0)
		for step := range rapid.IntRange(1, 120).Draw(t, "steps") {
			// Time mostly moves forward; sometimes a proposer's clock is behind.
			now += rapid.Int64Range(-20, 60).Draw(t, "dt") * propUnit
			at := time.Unix(0, now)
			c := rapid.SampledFrom(propClients).Draw(t, "client")
			d := rapid.SampledFrom(propDomains).Draw(t, "domain")
			var op Op
			switch k := rapid.IntRange(0, 10).Draw(t, "op"); {
			case k < 5:
				op = Op{Kind: OpAllocate, Client: c, Domain: d}
			case k < 7:
				a := m.addrs[rapid.IntRange(0, len(m.addrs)-1).Draw(t, "addr")]
				op = Op{Kind: OpMarkUsed, Client: c, Domain: d, Addr: a}
			case k < 8:
				a := m.addrs[rapid.IntRange(0, len(m.addrs)-1).Draw(t, "addr")]
				op = Op{Kind: OpUnhold, Client: c, Addr: a}
			case k < 9:
				op = Op{Kind: OpRelease, Client: c, Domain: d}
			case k < 10:
				op = Op{Kind: OpReleaseClient, Client: c}
			default:
				cfg, _ = ParseConfig(rapid.SampledFrom(propPools).Draw(t, "newpool"), "", propLifetime)
				op = Op{Kind: OpSetConfig, Config: cfg}
			}
			op.Time = at
			op.ID = RequestID{Origin: 1, Seq: uint64(step + 1)}
			entry, err := EncodeEntry(nil, Entry{Time: at, Ops: []Op{op}})
			if err != nil {
				t.Fatal(err)
			}
			before := s.Mappings(c)
			res, err := s.Apply(entry)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := twin.Apply(entry); err != nil {
				t.Fatal(err)
			}
			r := res[0]
			switch op.Kind {
			case OpAllocate:
				want, ok := m.allocate(c, d, now)
				if !ok {
					if !errors.Is(r.Err, ErrPoolExhausted) {
						t.Fatalf("allocate %s %s: %v, model says exhausted", c, d, r.Err)
					}
					break
				}
				if r.Err != nil || r.Addr != want {
					t.Fatalf("allocate %s %s = %v %v, model gives %v", c, d, r.Addr, r.Err, want)
				}
				// Nothing unexpired is ever reused.
				for _, b := range before {
					if b.Addr == r.Addr && b.Domain != d && now-b.LastUsed.UnixNano() <= int64(propLifetime+ReuseHold) {
						t.Fatalf("reused %v of unexpired %s", r.Addr, b.Domain)
					}
				}
			case OpMarkUsed:
				if want := m.markUsed(c, op.Addr, d, now); (r.Count == 1) != want {
					t.Fatalf("mark %s %v %s: %d, model says %v", c, op.Addr, d, r.Count, want)
				}
			case OpRelease:
				if want := m.release(c, d, now); (r.Count == 1) != want {
					t.Fatalf("release %s %s: %d, model says %v", c, d, r.Count, want)
				}
			case OpUnhold:
				if want := m.unhold(c, op.Addr, now); (r.Count == 1) != want {
					t.Fatalf("unhold %s %v: %d, model says %v", c, op.Addr, r.Count, want)
				}
			case OpReleaseClient:
				if want := m.releaseClient(c, now); r.Count != want {
					t.Fatalf("release client %s: %d, model says %d", c, r.Count, want)
				}
			case OpSetConfig:
				want := m.setConfig(op.Config)
				m.forget(now)
				if r.Count != want {
					t.Fatalf("set config: released %d, model says %d", r.Count, want)
				}
			}
			// A retry of the same entry changes nothing and answers the same.
			if rapid.IntRange(0, 9).Draw(t, "retry") == 0 {
				snap := snapshotBytes(t, s)
				again, _ := s.Apply(entry)
				twin.Apply(entry)
				if r.Err == nil && (again[0].Addr != r.Addr || again[0].Count != r.Count) {
					t.Fatalf("retried %v answered %+v, first %+v", op.Kind, again[0], r)
				}
				if r.Err == nil && !bytes.Equal(snap, snapshotBytes(t, s)) {
					t.Fatalf("retried %v changed the state", op.Kind)
				}
				if r.Err != nil {
					// The retry ran again; keep the model in step.
					m.allocate(c, d, now)
				}
			}
			m.checkAgainst(t, s)
			if !bytes.Equal(snapshotBytes(t, s), snapshotBytes(t, twin)) {
				t.Fatal("two states fed the same log have different snapshots")
			}
			if rapid.IntRange(0, 9).Draw(t, "roundtrip") == 0 {
				snap := snapshotBytes(t, s)
				restored, err := ReadSnapshot(bytes.NewReader(snap))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(snap, snapshotBytes(t, restored)) {
					t.Fatal("snapshot round trip changed the state")
				}
				s = restored
				m.checkAgainst(t, s)
			}
		}
	})
}
