package pool

import (
	"math"
	"net/netip"
)

// Result is the outcome of one applied Op.
type Result struct {
	// Addr is the allocated address (OpAllocate).
	Addr netip.Addr
	// Count is what the op changed: mappings released; 1 when a mark or a
	// release took effect; 1 when an allocation made a new mapping and 0
	// when it returned the client's existing one.
	Count int
	// Reused is set when an allocation took an expired mapping's address.
	Reused bool
	Err    error
}

// Apply decodes a log entry and applies it (ApplyEntry). An entry that does
// not decode changes nothing and returns an error (S10).
func (s *State) Apply(entry []byte) ([]Result, error) {
	e, err := DecodeEntry(entry)
	if err != nil {
		return nil, err
	}
	return s.ApplyEntry(e), nil
}

// ApplyEntry applies a decoded entry's ops in order, each at its time and
// under the entry's client bound and quotas, and returns one Result per op.
func (s *State) ApplyEntry(e Entry) []Result {
	s.forgetBound = forgetBoundFor(e.Version)
	defer func() { s.forgetBound = 0 }()
	results := make([]Result, len(e.Ops))
	for i := range e.Ops {
		results[i] = s.applyOp(&e.Ops[i], e.MaxClients, e.Quotas)
	}
	return results
}

// ApplyOps applies ops with no client bound; see ApplyEntry. A retried op
// whose request ID already succeeded returns the remembered result and
// changes nothing.
func (s *State) ApplyOps(ops []Op) []Result {
	return s.ApplyEntry(Entry{Ops: ops})
}

func (s *State) applyOp(op *Op, maxClients int, q Quotas) Result {
	if r, ok := s.dedup.lookup(op.ID); ok {
		return r.result()
	}
	now := op.Time.UnixNano()
	var res Result
	switch op.Kind {
	case OpAllocate:
		a, how, err := s.allocate(op.Client, op.Domain, now, maxClients, q)
		if err != nil {
			return Result{Err: err}
		}
		count := min(how, 1)
		s.dedup.remember(op.ID, dedupResult{addr: a, count: uint32(count), hasAddr: true})
		return Result{Addr: u32ToAddr(a), Count: count, Reused: how == allocReused}
	case OpMarkUsed:
		if s.markUsed(op.Client, addrToU32(op.Addr), op.Domain, now) {
			res.Count = 1
		}
	case OpRelease:
		if s.release(op.Client, op.Domain, now) {
			res.Count = 1
		}
	case OpReleaseClient:
		res.Count = s.releaseClient(op.Client, now)
	case OpUnhold:
		if s.unhold(op.Client, addrToU32(op.Addr), now) {
			res.Count = 1
		}
	case OpSetConfig:
		n, err := s.SetConfig(op.Config, op.Time)
		if err != nil {
			return Result{Err: err}
		}
		res.Count = n
	default:
		return Result{Err: errorf(CodeBadCommand, "unknown op kind %d", op.Kind)}
	}
	s.dedup.remember(op.ID, dedupResult{count: uint32(min(res.Count, math.MaxUint32))})
	return res
}
