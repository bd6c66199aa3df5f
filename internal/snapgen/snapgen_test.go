package snapgen

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/ippool/ippool/pool"
)

func testPool(t testing.TB) pool.Config {
	cfg, err := pool.ParseConfig("100.64.0.0/20", "", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A generated state holds what was asked: every client with its mappings,
// names of the asked length, half of them shared, nothing expired at Now,
// and its snapshot reads back the same.
func TestGenerate(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	st, err := Generate(Config{Pool: testPool(t), Clients: 300, MappingsPerClient: 40, DomainBytes: 120, Now: now, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	clients, mappings, domains := st.Counts()
	if clients != 300 || mappings != 12_000 {
		t.Fatalf("%d clients, %d mappings; want 300 and 12,000", clients, mappings)
	}
	// 20 shared names a client from 10,000, 20 of its own.
	if own := 300 * 20; domains < own || domains > own+10_000 {
		t.Fatalf("%d domains, want %d own and up to 10,000 shared", domains, own)
	}
	ms := st.Mappings("10.0.1.7")
	if len(ms) != 40 {
		t.Fatalf("client 10.0.1.7 has %d mappings", len(ms))
	}
	oldest, newest := now, time.Time{}
	for _, m := range ms {
		if n := len(m.Domain); n < 115 || n > 125 {
			t.Errorf("%s: %d bytes, want about 120", m.Domain, n)
		}
		if _, err := pool.NormalizeDomain(m.Domain); err != nil {
			t.Errorf("%s: %v", m.Domain, err)
		}
		if st.Expired(m.LastUsed, now) {
			t.Errorf("%s expired at Now", m.Domain)
		}
		if m.LastUsed.Before(oldest) {
			oldest = m.LastUsed
		}
		if m.LastUsed.After(newest) {
			newest = m.LastUsed
		}
	}
	if span := newest.Sub(oldest); span < 24*time.Hour {
		t.Errorf("one client's mappings span %v, want most of the 43h the generator spreads them over", span)
	}
	var b bytes.Buffer
	if err := st.WriteSnapshot(&b); err != nil {
		t.Fatal(err)
	}
	back, err := pool.ReadSnapshot(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if c, m, d := back.Counts(); c != clients || m != mappings || d != domains {
		t.Fatalf("read back %d/%d/%d", c, m, d)
	}
}

// A short UsedWithin makes a batch that goes idle at once: every mapping
// last used within it, all expired a lifetime later.
func TestGenerateUsedWithin(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	st, err := Generate(Config{Pool: testPool(t), Clients: 50, MappingsPerClient: 20, DomainBytes: 30, Now: now, UsedWithin: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range st.Clients() {
		for _, m := range st.Mappings(id) {
			if m.LastUsed.Before(now.Add(-time.Second)) || m.LastUsed.After(now) {
				t.Fatalf("%s %s last used %v, want within the second before %v", id, m.Domain, m.LastUsed, now)
			}
			if !st.Expired(m.LastUsed, now.Add(48*time.Hour+time.Second)) {
				t.Fatalf("%s %s not expired a lifetime later", id, m.Domain)
			}
		}
	}
}

func TestGenerateRefuses(t *testing.T) {
	for _, cfg := range []Config{
		{Pool: testPool(t), Clients: 0, MappingsPerClient: 1, DomainBytes: 20},
		{Pool: testPool(t), Clients: 1, MappingsPerClient: 1, DomainBytes: 5},
		{Pool: testPool(t), Clients: 1, MappingsPerClient: 5000, DomainBytes: 20},
		{Pool: testPool(t), Clients: 1, MappingsPerClient: 10, DomainBytes: 20, Shared: 1, SharedNames: 5},
		{Pool: testPool(t), Clients: 1, MappingsPerClient: 1, DomainBytes: 20, UsedWithin: 49 * time.Hour},
	} {
		if _, err := Generate(cfg); err == nil {
			t.Errorf("%+v: generated", cfg)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	cfg := Config{Pool: testPool(b), Clients: 1000, MappingsPerClient: 100, DomainBytes: 40, Seed: 1}
	for b.Loop() {
		if _, err := Generate(cfg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*cfg.Clients*cfg.MappingsPerClient), "ns/mapping")
}

func TestPickDistinct(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range [][2]int{{10_000, 50}, {10, 10}, {5, 1}, {1, 1}} {
		got := pickDistinct(rng, tc[0], tc[1])
		seen := map[int]bool{}
		for _, v := range got {
			if v < 0 || v >= tc[0] || seen[v] {
				t.Fatalf("pickDistinct(%d, %d) = %v: out of range or repeated", tc[0], tc[1], got)
			}
			seen[v] = true
		}
		if len(got) != tc[1] {
			t.Fatalf("pickDistinct(%d, %d) gave %d", tc[0], tc[1], len(got))
		}
	}
}

// BenchmarkStateHeap is the engine's heap per mapping for the ladder's
// state (docs/scale.md): 10,000 clients of 100 mappings, 40-byte names, half
// of them shared. A cluster's servers hold this plus what serving costs;
// the ladder compares their RSS with it. ms/GC is one collection with the
// state live.
func BenchmarkStateHeap(b *testing.B) {
	cfg := Config{Pool: testPool(b), Clients: 10_000, MappingsPerClient: 100, DomainBytes: 40, Seed: 1}
	cfg.Pool.Lifetime = 48 * time.Hour
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		st, err := Generate(cfg)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		_, n, _ := st.Counts()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heapB/mapping")
		// What a collection costs with this state live: the collector's
		// marking is what grows with the state.
		start := time.Now()
		runtime.GC()
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "ms/GC")
		runtime.KeepAlive(st)
	}
}
