package cluster

import (
	"time"

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
// "Current as of t" means a read-index round that started at t (this server's
// monotonic clock) came back with an index this server has applied: the
// leader's commit index when it answered, confirmed by a quorum, holds
// every write committed before t. Rounds run every B/4 in the background
// and on demand (read barriers); no clock is compared across servers.

// currentAsOf is the start time and index of a successful read-index round:
// the server is current as of at once it has applied idx.
type currentAsOf struct {
	at  time.Time
	idx uint64
}

// StaleBound is this server's B: one Raft timeout (the time after which
// Raft itself presumes the leader lost), capped at half of pool.ReuseHold
// so that Q > B holds with room for the rounds' own latency.
func (n *Node) StaleBound() time.Duration { return min(n.cfg.RaftTimeout, pool.ReuseHold/2) }

// noteRound records a successful round that started at start.
func (n *Node) noteRound(start time.Time, idx uint64) {
	f := &currentAsOf{at: start, idx: idx}
	for {
		old := n.lastRound.Load()
		if old != nil && !old.at.Before(start) {
			return
		}
		if n.lastRound.CompareAndSwap(old, f) {
			return
		}
	}
}

// LocalReadOK reports whether this server may answer from its local state:
// it was current less than B ago and has applied the round's index.
func (n *Node) LocalReadOK() bool {
	if n.cfg.LinearizableReads {
		return false
	}
	f := n.lastRound.Load()
	return f != nil && time.Since(f.at) < n.StaleBound() && !n.fsm.isDamaged() && n.appliedThrough(f.idx)
}

// keepCurrent runs a read-index round whenever the newest is older than B/4,
// so that a server in touch with the leader is always current, and one
// cut off stops being current within B.
func (n *Node) keepCurrent() {
	every := n.StaleBound() / 4
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if f := n.lastRound.Load(); f != nil && time.Since(f.at) < every {
			continue
		}
		// Its own round, not the barrier callers' shared one, and given up
		// after B: a round that outlives B cannot make this server current,
		// and on a cut-off server a shared round would hold the callers
		// behind it for a whole write timeout.
		start := time.Now()
		if idx, err := n.fetchReadIndexWithin(n.StaleBound()); err == nil {
			n.noteRound(start, idx)
		}
	}
}
