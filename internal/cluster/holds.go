package cluster

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/pool"
)

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
