package pool

// slotIndex is an open-addressing hash table (linear probing) of slab
// indices, keyed by a field of the mapping each one points to. It stores
// 4 bytes a slot where a Go map[uint32]int32 stores 9 and more, which is most
// of the difference between ~70 and ~45 heap bytes per mapping. Its layout
// depends only on the order of inserts and deletes, never on a random seed.
type slotIndex struct {
	slots []int32 // slab index, or empty
	n     int
}

const emptySlot = -1

// keyer reads the key of a slab entry: its address or its domain.
type keyer interface {
	key(i int32) uint32
}

type byAddrKey struct{ slab []mapping }

func (k byAddrKey) key(i int32) uint32 { return k.slab[i].addr }

type byDomainKey struct{ slab []mapping }

func (k byDomainKey) key(i int32) uint32 { return k.slab[i].domain }

func (t *slotIndex) home(key uint32) int {
	// Fibonacci hashing: spreads sequential addresses across the table.
	return int((uint64(key) * 0x9E3779B97F4A7C15) >> 32 & uint64(len(t.slots)-1))
}

// find returns the slab index with this key.
func find[K keyer](t *slotIndex, key uint32, k K) (int32, bool) {
	if t.n == 0 {
		return 0, false
	}
	mask := len(t.slots) - 1
	for p := t.home(key); ; p = (p + 1) & mask {
		i := t.slots[p]
		if i == emptySlot {
			return 0, false
		}
		if k.key(i) == key {
			return i, true
		}
	}
}

// reserve sizes an empty index for n entries: the size n inserts would
// grow it to, without the copies on the way.
func (t *slotIndex) reserve(n int) {
	size := 8
	for n*4 > size*3 {
		size *= 2
	}
	t.slots = make([]int32, size)
	for p := range t.slots {
		t.slots[p] = emptySlot
	}
}

// insert adds slab index i, whose key must not be present yet.
func insert[K keyer](t *slotIndex, i int32, k K) {
	if (t.n+1)*4 > len(t.slots)*3 {
		resize(t, max(8, 2*len(t.slots)), k)
	}
	mask := len(t.slots) - 1
	p := t.home(k.key(i))
	for t.slots[p] != emptySlot {
		p = (p + 1) & mask
	}
	t.slots[p] = i
	t.n++
}

// slotOf returns the position holding slab index i, which must be present.
func slotOf[K keyer](t *slotIndex, i int32, k K) int {
	mask := len(t.slots) - 1
	p := t.home(k.key(i))
	for t.slots[p] != i {
		p = (p + 1) & mask
	}
	return p
}

// replace makes the slot holding slab index from hold to; both index the
// same key (the slab entry moved).
func replace[K keyer](t *slotIndex, from, to int32, k K) {
	t.slots[slotOf(t, from, k)] = to
}

// remove deletes slab index i, shifting later entries of its probe run back
// so no tombstones are needed.
func remove[K keyer](t *slotIndex, i int32, k K) {
	mask := len(t.slots) - 1
	hole := slotOf(t, i, k)
	for j := (hole + 1) & mask; t.slots[j] != emptySlot; j = (j + 1) & mask {
		h := t.home(k.key(t.slots[j]))
		// The entry at j may fill the hole unless its home lies cyclically
		// in (hole, j].
		if hole <= j && hole < h && h <= j || hole > j && (hole < h || h <= j) {
			continue
		}
		t.slots[hole] = t.slots[j]
		hole = j
	}
	t.slots[hole] = emptySlot
	t.n--
	if len(t.slots) > 8 && t.n*8 < len(t.slots) {
		resize(t, len(t.slots)/2, k)
	}
}

func resize[K keyer](t *slotIndex, size int, k K) {
	old := t.slots
	t.slots = make([]int32, size)
	for p := range t.slots {
		t.slots[p] = emptySlot
	}
	mask := size - 1
	for _, i := range old {
		if i == emptySlot {
			continue
		}
		p := t.home(k.key(i))
		for t.slots[p] != emptySlot {
			p = (p + 1) & mask
		}
		t.slots[p] = i
	}
}
