package pool

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// usageState is a state of 40 clients with 0 to 300 mappings each on a
// pool with a hole in it: some mappings are expired at usageNow, some
// domains released (their addresses held).
func usageState(t testing.TB) *State {
	t.Helper()
	cfg, err := ParseConfig("10.0.0.0/22", "10.0.1.0/26", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := NewState()
	if _, err := s.SetConfig(cfg, t0); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for c := range 40 {
		id := fmt.Sprintf("gw-%02d", c)
		if c%5 == 0 {
			id = fmt.Sprintf("node-%02d", c)
		}
		n := r.IntN(300)
		for d := range n {
			// Half the clients' early mappings are older than the lifetime
			// at usageNow.
			at := usageNow.Add(-time.Duration(r.IntN(90)) * time.Minute)
			mustAlloc(t, s, id, domainName(d), at)
		}
		for d := 0; d < n; d += 7 {
			if _, err := s.Release(id, domainName(d), usageNow); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

var usageNow = t0.Add(2 * time.Hour)

// naiveUsage is ClientUsage computed from the public reads.
func naiveUsage(s *State, id string, now time.Time) ClientUsage {
	u := ClientUsage{Client: id}
	for _, m := range s.Mappings(id) {
		u.Mappings++
		if s.Expired(m.LastUsed, now) {
			u.Expired++
		}
	}
	s.Holds(func(h Hold) bool {
		if h.Client == id {
			u.Held++
		}
		return true
	})
	return u
}

func TestTopClientsRanksByMappingsAndPages(t *testing.T) {
	s := usageState(t)
	before := snapshotBytes(t, s)
	for _, prefix := range []string{"", "gw-", "node-", "nobody"} {
		var want []ClientUsage
		for _, id := range s.Clients() {
			if strings.HasPrefix(id, prefix) {
				want = append(want, naiveUsage(s, id, usageNow))
			}
		}
		slices.SortStableFunc(want, func(a, b ClientUsage) int { return b.Mappings - a.Mappings })
		for _, page := range [][2]int{{0, 10}, {10, 10}, {35, 10}, {0, 1000}, {0, 0}, {100, 5}, {-3, 2}} {
			got, total := s.TopClients(prefix, page[0], page[1], usageNow)
			if total != len(want) {
				t.Fatalf("prefix %q: total %d, want %d", prefix, total, len(want))
			}
			from := min(max(page[0], 0), len(want))
			exp := want[from:min(from+page[1], len(want))]
			if !slices.Equal(got, exp) && len(got)+len(exp) > 0 {
				t.Fatalf("prefix %q page %v:\n got %v\nwant %v", prefix, page, got, exp)
			}
		}
	}
	if !bytes.Equal(before, snapshotBytes(t, s)) {
		t.Fatal("TopClients changed the state")
	}
}

func TestUsageCountsExpiredAndHeld(t *testing.T) {
	s := usageState(t)
	for _, id := range s.Clients() {
		got := s.usageOf(s.clients[id], usageNow.UnixNano())
		if want := naiveUsage(s, id, usageNow); got != want {
			t.Fatalf("%s: %+v, want %+v", id, got, want)
		}
	}
	// Every mapping expired, none expired.
	for _, at := range []time.Time{t0.Add(10 * time.Hour), t0} {
		got := s.usageOf(s.clients["gw-01"], at.UnixNano())
		if want := naiveUsage(s, "gw-01", at); got != want || got.Mappings == 0 {
			t.Fatalf("at %v: %+v, want %+v", at, got, want)
		}
	}
}

func TestMappingsPageFollowsAddressOrder(t *testing.T) {
	s := usageState(t)
	before := snapshotBytes(t, s)
	for _, id := range s.Clients() {
		all := s.Mappings(id)
		froms := []netip.Addr{{}, netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.0.0.77"), netip.MustParseAddr("10.0.3.255"), netip.MustParseAddr("11.0.0.0")}
		if len(all) > 3 {
			froms = append(froms, all[3].Addr)
		}
		for _, from := range froms {
			below := 0
			if from.IsValid() {
				below = slices.IndexFunc(all, func(m Mapping) bool { return m.Addr.Compare(from) >= 0 })
				if below < 0 {
					below = len(all)
				}
			}
			for _, page := range [][2]int{{0, 50}, {50, 50}, {0, 1}, {1000, 10}, {0, 0}} {
				got, total, first := s.MappingsPage(id, from, page[0], page[1])
				lo := min(below+page[0], len(all))
				want := all[lo:min(lo+page[1], len(all))]
				if total != len(all) || first != below+page[0] || !slices.Equal(got, want) && len(got)+len(want) > 0 {
					t.Fatalf("%s from %v page %v: total %d first %d %v, want %d %d %v", id, from, page, total, first, got, len(all), below+page[0], want)
				}
			}
		}
	}
	if got, total, _ := s.MappingsPage("nobody", netip.Addr{}, 0, 10); got != nil || total != 0 {
		t.Fatalf("unknown client: %v %d", got, total)
	}
	if !bytes.Equal(before, snapshotBytes(t, s)) {
		t.Fatal("MappingsPage changed the state")
	}
}

func TestOccupancyCountsEveryAddressOnce(t *testing.T) {
	s := usageState(t)
	for _, cells := range []int{1, 7, 64, 4096, 1 << 20} {
		for _, id := range append(s.Clients(), "nobody") {
			o := s.Occupancy(id, cells, usageNow)
			if o.PoolSize != 960 || o.Cells > cells || o.Cells*o.Block < o.PoolSize || (o.Cells-1)*o.Block >= o.PoolSize {
				t.Fatalf("%d cells: size %d, %d cells of %d", cells, o.PoolSize, o.Cells, o.Block)
			}
			want := naiveUsage(s, id, usageNow)
			var got ClientUsage
			got.Client = id
			last := -1
			for _, c := range o.Used {
				if c.Cell <= last || c.Cell >= o.Cells || c.Live+c.Expired+c.Held == 0 || c.Live+c.Expired+c.Held > o.Block {
					t.Fatalf("%d cells: bad cell %+v after %d", cells, c, last)
				}
				last = c.Cell
				got.Mappings += c.Live + c.Expired
				got.Expired += c.Expired
				got.Held += c.Held
			}
			if got != want {
				t.Fatalf("%s in %d cells: %+v, want %+v", id, cells, got, want)
			}
		}
	}
	// One cell per address: each mapping is in the cell of its pool index,
	// counting through the ranges (the /26 hole shifts the later ones).
	o := s.Occupancy("gw-01", 4096, usageNow)
	if o.Block != 1 || len(o.Ranges) != 2 || o.Ranges[1][0] != netip.MustParseAddr("10.0.1.64") {
		t.Fatalf("block %d ranges %v", o.Block, o.Ranges)
	}
	index := func(a netip.Addr) int {
		if a.Less(o.Ranges[1][0]) {
			return int(addrToU32(a) - addrToU32(o.Ranges[0][0]))
		}
		return 256 + int(addrToU32(a)-addrToU32(o.Ranges[1][0]))
	}
	used := map[int]CellUsage{}
	for _, c := range o.Used {
		used[c.Cell] = c
	}
	for _, m := range s.Mappings("gw-01") {
		c := used[index(m.Addr)]
		if c.Live+c.Expired != 1 || (c.Expired == 1) != s.Expired(m.LastUsed, usageNow) {
			t.Fatalf("%v (index %d): cell %+v", m.Addr, index(m.Addr), c)
		}
	}
}

// The console's reads on a state of 1,000 clients and 100,000 mappings
// (one client holding 20,000 of them, the rest spread), the size its pages
// must answer for within 50 ms.
func BenchmarkConsoleReads(b *testing.B) {
	s := consoleBenchState(b)
	now := t0.Add(70 * time.Minute)
	b.Run("TopClients-20", func(b *testing.B) {
		for b.Loop() {
			s.TopClients("", 0, 20, now)
		}
	})
	b.Run("TopClients-last-page", func(b *testing.B) {
		for b.Loop() {
			s.TopClients("", 980, 20, now)
		}
	})
	b.Run("Occupancy-busiest-4096", func(b *testing.B) {
		for b.Loop() {
			s.Occupancy("client-0", 4096, now)
		}
	})
	b.Run("MappingsPage-busiest-first-50", func(b *testing.B) {
		for b.Loop() {
			s.MappingsPage("client-0", netip.Addr{}, 0, 50)
		}
	})
	b.Run("MappingsPage-busiest-last-50", func(b *testing.B) {
		for b.Loop() {
			s.MappingsPage("client-0", netip.Addr{}, 19950, 50)
		}
	})
}

// consoleBenchState holds 1,000 clients and 100,000 mappings with a
// lifetime of an hour: client-0 has 20,080, the others 40 to 120 each.
// The mappings were used over an hour from t0, so at t0+70m a sixth of them
// are expired.
func consoleBenchState(b *testing.B) *State {
	s := newTestState(b, "198.18.0.0/15", time.Hour)
	counts := make([]int, 1000)
	counts[0] = 20080
	for i := 1; i < len(counts); i++ {
		counts[i] = 80 + 10*(i%9-4)
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	// Interleaved, and each client's times spread over the hour.
	done := make([]int, len(counts))
	for k := 0; k < total; {
		for c, n := range counts {
			if done[c] < n {
				at := t0.Add(time.Duration(done[c]) * time.Hour / time.Duration(n))
				mustAlloc(b, s, clientName(c), domainName(done[c]), at)
				done[c]++
				k++
			}
		}
	}
	if _, m, _ := s.Counts(); m != 100000 {
		b.Fatalf("%d mappings", m)
	}
	return s
}
