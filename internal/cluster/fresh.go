package cluster

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/pool"
)

// Bounded staleness (docs/design.md, "Consistency"). A server answers from
// its local state without asking the leader only while that state holds
// everything the leader had committed at most StaleBound (B) ago; the
// leader gives an address that stopped meaning a domain to another domain
// of the same client only pool.ReuseHold (Q) later, and Q > B. So a local
// answer may be stale by at most B, and never pairs an address with a
// domain while that address belongs to another domain of the same client.
//
// "Fresh as of t" means a read-index round that started at t (this server's
// monotonic clock) came back with an index this server has applied: the
// leader's commit index when it answered, confirmed by a quorum, holds
// every write committed before t. Rounds run every B/4 in the background
// and on demand (read barriers); no clock is compared across servers.

// freshness is the start time and index of the newest successful round.
type freshness struct {
	at  time.Time
	idx uint64
}

// StaleBound is this server's B: one Raft timeout (the time after which
// Raft itself presumes the leader lost), capped at half of pool.ReuseHold
// so that Q > B holds with room for the rounds' own latency.
func (n *Node) StaleBound() time.Duration { return min(n.cfg.RaftTimeout, pool.ReuseHold/2) }

// noteFresh records a successful round that started at start.
func (n *Node) noteFresh(start time.Time, idx uint64) {
	f := &freshness{at: start, idx: idx}
	for {
		old := n.fresh.Load()
		if old != nil && !old.at.Before(start) {
			return
		}
		if n.fresh.CompareAndSwap(old, f) {
			return
		}
	}
}

// LocalReadOK reports whether this server may answer from its local state:
// it was fresh less than B ago and has applied the round's index.
func (n *Node) LocalReadOK() bool {
	if n.cfg.LinearizableReads {
		return false
	}
	f := n.fresh.Load()
	return f != nil && time.Since(f.at) < n.StaleBound() && !n.fsm.isDamaged() && n.appliedThrough(f.idx)
}

// keepFresh runs a read-index round whenever the newest is older than B/4,
// so that a server in touch with the leader is always fresh, and one cut
// off stops being fresh within B.
func (n *Node) keepFresh() {
	every := n.StaleBound() / 4
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if f := n.fresh.Load(); f != nil && time.Since(f.at) < every {
			continue
		}
		// Its own round, not the barrier callers' shared one, and given up
		// after B: a round that outlives B cannot make this server fresh,
		// and on a cut-off server a shared round would hold the callers
		// behind it for a whole write timeout.
		start := time.Now()
		if idx, err := n.fetchReadIndexWithin(n.StaleBound()); err == nil {
			n.noteFresh(start, idx)
		}
	}
}

// holdTracker is the leader's side of the reuse hold: it lifts each hold
// pool.ReuseHold after it first saw it, by its own clock. A hold is first
// seen no earlier than the release that made it was applied here, which is
// no earlier than it was committed; a new leader sees every hold as new.
// It maps each hold to when this leader first saw it.
type holdTracker map[pool.Hold]time.Time

// liftHolds proposes an unhold for every hold seen at least pool.ReuseHold
// ago, while this server leads. It scans every pool.ReuseHold/5.
func (n *Node) liftHolds() {
	every := pool.ReuseHold / 5
	t := time.NewTicker(every)
	defer t.Stop()
	tr := holdTracker{}
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.raft.State() != raft.Leader {
			clear(tr)
			continue
		}
		ops := tr.due(n.Read, time.Now())
		for len(ops) > 0 {
			batch := ops[:min(len(ops), n.cfg.MaxBatch)]
			ops = ops[len(batch):]
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.WriteTimeout)
			_, err := n.Propose(ctx, batch)
			cancel()
			if err != nil {
				n.log.Debug("lifting reuse holds", "err", err)
				break // seen again at the next scan
			}
			tr.lifted(batch)
		}
	}
}

// due returns the unhold ops for holds seen pool.ReuseHold ago or more, and
// forgets holds that are gone.
func (tr holdTracker) due(read func(func(*pool.State)), now time.Time) []pool.Op {
	var ops []pool.Op
	present := make(map[pool.Hold]bool, len(tr))
	read(func(s *pool.State) {
		s.Holds(func(h pool.Hold) bool {
			present[h] = true
			first, ok := tr[h]
			if !ok {
				tr[h] = now
			} else if now.Sub(first) >= pool.ReuseHold {
				ops = append(ops, pool.Op{Kind: pool.OpUnhold, Time: now, Client: h.Client, Addr: h.Addr})
			}
			return true
		})
	})
	for h := range tr {
		if !present[h] {
			delete(tr, h)
		}
	}
	return ops
}

// lifted forgets the holds whose unholds were applied: if an address is
// released again before the next scan, that is a new hold with a whole Q
// ahead of it, not the old one already due.
func (tr holdTracker) lifted(unholds []pool.Op) {
	for _, op := range unholds {
		delete(tr, pool.Hold{Client: op.Client, Addr: op.Addr})
	}
}
