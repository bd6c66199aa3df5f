package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/pool"
)

// ReadBarrier returns once this server's state holds every write the leader
// had committed when ReadBarrier was called (docs/design.md#s4-read-your-writes-the-read-barrier): it asks the leader
// for its commit index, which the leader gives only after confirming with a
// quorum that it still leads, then waits until this server has applied up to
// it. No log entry is written. Concurrent callers share one round.
func (n *Node) ReadBarrier(ctx context.Context) error {
	start := time.Now()
	idx, err := n.reads.wait(ctx)
	if err == nil {
		err = n.waitApplied(ctx, idx)
	}
	n.cfg.Metrics.ReadIndex(time.Since(start), err)
	return err
}

// fetchReadIndex gets a read index from the leader, retrying across leader
// changes within the write timeout.
func (n *Node) fetchReadIndex() (uint64, error) {
	return n.fetchReadIndexWithin(n.cfg.WriteTimeout)
}

func (n *Node) fetchReadIndexWithin(timeout time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	backoff := 5 * time.Millisecond
	for {
		var idx uint64
		var err error
		if n.raft.State() == raft.Leader {
			idx, err = n.leaderReadIndex(ctx)
		} else if _, addr := n.Leader(); addr != "" {
			var out struct{ Index uint64 }
			err = n.rpc.call(ctx, addr, rpcReadIndex, []byte{}, &out)
			idx = out.Index
		} else {
			err = errNotLeader
		}
		if err == nil {
			return idx, nil
		}
		var re *rpcError
		if errors.As(err, &re) && !re.Retry {
			return 0, &pool.Error{Code: re.Code, Msg: re.Message}
		}
		select {
		case <-ctx.Done():
			return 0, noQuorum(err)
		case <-n.stop:
			return 0, errShutdown
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// leaderReadIndex is the leader's side: its commit index, valid once the
// leader has applied its own term's first entry and confirmed, after reading
// the index, that a quorum still follows it.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	for n.readyTerm.Load() != n.raft.CurrentTerm() {
		if n.raft.State() != raft.Leader {
			return 0, errNotLeader
		}
		select {
		case <-ctx.Done():
			return 0, noQuorum(ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	idx := n.raft.CommitIndex()
	if err := n.await(n.raft.VerifyLeader()); err != nil {
		return 0, errNotLeader
	}
	return idx, nil
}

// CaughtUp reports whether this server's state holds every entry it knows
// to be committed.
func (n *Node) CaughtUp() bool {
	// A server that found a damaged entry stops applying before it and is
	// about to exit; it is never caught up, whatever the indexes say.
	return !n.fsm.isDamaged() && n.appliedThrough(n.raft.CommitIndex())
}

func (n *Node) appliedThrough(idx uint64) bool {
	applied := n.fsm.applied.Load()
	if applied >= idx || n.settled.Load() >= idx {
		return true
	}
	if n.raft.AppliedIndex() < idx || !n.onlyInternalEntries(applied+1, idx) {
		return false
	}
	// Remembered, because the answer holds until the FSM moves past idx:
	// after a restart the newest entries are often the leader's no-op or
	// a barrier, and without this every local read (every DNS answer) read
	// them from the log again until the next write.
	for {
		s := n.settled.Load()
		if s >= idx || n.settled.CompareAndSwap(s, idx) {
			return true
		}
	}
}

// waitApplied waits until the FSM holds every entry up to idx. Raft's own
// applied index is not enough (it counts entries queued for the FSM), and
// the FSM never sees no-op entries, so when the FSM is behind idx the log is
// checked: entries the FSM never sees do not need waiting for.
func (n *Node) waitApplied(ctx context.Context, idx uint64) error {
	for {
		progress := n.fsm.progressCh()
		if n.appliedThrough(idx) {
			return nil
		}
		select {
		case <-progress:
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return noQuorum(ctx.Err())
		case <-n.stop:
			return errShutdown
		}
	}
}

// onlyInternalEntries reports whether the log entries from..to are all of
// kinds the FSM never receives (no-ops, barriers), or gone from the log
// because a snapshot covers them. It looks at no more than 64 entries.
func (n *Node) onlyInternalEntries(from, to uint64) bool {
	n.logScans.Add(1)
	if to-from >= 64 {
		return false
	}
	var l raft.Log
	for i := to; i >= from; i-- {
		err := n.store.GetLog(i, &l)
		if errors.Is(err, raft.ErrLogNotFound) {
			return true
		}
		if err != nil || l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return false
		}
	}
	return true
}

// readIndexer shares read-index rounds among concurrent callers. A caller
// joins the next round to start, never one already in flight, because an
// index fetched before the caller arrived may miss a write it must see.
type readIndexer struct {
	fetch func() (uint64, error)
	// done is told of every round that succeeded and when it started.
	done    func(start time.Time, idx uint64)
	mu      sync.Mutex
	next    *readRound
	running bool
}

type readRound struct {
	done chan struct{}
	idx  uint64
	err  error
}

func (r *readIndexer) wait(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &readRound{done: make(chan struct{})}
	}
	round := r.next
	if !r.running {
		r.running = true
		go r.loop()
	}
	r.mu.Unlock()
	select {
	case <-round.done:
		return round.idx, round.err
	case <-ctx.Done():
		return 0, noQuorum(ctx.Err())
	}
}

func (r *readIndexer) loop() {
	for {
		r.mu.Lock()
		round := r.next
		r.next = nil
		if round == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		start := time.Now()
		round.idx, round.err = r.fetch()
		if round.err == nil && r.done != nil {
			r.done(start, round.idx)
		}
		close(round.done)
	}
}
