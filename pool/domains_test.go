package pool

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The table against a map: random interns and releases, enough to grow the
// index several times, fill it densely (so that deletions shift probe
// runs), and compact the arena; every name held looks up to its index and
// reads back, and strings handed out before a compaction keep their text.
func TestDomainTableAgainstAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tab := newDomainTable()
	model := map[string]uint32{} // name -> references
	ids := map[string]uint32{}
	var names []string
	for i := range 40_000 {
		names = append(names, fmt.Sprintf("n%d.%s.example", i, strings.Repeat("x", rng.IntN(120))))
	}
	kept := map[string]string{} // a name -> the string name() gave for it
	maxChunks, compactions, chunks := 0, 0, 0
	for step := range 400_000 {
		if len(tab.chunks) < chunks {
			compactions++
		}
		chunks = len(tab.chunks)
		maxChunks = max(maxChunks, chunks)
		name := names[rng.IntN(len(names))]
		if model[name] > 0 && rng.IntN(3) > 0 {
			tab.release(ids[name])
			model[name]--
			if model[name] == 0 {
				delete(model, name)
				delete(ids, name)
			}
		} else {
			id := tab.intern(name)
			if old, ok := ids[name]; ok && old != id {
				t.Fatalf("step %d: %q interned as %d, held as %d", step, name, id, old)
			}
			ids[name] = id
			model[name]++
			if len(kept) < 1000 {
				kept[name] = tab.name(id)
			}
		}
	}
	if tab.count() != len(model) {
		t.Fatalf("table counts %d names, model %d", tab.count(), len(model))
	}
	var bytes int64
	for name, refs := range model {
		id, ok := tab.lookup(name)
		if !ok || id != ids[name] || tab.refs[id] != refs || tab.name(id) != name {
			t.Fatalf("%q: lookup %d %v, refs %d, name %q; want %d, %d refs", name, id, ok, tab.refs[id], tab.name(id), ids[name], refs)
		}
		bytes += int64(len(name))
	}
	if bytes != tab.bytes {
		t.Fatalf("table says %d bytes, names hold %d", tab.bytes, bytes)
	}
	for _, name := range names {
		if _, ok := model[name]; !ok {
			if _, found := tab.lookup(name); found {
				t.Fatalf("%q released but found", name)
			}
		}
	}
	for name, got := range kept {
		if got != name {
			t.Fatalf("a string handed out for %q now reads %q", name, got)
		}
	}
	if tab.holes*2 > tab.arenaBytes() && tab.holes > chunkSize {
		t.Fatalf("arena %d bytes, %d of them holes: not compacted", tab.arenaBytes(), tab.holes)
	}
	if maxChunks < 3 || compactions == 0 {
		t.Fatalf("the arena reached %d chunks and was compacted %d times: the test should fill several and compact", maxChunks, compactions)
	}
}

// BenchmarkDomainTableMark is what a collection costs with 5M names held
// (the domain table of 10M mappings, half of them shared), against the Go
// map and slice of strings it replaced.
func BenchmarkDomainTableMark(b *testing.B) {
	const n = 5_000_000
	name := func(i int) string { return fmt.Sprintf("h%d-c%d-abcdefghijklmnopqrstu.corp.example", i%100, i) }
	b.Run("arena", func(b *testing.B) {
		tab := newDomainTable()
		for i := range n {
			tab.intern(name(i))
		}
		markTime(b)
		runtime.KeepAlive(&tab)
	})
	b.Run("map-of-strings", func(b *testing.B) {
		ids := make(map[string]uint32)
		var names []string
		for i := range n {
			s := strings.Clone(name(i))
			ids[s] = uint32(i)
			names = append(names, s)
		}
		markTime(b)
		runtime.KeepAlive(ids)
		runtime.KeepAlive(names)
	})
}

func markTime(b *testing.B) {
	runtime.GC()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		runtime.GC()
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/GC")
}
