package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/pool"
)

// Writes from every caller of a server meet in one batcher. While all its
// slots have a batch in flight, new ops queue; the next free slot takes all
// that queued (up to MaxBatch) as one log entry, or one forwarded batch.
// Under load a log entry carries many ops and a follower's forwarding costs
// one frame per batch; with one caller a batch is one op and nothing waits.
//
// A leader keeps one entry in flight: on the 2-core machine of the README's
// benchmarks, 64 callers made 11.4-11.9k allocations/s with 1 slot against
// 8.5-10.1k with 4 and 7.7k with 8, because every entry costs each server a
// Raft round, an fsync and wake-ups, and fewer entries carry more ops.
// Followers keep a few forwarded batches in flight (4: 12.9-14.9k/s, 1:
// 11.4-12.6k/s, 16: 11.4-13.0k/s), since the leader merges them into its
// entry anyway and a forwarded batch need not wait for the previous one.
const (
	leaderBatchSlots  = 1
	forwardBatchSlots = 4
)

type batcher struct {
	n  *Node
	in chan *proposal
	// Slots for batches in flight: a leader's own log entries, and a
	// follower's forwarded batches.
	leaderSlots, forwardSlots chan struct{}
}

type proposal struct {
	ops  []pool.Op
	done chan proposalResult
}

type proposalResult struct {
	results []pool.Result
	err     error
}

func newBatcher(n *Node, leaderSlots, forwardSlots int) *batcher {
	return &batcher{n: n, in: make(chan *proposal, 4096), leaderSlots: make(chan struct{}, leaderSlots), forwardSlots: make(chan struct{}, forwardSlots)}
}

func (b *batcher) run(stop <-chan struct{}) {
	for {
		slots := b.forwardSlots
		if b.n.IsLeader() {
			slots = b.leaderSlots
		}
		select {
		case slots <- struct{}{}:
		case <-stop:
			return
		}
		var batch []*proposal
		select {
		case p := <-b.in:
			batch = append(batch, p)
		case <-stop:
			return
		}
		count := len(batch[0].ops)
	drain:
		for count < b.n.cfg.MaxBatch {
			select {
			case p := <-b.in:
				batch = append(batch, p)
				count += len(p.ops)
			default:
				break drain
			}
		}
		go func() {
			b.send(batch, count)
			<-slots
		}()
	}
}

func (b *batcher) send(batch []*proposal, count int) {
	ops := make([]pool.Op, 0, count)
	for _, p := range batch {
		ops = append(ops, p.ops...)
	}
	entry, err := pool.EncodeCommand(nil, ops)
	var results []pool.Result
	if err == nil {
		results, err = b.n.commit(entry, count)
	}
	for _, p := range batch {
		if err != nil {
			p.done <- proposalResult{err: err}
			continue
		}
		p.done <- proposalResult{results: results[:len(p.ops)]}
		results = results[len(p.ops):]
	}
}

// Propose commits ops through the Raft log, on this server if it leads or
// through the leader otherwise, and returns one result per op. An error
// means the ops may or may not have been applied; their request IDs make a
// retry safe.
func (n *Node) Propose(ctx context.Context, ops []pool.Op) ([]pool.Result, error) {
	p := &proposal{ops: ops, done: make(chan proposalResult, 1)}
	select {
	case n.batcher.in <- p:
	case <-ctx.Done():
		return nil, noQuorum(ctx.Err())
	case <-n.stop:
		return nil, errShutdown
	}
	select {
	case r := <-p.done:
		return r.results, r.err
	case <-ctx.Done():
		return nil, noQuorum(ctx.Err())
	}
}

var errShutdown = pool.Errorf(pool.CodeNoLeader, "this server is shutting down")

func noQuorum(cause error) error {
	return pool.Errorf(pool.CodeNoQuorum, "the write was not committed in time: no quorum of servers answered (%v)", cause)
}

// commit gets one entry committed, retrying across leader changes until
// WriteTimeout. A retried entry carries the same request IDs, so the state
// applies each op once.
func (n *Node) commit(entry []byte, nops int) ([]pool.Result, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.WriteTimeout)
	defer cancel()
	backoff := 5 * time.Millisecond
	var lastErr error
	for {
		var results []pool.Result
		var err error
		forwarded := false
		if n.raft.State() == raft.Leader {
			results, err = n.applyLocal(ctx, entry)
		} else if _, addr := n.Leader(); addr != "" {
			forwarded = true
			results, err = n.forward(ctx, addr, entry, nops)
		} else {
			err = errRetry{pool.Errorf(pool.CodeNoLeader, "no leader is known")}
		}
		if err == nil {
			n.cfg.Metrics.Batch(len(results), forwarded, time.Since(start), nil)
			return results, nil
		}
		var retry errRetry
		if !errors.As(err, &retry) {
			n.cfg.Metrics.Batch(0, forwarded, time.Since(start), err)
			return nil, err
		}
		lastErr = retry.err
		select {
		case <-ctx.Done():
			n.cfg.Metrics.Batch(0, forwarded, time.Since(start), ctx.Err())
			return nil, noQuorum(lastErr)
		case <-n.stop:
			return nil, errShutdown
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// errRetry marks an error after which another attempt may succeed.
type errRetry struct{ err error }

func (e errRetry) Error() string { return e.err.Error() }
func (e errRetry) Unwrap() error { return e.err }

// applyLocal appends the entry on this server, which must lead.
func (n *Node) applyLocal(ctx context.Context, entry []byte) ([]pool.Result, error) {
	f := n.raft.Apply(entry, timeLeft(ctx, n.cfg.WriteTimeout))
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, errRetry{err}
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, errShutdown
		}
		return nil, err
	}
	resp, ok := f.Response().(applyResponse)
	if !ok {
		return nil, fmt.Errorf("unexpected apply response %T", f.Response())
	}
	return resp.results, resp.err
}

// forward sends the entry to the leader over this server's forwarding
// stream.
func (n *Node) forward(ctx context.Context, addr string, entry []byte, nops int) ([]pool.Result, error) {
	fc, err := n.fwd.get(addr, timeLeft(ctx, 2*time.Second))
	if err != nil {
		// The leader is unreachable, or this server is stopping.
		if errors.Is(err, errShutdown) {
			return nil, err
		}
		return nil, errRetry{err}
	}
	body, err := fc.call(ctx, entry)
	if err != nil {
		// The leader went away mid-request, or the time ran out (which
		// commit reports).
		return nil, errRetry{err}
	}
	results, err := decodeForwardAnswer(body, nops)
	var re *rpcError
	switch {
	case err == nil:
		return results, nil
	case errors.As(err, &re) && re.Retry:
		return nil, errRetry{re}
	case errors.As(err, &re):
		return nil, &pool.Error{Code: re.Code, Msg: re.Message}
	}
	return nil, err
}
