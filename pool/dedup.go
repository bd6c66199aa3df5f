package pool

// defaultDedupSize is how many recent request IDs the state remembers: at
// 20,000 writes a second, the last six seconds, longer than a leader
// election and the retry that follows it.
const defaultDedupSize = 1 << 17

// RequestID names one write so that a retried write is applied once. Origin
// is chosen at random by the proposing process, Seq counts up within it. The
// zero RequestID opts out of deduplication (mark-used writes are idempotent).
type RequestID struct {
	Origin, Seq uint64
}

// IsZero reports whether id is the zero RequestID.
func (id RequestID) IsZero() bool { return id == RequestID{} }

// dedupWindow remembers the results of the last size successful writes,
// evicting in apply order so every server evicts the same ones. Failed writes
// changed nothing, so a retry of one simply runs again.
type dedupWindow struct {
	results map[RequestID]dedupResult
	ring    []RequestID
	head    int // next slot to overwrite once the ring is full
	size    int
}

type dedupResult struct {
	addr    uint32
	count   uint32
	hasAddr bool
}

func (r dedupResult) result() Result {
	res := Result{Count: int(r.count)}
	if r.hasAddr {
		res.Addr = u32ToAddr(r.addr)
	}
	return res
}

func newDedupWindow(size int) dedupWindow {
	return dedupWindow{results: make(map[RequestID]dedupResult), size: size}
}

func (w *dedupWindow) lookup(id RequestID) (dedupResult, bool) {
	if id.IsZero() {
		return dedupResult{}, false
	}
	r, ok := w.results[id]
	return r, ok
}

// remember records the result of a write whose ID is not remembered yet:
// applyOp looks the ID up first, and a snapshot with a repeated ID is
// refused, so a second map probe here would only cost time.
func (w *dedupWindow) remember(id RequestID, r dedupResult) {
	if id.IsZero() {
		return
	}
	if len(w.ring) < w.size {
		w.ring = append(w.ring, id)
	} else {
		delete(w.results, w.ring[w.head])
		w.ring[w.head] = id
		w.head = (w.head + 1) % w.size
	}
	w.results[id] = r
}

// ordered returns the remembered IDs oldest first.
func (w *dedupWindow) ordered() []RequestID {
	out := make([]RequestID, 0, len(w.ring))
	out = append(out, w.ring[w.head:]...)
	return append(out, w.ring[:w.head]...)
}
