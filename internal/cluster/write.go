package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/pool"
)

// Writes from every caller of a server meet in one batcher. While a batch
// is in flight new ops queue; the next batch takes all that queued (up to
// MaxBatch) as one log entry, or one forwarded batch. Under load a log
// entry carries many ops and a follower's forwarding costs one frame per
// batch; with one caller a batch is one op and nothing waits.
//
// A leader keeps one entry in flight, and commits it on the batcher's own
// goroutine, so that nothing is handed off between one entry's commit and
// the next one's proposal: every entry costs each server a Raft round, an
// fsync and wake-ups, so fewer entries carrying more ops beat pipelining.
// Followers keep a few forwarded batches in flight, since the leader merges
// them into its entry anyway. The measurements behind both numbers are in
// docs/decisions.md ("Group commit").
const forwardBatchSlots = 4

type batcher struct {
	n  *Node
	in chan *proposal
	// forwardSlots bounds a follower's forwarded batches in flight.
	forwardSlots chan struct{}
}

type proposal struct {
	ops []pool.Op
	// The result goes to done, or to deliver when set (a forwarded batch
	// on the leader, answered on its stream).
	done    chan proposalResult
	deliver func(proposalResult)
}

type proposalResult struct {
	results []pool.Result
	err     error
}

func newBatcher(n *Node, forwardSlots int) *batcher {
	return &batcher{n: n, in: make(chan *proposal, 4096), forwardSlots: make(chan struct{}, forwardSlots)}
}

func (b *batcher) run(stop <-chan struct{}) {
	for {
		var slots chan struct{}
		if !b.n.IsLeader() {
			slots = b.forwardSlots
			select {
			case slots <- struct{}{}:
			case <-stop:
				return
			}
		}
		var first *proposal
		select {
		case first = <-b.in:
		case <-stop:
			return
		}
		batch, count := b.gather(first)
		switch {
		case slots == nil:
			b.send(batch, count, nil)
		case !b.forwardOnStream(batch, count, slots):
			go b.send(batch, count, slots)
		}
	}
}

// gather makes a batch of first and the ops queued behind it, up to
// MaxBatch.
func (b *batcher) gather(first *proposal) ([]*proposal, int) {
	batch := []*proposal{first}
	count := len(first.ops)
	for count < b.n.cfg.MaxBatch {
		select {
		case p := <-b.in:
			batch = append(batch, p)
			count += len(p.ops)
		default:
			return batch, count
		}
	}
	return batch, count
}

// send commits a batch, retrying across leader changes, frees its slot (if
// it holds one) and tells its callers.
func (b *batcher) send(batch []*proposal, count int, slots chan struct{}) {
	results, err := b.n.commit(joinOps(batch, count))
	if errors.As(err, new(badOps)) && len(batch) > 1 {
		// One caller's op that the log would refuse fails that caller
		// alone; the others' ops are committed without it.
		batch, count = failBadOps(batch)
		results, err = nil, nil
		if count > 0 {
			results, err = b.n.commit(joinOps(batch, count))
		}
	}
	// The next batch need not wait while these callers are told.
	if slots != nil {
		<-slots
	}
	deliver(batch, results, err)
}

// badOps is an encoding error: an op the log entry's decoder would refuse.
type badOps struct{ err error }

func (e badOps) Error() string { return e.err.Error() }
func (e badOps) Unwrap() error { return e.err }

// failBadOps tells each proposal with an op the encoder refuses why, and
// returns the others.
func failBadOps(batch []*proposal) ([]*proposal, int) {
	var keep []*proposal
	count := 0
	for _, p := range batch {
		if _, err := pool.EncodeEntry(nil, pool.Entry{Ops: p.ops}); err != nil {
			deliver([]*proposal{p}, nil, err)
			continue
		}
		keep = append(keep, p)
		count += len(p.ops)
	}
	return keep, count
}

// forwardEntry encodes ops to send to the leader, which decodes them and
// stamps its own time and bounds on the entry it appends: this server's
// time in it is never applied. It is version 3, which writes ops as 4
// does, so that a leader of any release since 0.2.0 reads it.
func (n *Node) forwardEntry(ops []pool.Op) ([]byte, error) {
	entry, err := pool.EncodeEntry(nil, pool.Entry{Version: baselineEntryVersion, Time: n.Now(), Ops: ops})
	if err != nil {
		return nil, badOps{err}
	}
	return entry, nil
}

// forwardOnStream hands a follower's batch to its live forwarding stream
// and returns at once; the stream's reader tells the callers. On the path
// most writes take this saves send's two goroutine hand-offs, each of which
// waits for a CPU under load. It reports false, leaving the batch to send,
// when this server leads or has no live stream to the leader. A batch the
// stream fails (the leader changed, the connection broke) goes to send,
// which dials and retries.
func (b *batcher) forwardOnStream(batch []*proposal, count int, slots chan struct{}) bool {
	if b.n.IsLeader() {
		return false
	}
	_, addr := b.n.Leader()
	fc := b.n.fwd.live(addr)
	if fc == nil {
		return false
	}
	entry, err := b.n.forwardEntry(joinOps(batch, count))
	if err != nil {
		return false
	}
	start := time.Now()
	fc.start(entry, b.n.cfg.WriteTimeout, func(body []byte, err error) {
		var results []pool.Result
		switch {
		case errors.Is(err, errNoAnswer):
			err = noQuorum(err)
		case err != nil:
			go b.send(batch, count, slots)
			return
		default:
			results, err = forwardResults(body, count)
			if errors.As(err, new(errRetry)) {
				go b.send(batch, count, slots)
				return
			}
		}
		b.n.cfg.Metrics.Batch(len(results), true, time.Since(start), err)
		<-slots
		deliver(batch, results, err)
	})
	return true
}

func joinOps(batch []*proposal, count int) []pool.Op {
	ops := make([]pool.Op, 0, count)
	for _, p := range batch {
		ops = append(ops, p.ops...)
	}
	return ops
}

// deliver gives each proposal its share of a batch's results. Callers
// waiting on a channel go first: a forwarded batch's answer is a write to a
// connection.
func deliver(batch []*proposal, results []pool.Result, err error) {
	shares := make([]proposalResult, len(batch))
	for i, p := range batch {
		shares[i].err = err
		if err == nil {
			shares[i].results, results = results[:len(p.ops)], results[len(p.ops):]
		}
		if p.deliver == nil {
			p.done <- shares[i]
		}
	}
	for i, p := range batch {
		if p.deliver != nil {
			p.deliver(shares[i])
		}
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

// commit gets ops committed as one entry, retrying across leader changes
// until WriteTimeout. A retried entry carries the same request IDs, so the
// state applies each op once; the leader that appends it stamps it anew.
func (n *Node) commit(ops []pool.Op) ([]pool.Result, error) {
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
			results, err = n.applyOps(ctx, ops)
		} else if _, addr := n.Leader(); addr != "" {
			forwarded = true
			var entry []byte
			if entry, err = n.forwardEntry(ops); err == nil {
				results, err = n.forward(ctx, addr, entry, len(ops))
			}
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

// applyOps appends ops as one entry on this server, which must lead. The
// entry carries this leader's stamp (its time, never below the entry
// before), its client bound and, once every server reads the version that
// carries them, its mapping quotas (entryFor); stamping and appending happen under one
// lock, so entries reach the log in the order of their times.
func (n *Node) applyOps(ctx context.Context, ops []pool.Op) ([]pool.Result, error) {
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	n.clock.stampMu.Lock()
	entry, err := pool.EncodeEntry(nil, n.entryFor(ops, n.stamp()))
	if err != nil {
		n.clock.stampMu.Unlock()
		return nil, badOps{err}
	}
	f := n.raft.Apply(entry, timeLeft(ctx, n.cfg.WriteTimeout))
	n.clock.stampMu.Unlock()
	return n.applyResult(f)
}

// applyLocal appends an entry as it is on this server, which must lead.
func (n *Node) applyLocal(ctx context.Context, entry []byte) ([]pool.Result, error) {
	return n.applyResult(n.raft.Apply(entry, timeLeft(ctx, n.cfg.WriteTimeout)))
}

func (n *Node) applyResult(f raft.ApplyFuture) ([]pool.Result, error) {
	if err := n.await(f); err != nil {
		return nil, applyError(err)
	}
	resp, ok := f.Response().(applyResponse)
	if !ok {
		return nil, fmt.Errorf("unexpected apply response %T", f.Response())
	}
	return resp.results, resp.err
}

// applyError classifies an error of raft.Apply.
func applyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrEnqueueTimeout):
		return errRetry{err}
	case errors.Is(err, raft.ErrRaftShutdown):
		return errShutdown
	case errors.Is(err, raft.ErrAbortedByRestore):
		// Not retried here: the caller wrote against the state the restore
		// replaced, and should see that and decide (clients retry a 503).
		return pool.Errorf(pool.CodeAbortedByRestore, "a snapshot restore cut this write off before it was committed; it was not applied and is safe to retry")
	}
	return err
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
	return forwardResults(body, nops)
}

// forwardResults reads the leader's answer to a batch of nops ops.
func forwardResults(body []byte, nops int) ([]pool.Result, error) {
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
