package cluster

import (
	"time"

	"github.com/ippool/ippool/pool"
)

// mappingsPerSnapshotEntry sets how the log entries between snapshots grow
// with the state: one per this many mappings, above --snapshot-threshold.
// Encoding a snapshot stalls applies (Raft asks the state for it between
// two batches) for about 40-80 ns a mapping, so a fixed threshold would let
// a large state spend a growing share of a busy server's time stalled: at
// 30M mappings a snapshot every 16,384 entries is a 1-2 s stall every
// 20 s or so of full write load. Growing the threshold with the state keeps
// that share near what it is at 4M mappings (docs/scale.md); the log keeps
// the entries in between on disk (117,000 at 30M, ~200 MB).
const mappingsPerSnapshotEntry = 256

// snapshotThresholdFor is the threshold for a state of mappings mappings.
func snapshotThresholdFor(configured uint64, mappings int) uint64 {
	return max(configured, uint64(mappings/mappingsPerSnapshotEntry))
}

// tuneSnapshots moves Raft's snapshot threshold with the state, checked
// every snapshot interval.
func (n *Node) tuneSnapshots() {
	tick := time.NewTicker(n.cfg.SnapshotInterval)
	defer tick.Stop()
	current := n.cfg.SnapshotThreshold
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		var mappings int
		n.fsm.read(func(s *pool.State) { _, mappings, _ = s.Counts() })
		want := snapshotThresholdFor(n.cfg.SnapshotThreshold, mappings)
		// Changed only by a quarter or more, so a state near a step does
		// not reload the configuration at every check.
		if want == current || (want > current && want-current < current/4) || (want < current && current-want < current/4) {
			continue
		}
		rc := n.raft.ReloadableConfig()
		rc.SnapshotThreshold = want
		if err := n.raft.ReloadConfig(rc); err != nil {
			n.log.Warn("could not change the snapshot threshold", "err", err)
			continue
		}
		n.log.Info("snapshot threshold follows the state", "entries", want, "mappings", mappings)
		current = want
	}
}
