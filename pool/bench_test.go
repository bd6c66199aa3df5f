package pool

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func clientName(i int) string { return "client-" + strconv.Itoa(i) }
func domainName(i int) string { return "host" + strconv.Itoa(i) + ".example.com" }

// BenchmarkAllocate measures one new allocation for one client on a /16 at a
// given fill. Every 512 allocations the timer stops while they are released
// and, as the leader does once ReuseHold has passed by its clock, unheld
// (OpUnhold), so the fill stays where the name says (99% of a /16 leaves 656
// unused) and the hold is honoured: no released address is allocated again
// before its unhold. The clock moves 1 µs per allocation and ReuseHold per
// round. At fill 0 the last unhold of a round leaves the client with nothing,
// so it is forgotten and the next round starts a new client, as it would in
// a server.
func BenchmarkAllocate(b *testing.B) {
	const size = 1 << 16
	life := time.Hour
	for _, fill := range []int{0, 50, 90, 99} {
		b.Run(fmt.Sprintf("fill=%d", fill), func(b *testing.B) {
			s := newTestState(b, "10.0.0.0/16", life)
			pre := size * fill / 100
			for i := range pre {
				mustAlloc(b, s, "c", domainName(i), t0)
			}
			names := make([]string, 512)
			for i := range names {
				names[i] = "new" + strconv.Itoa(i) + ".example.net"
			}
			unholds := make([]Op, len(names))
			now := t0.UnixNano()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				now += int64(time.Microsecond)
				a, _, err := s.allocate("c", names[i%len(names)], now, 0, Quotas{})
				if err != nil {
					b.Fatal(err)
				}
				unholds[i%len(names)] = Op{Kind: OpUnhold, Client: "c", Addr: u32ToAddr(a)}
				if i%len(names) == len(names)-1 {
					b.StopTimer()
					for _, n := range names {
						s.release("c", n, now)
					}
					now += int64(ReuseHold)
					for j := range unholds {
						unholds[j].Time = time.Unix(0, now).UTC()
					}
					for j, r := range s.ApplyOps(unholds) {
						if r.Err != nil || r.Count != 1 {
							b.Fatalf("unhold %d: %+v", j, r)
						}
					}
					b.StartTimer()
				}
			}
		})
	}
	b.Run("fill=100-reuse", func(b *testing.B) {
		s := newTestState(b, "10.0.0.0/16", life)
		for i := range size {
			mustAlloc(b, s, "c", domainName(i), t0)
		}
		now := t0.Add(2 * life).UnixNano()
		// Two rounds of names: round r maps what round r-1 left expired, and
		// its names are new because round r-1 reused round r-2's addresses.
		names := make([]string, 2*size)
		for i := range names {
			names[i] = "new" + strconv.Itoa(i) + ".example.net"
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if i%size == 0 && i > 0 {
				// Every mapping was reused once: age them all again.
				now += 2 * int64(life)
			}
			if _, _, err := s.allocate("c", names[(i/size)%2*size+i%size], now, 0, Quotas{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkLookup(b *testing.B) {
	s := newTestState(b, "10.0.0.0/16", time.Hour)
	var addrs []netip.Addr
	for i := range 1000 {
		addrs = append(addrs, mustAlloc(b, s, "client-1", domainName(i), t0))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := s.Lookup("client-1", addrs[i%len(addrs)]); !ok {
			b.Fatal("miss")
		}
	}
}

// BenchmarkApply decodes and applies one single-op allocation entry, as the
// Raft FSM does for each log entry.
func BenchmarkApply(b *testing.B) {
	s := newTestState(b, "10.0.0.0/16", time.Hour)
	entries := make([][]byte, 1024)
	for i := range entries {
		entries[i], _ = EncodeEntry(nil, Entry{Time: t0, Ops: []Op{{Kind: OpAllocate, ID: RequestID{1, uint64(i + 1)}, Client: clientName(i % 16), Domain: domainName(i)}}})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := entries[i%1024]
		if i%1024 == 0 && i > 0 {
			b.StopTimer()
			s = newTestState(b, "10.0.0.0/16", time.Hour)
			b.StartTimer()
		}
		if _, err := s.Apply(e); err != nil {
			b.Fatal(err)
		}
	}
}

// fill1M builds 1,000 clients each holding the same 1,000 domains.
func fill1M(b *testing.B) *State {
	s := newTestState(b, "10.0.0.0/16", 48*time.Hour)
	names := make([]string, 1000)
	for i := range names {
		names[i] = domainName(i)
	}
	for c := range 1000 {
		id := clientName(c)
		for d, name := range names {
			if _, _, err := s.allocate(id, name, t0.UnixNano()+int64(c*1000+d)*int64(time.Millisecond), 0, Quotas{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	return s
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMemory reports heap bytes per mapping for 1,000 clients x 1,000
// shared domains (1M mappings).
func BenchmarkMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		before := heapInUse()
		s := fill1M(b)
		after := heapInUse()
		_, n, _ := s.Counts()
		b.ReportMetric(float64(after-before)/float64(n), "heapB/mapping")
		runtime.KeepAlive(s)
	}
}

func BenchmarkSnapshot(b *testing.B) {
	s := fill1M(b)
	_, n, _ := s.Counts()
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		b.Fatal(err)
	}
	snap := buf.Bytes()
	domainText := 0
	for d := range s.domains.refs {
		domainText += len(s.domains.name(uint32(d)))
	}
	b.Run("encode", func(b *testing.B) {
		var w bytes.Buffer
		w.Grow(len(snap))
		for i := 0; i < b.N; i++ {
			w.Reset()
			if err := s.WriteSnapshot(&w); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(snap)-domainText)/float64(n), "B/mapping")
		b.ReportMetric(float64(len(snap)), "bytes")
	})
	b.Run("decode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := ReadSnapshot(bytes.NewReader(snap)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkApplyBusy applies 32-op entries of new allocations to a state
// that looks like a busy server's: 1M mappings and a full request-ID window,
// so that the indexes, the heaps and the window miss the CPU caches as they
// do in production rather than fitting in them as in BenchmarkApply.
// Reported per op.
func BenchmarkApplyBusy(b *testing.B) {
	s := fill1M(b)
	const batch = 32
	var seq uint64
	now := t0.Add(time.Hour)
	mkEntry := func(n int) []byte {
		ops := make([]Op, batch)
		for i := range ops {
			seq++
			ops[i] = Op{Kind: OpAllocate, ID: RequestID{7, seq}, Client: clientName(int(seq % 1000)), Domain: "busy" + strconv.FormatUint(seq, 10) + ".example.net"}
		}
		e, err := EncodeEntry(nil, Entry{Time: now, Ops: ops})
		if err != nil {
			b.Fatal(err)
		}
		return e
	}
	// Fill the request-ID window so every op also evicts an old ID.
	for range defaultDedupSize/batch + 1 {
		if _, err := s.Apply(mkEntry(batch)); err != nil {
			b.Fatal(err)
		}
	}
	entries := make([][]byte, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		if i%(len(entries)*batch) == 0 {
			b.StopTimer()
			for j := range entries {
				entries[j] = mkEntry(batch)
			}
			b.StartTimer()
		}
		if _, err := s.Apply(entries[(i/batch)%len(entries)]); err != nil {
			b.Fatal(err)
		}
	}
}
