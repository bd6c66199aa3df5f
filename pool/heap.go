package pool

// The heaps here are binary min-heaps over slices that tell their owner where
// each element moved, so that an element can be fixed or removed in O(log n)
// after its key changes (a mark-used, a release). container/heap would box
// every pushed value; these allocate only when the slice grows.

type heapOrder[T any] interface {
	less(a, b T) bool
	// placed records that x now sits at position pos.
	placed(x T, pos int)
}

func heapPush[T any, O heapOrder[T]](h []T, x T, o O) []T {
	h = append(h, x)
	o.placed(x, len(h)-1)
	heapUp(h, len(h)-1, o)
	return h
}

// heapRemove removes the element at position i and returns the shorter heap.
func heapRemove[T any, O heapOrder[T]](h []T, i int, o O) []T {
	last := len(h) - 1
	if i != last {
		h[i] = h[last]
		o.placed(h[i], i)
	}
	h = h[:last]
	if i < last {
		heapFix(h, i, o)
	}
	return h
}

// heapFix restores the order after the key of the element at i changed.
func heapFix[T any, O heapOrder[T]](h []T, i int, o O) {
	if !heapDown(h, i, o) {
		heapUp(h, i, o)
	}
}

func heapUp[T any, O heapOrder[T]](h []T, i int, o O) {
	for i > 0 {
		parent := (i - 1) / 2
		if !o.less(h[i], h[parent]) {
			return
		}
		h[i], h[parent] = h[parent], h[i]
		o.placed(h[i], i)
		o.placed(h[parent], parent)
		i = parent
	}
}

func heapDown[T any, O heapOrder[T]](h []T, i int, o O) bool {
	start := i
	for {
		child := 2*i + 1
		if child >= len(h) {
			break
		}
		if right := child + 1; right < len(h) && o.less(h[right], h[child]) {
			child = right
		}
		if !o.less(h[child], h[i]) {
			break
		}
		h[i], h[child] = h[child], h[i]
		o.placed(h[i], i)
		o.placed(h[child], child)
		i = child
	}
	return i > start
}

// indexOrder orders plain pool indices; nothing tracks their positions.
type indexOrder struct{}

func (indexOrder) less(a, b uint32) bool { return a < b }
func (indexOrder) placed(uint32, int)    {}

func heapPop(h []uint32) (uint32, []uint32) {
	top := h[0]
	return top, heapRemove(h, 0, indexOrder{})
}
