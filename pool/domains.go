package pool

import (
	"hash/maphash"
	"unsafe"
)

// domainTable interns domain names so that a name shared by many clients is
// stored once; mappings hold its index.
//
// It holds no pointers but its slices' own, so the collector does not trace
// it: at 30M mappings it holds 15M names, and as a Go map of strings with a
// slice of them it was 30M pointers that every collection followed, half the
// servers' CPU under load (docs/scale.md). Names live in an arena of
// fixed-size chunks, found by an open-addressing index of name hashes.
type domainTable struct {
	// chunks hold every name's bytes, back to back, chunkSize bytes each
	// (a name never straddles two). A chunk is never moved or written over:
	// the strings name returns point into it. One arena slice grown by
	// append copied all of it at each growth, 1.1 GB of garbage and copies
	// of hundreds of megabytes that nothing could preempt while 10M
	// mappings were decoded; compacting writes new chunks.
	chunks [][]byte
	// spans is each index's place in the arena: offset<<16 | length, where
	// offset is the chunk's number times chunkSize plus the place in it.
	spans []uint64
	refs  []uint32
	free  []uint32
	// slots is the index: 0 is empty, else the name's 32-bit hash<<32 |
	// index+1, linear probing, at most three quarters full.
	slots []uint64
	seed  maphash.Seed
	live  int
	// bytes is the length of every name held, each counted once; holes is
	// the arena's bytes of names since released.
	bytes, holes int64
}

// chunkSize is the arena's unit: a megabyte, so that a name's bytes (253
// at most) waste little at a chunk's end and the arena's growth costs one
// allocation a megabyte, with no copy.
const chunkSize = 1 << 20

func newDomainTable() domainTable {
	return domainTable{slots: make([]uint64, 1024), seed: maphash.MakeSeed()}
}

// name is index id's name. It points into the arena: no copy.
func (t *domainTable) name(id uint32) string {
	sp := t.spans[id]
	n := int(sp & 0xffff)
	if n == 0 {
		return ""
	}
	off := sp >> 16
	return unsafe.String(&t.chunks[off/chunkSize][off%chunkSize], n)
}

// place copies name into the arena's last chunk, or a new one when it
// does not fit, and returns its span.
func place(chunks *[][]byte, name string) uint64 {
	c := *chunks
	if len(c) == 0 || len(c[len(c)-1])+len(name) > chunkSize {
		c = append(c, make([]byte, 0, chunkSize))
		*chunks = c
	}
	last := &c[len(c)-1]
	off := uint64(len(c)-1)*chunkSize + uint64(len(*last))
	*last = append(*last, name...)
	return off<<16 | uint64(len(name))
}

// arenaBytes is the size of the chunks' contents, holes included.
func (t *domainTable) arenaBytes() int64 {
	if len(t.chunks) == 0 {
		return 0
	}
	return int64(len(t.chunks)-1)*chunkSize + int64(len(t.chunks[len(t.chunks)-1]))
}

// count is how many names the table holds.
func (t *domainTable) count() int { return t.live }

// forEach calls fn with the index of every name held.
func (t *domainTable) forEach(fn func(id uint32)) {
	for id, r := range t.refs {
		if r > 0 {
			fn(uint32(id))
		}
	}
}

func (t *domainTable) hash(name string) uint32 { return uint32(maphash.String(t.seed, name)) }

// find is name's index and its slot, or the empty slot where it would go.
func (t *domainTable) find(name string, h uint32) (id uint32, slot int, ok bool) {
	mask := uint32(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == 0 {
			return 0, int(i), false
		}
		if uint32(s>>32) == h {
			if id := uint32(s) - 1; t.name(id) == name {
				return id, int(i), true
			}
		}
	}
}

func (t *domainTable) lookup(name string) (uint32, bool) {
	id, _, ok := t.find(name, t.hash(name))
	return id, ok
}

// growth is what interning name would add to bytes.
func (t *domainTable) growth(name string) int64 {
	if _, ok := t.lookup(name); ok {
		return 0
	}
	return int64(len(name))
}

func (t *domainTable) intern(name string) uint32 {
	h := t.hash(name)
	id, slot, ok := t.find(name, h)
	if ok {
		t.refs[id]++
		return id
	}
	if (t.live+1)*4 > len(t.slots)*3 {
		t.grow()
		_, slot, _ = t.find(name, h)
	}
	sp := place(&t.chunks, name)
	if n := len(t.free); n > 0 {
		id, t.free = t.free[n-1], t.free[:n-1]
		t.spans[id], t.refs[id] = sp, 1
	} else {
		id = uint32(len(t.spans))
		t.spans = append(t.spans, sp)
		t.refs = append(t.refs, 1)
	}
	t.slots[slot] = uint64(h)<<32 | uint64(id+1)
	t.live++
	t.bytes += int64(len(name))
	return id
}

func (t *domainTable) release(id uint32) {
	t.refs[id]--
	if t.refs[id] > 0 {
		return
	}
	name := t.name(id)
	_, slot, _ := t.find(name, t.hash(name))
	t.unslot(slot)
	t.bytes -= int64(len(name))
	t.holes += int64(len(name))
	t.spans[id] = 0
	t.free = append(t.free, id)
	t.live--
	if t.holes > chunkSize && t.holes*2 > t.arenaBytes() {
		t.compact()
	}
}

// unslot empties slot i and moves the entries after it that probed past
// it back (backward-shift deletion), so that no lookup stops short.
func (t *domainTable) unslot(i int) {
	mask := len(t.slots) - 1
	j := i
	for {
		t.slots[i] = 0
		for {
			j = (j + 1) & mask
			s := t.slots[j]
			if s == 0 {
				return
			}
			home := int(uint32(s>>32)) & mask
			// The entry at j stays when its home lies cyclically in (i, j].
			if i <= j && i < home && home <= j || i > j && (i < home || home <= j) {
				continue
			}
			t.slots[i] = s
			i = j
			break
		}
	}
}

// grow doubles the index.
func (t *domainTable) grow() {
	old := t.slots
	t.slots = make([]uint64, 2*len(old))
	mask := uint32(len(t.slots) - 1)
	for _, s := range old {
		if s == 0 {
			continue
		}
		i := uint32(s>>32) & mask
		for t.slots[i] != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = s
	}
}

// compact copies the names held into new chunks once released names are
// half of the arena: amortized over the releases that made the holes, a
// constant cost each.
func (t *domainTable) compact() {
	var chunks [][]byte
	for id, r := range t.refs {
		if r > 0 {
			t.spans[id] = place(&chunks, t.name(uint32(id)))
		}
	}
	t.chunks, t.holes = chunks, 0
}
