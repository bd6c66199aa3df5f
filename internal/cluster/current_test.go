package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
)

// TestFollowerStopsLocalReadsWhenCutOff: a follower in touch with the leader
// may answer locally; once it can no longer reach a quorum (here the other
// two servers stop) it stops within its stale bound, and never says yes
// again while cut off.
func TestFollowerStopsLocalReadsWhenCutOff(t *testing.T) {
	tc := startCluster(t, 3, nil)
	leader := tc.waitReady(3)
	var f *Node
	for _, n := range tc.nodes {
		if n != leader {
			f = n
			break
		}
	}
	if f.StaleBound() != 300*time.Millisecond {
		t.Fatalf("stale bound %v, want the raft timeout 300ms", f.StaleBound())
	}
	poll.Until(t, 10*time.Second, "the follower to be current", f.LocalReadOK)
	poll.Until(t, 10*time.Second, "the leader to be current", leader.LocalReadOK)
	for i, n := range tc.nodes {
		if n != f {
			n.Shutdown()
			tc.nodes[i] = nil
		}
	}
	poll.Until(t, 10*time.Second, "the cut-off follower to stop local reads", func() bool { return !f.LocalReadOK() })
	// Rounds keep failing while it is cut off, and a failed round never
	// makes it current again.
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), f.StaleBound())
		err := f.ReadBarrier(ctx)
		cancel()
		if err == nil {
			t.Fatal("a read barrier succeeded on the cut-off follower")
		}
		if f.LocalReadOK() {
			t.Fatal("the cut-off follower answers locally again")
		}
	}
	if st := f.Local(); st.LocalReads || st.StaleBound != "300ms" || st.ReuseHold != pool.ReuseHold.String() {
		t.Fatalf("status says local_reads=%v stale_bound=%s reuse_hold=%s", st.LocalReads, st.StaleBound, st.ReuseHold)
	}
}

// TestLeaderLiftsReuseHolds: a released address is held from its client,
// then the leader lifts the hold about pool.ReuseHold later, on every
// server, and the address is the client's lowest free one again.
func TestLeaderLiftsReuseHolds(t *testing.T) {
	tc := startCluster(t, 3, nil)
	leader := tc.waitReady(3)
	ctx := context.Background()
	res, err := leader.Propose(ctx, []pool.Op{allocOp(leader, "c", "a.example")})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	a := res[0].Addr
	released := time.Now()
	res, err = leader.Propose(ctx, []pool.Op{{Kind: pool.OpRelease, ID: leader.NextRequestID(), Time: time.Now(), Client: "c", Domain: "a.example"}})
	if err != nil || res[0].Count != 1 {
		t.Fatal(err, res)
	}
	held := func(n *Node) (h int) {
		n.Read(func(s *pool.State) { h = s.HeldCount() })
		return h
	}
	for _, n := range tc.nodes {
		poll.Until(t, 10*time.Second, n.ID()+" to apply the hold", func() bool { return held(n) == 1 })
	}
	poll.Until(t, 4*pool.ReuseHold, "the hold to be lifted everywhere", func() bool {
		for _, n := range tc.nodes {
			if held(n) != 0 {
				return false
			}
		}
		return true
	})
	// The leader's own clock is the one that must have seen Q pass.
	if took := time.Since(released); took < pool.ReuseHold {
		t.Fatalf("hold lifted after %v, before pool.ReuseHold (%v)", took, pool.ReuseHold)
	}
	res, err = leader.Propose(ctx, []pool.Op{allocOp(leader, "c", "b.example")})
	if err != nil || res[0].Addr != a {
		t.Fatalf("after the hold b.example got %v (%v), want the lowest free %v", res[0].Addr, err, a)
	}
}

// A write that a snapshot restore cuts off is reported as retryable
// (503 aborted_by_restore over HTTP), not as an internal error.
func TestApplyErrorOfARestoreIsRetryable(t *testing.T) {
	err := applyError(raft.ErrAbortedByRestore)
	if !errors.Is(err, pool.ErrAbortedByRestore) || errors.As(err, new(errRetry)) {
		t.Fatalf("applyError(ErrAbortedByRestore) = %v (%T), want aborted_by_restore, not retried inside", err, err)
	}
}

// TestWritesDuringRestoresFailOnlyRetryably runs writes on a real server
// while it restores snapshots: every write either succeeds or fails with a
// code that says to retry, never internal.
func TestWritesDuringRestoresFailOnlyRetryably(t *testing.T) {
	tc := startCluster(t, 1, func(_ int, c *Config) { c.Join, c.BootstrapExpect = nil, 0 })
	leader := tc.waitReady(1)
	ctx := context.Background()
	var backup bytes.Buffer
	leader.Read(func(s *pool.State) {
		if err := s.WriteSnapshot(&backup); err != nil {
			t.Fatal(err)
		}
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var aborted atomic.Int64
	errs := make(chan error, 64)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := leader.Propose(ctx, []pool.Op{allocOp(leader, fmt.Sprintf("w%d", w), fmt.Sprintf("d%d.example", i))})
				if err == nil {
					err = res[0].Err
				}
				switch {
				case err == nil, errors.Is(err, pool.ErrPoolExhausted):
				case errors.Is(err, pool.ErrAbortedByRestore):
					aborted.Add(1)
				default:
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for range 20 {
		if err := leader.Restore(ctx, bytes.NewReader(backup.Bytes()), int64(backup.Len())); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a write during a restore failed with %q (%v), want success or aborted_by_restore", pool.CodeOf(err), err)
	}
	t.Logf("%d writes were cut off by the 20 restores", aborted.Load())
}

// With LinearizableReads a server never answers locally, however current.
func TestLinearizableReadsNeverAnswerLocally(t *testing.T) {
	tc := startCluster(t, 1, func(_ int, c *Config) { c.Join, c.BootstrapExpect, c.LinearizableReads = nil, 0, true })
	n := tc.waitReady(1)
	if err := n.ReadBarrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The round just succeeded and was recorded, so only the setting can
	// refuse local answers now.
	if f := n.lastRound.Load(); f == nil || !n.appliedThrough(f.idx) {
		t.Fatal("the read barrier's round was not recorded")
	}
	if n.LocalReadOK() {
		t.Fatal("a server with LinearizableReads says it may answer locally")
	}
}

// A hold lifted and then made again (the address allocated and released
// once more) before the next scan gets a whole Q of its own.
func TestHoldMadeAgainAfterItsLiftWaitsAWholeQ(t *testing.T) {
	s := pool.NewState()
	cfg, _ := pool.ParseConfig("10.0.0.0/30", "", time.Hour)
	t0 := time.Now()
	s.SetConfig(cfg, t0)
	read := func(fn func(*pool.State)) { fn(s) }
	apply := func(ops ...pool.Op) []pool.Result { return s.ApplyOps(ops) }
	apply(pool.Op{Kind: pool.OpAllocate, Time: t0, Client: "c", Domain: "a.example"},
		pool.Op{Kind: pool.OpRelease, Time: t0, Client: "c", Domain: "a.example"})

	tr := holdTracker{}
	if ops := tr.due(read, t0); len(ops) != 0 {
		t.Fatalf("a hold just seen is due: %v", ops)
	}
	ops := tr.due(read, t0.Add(pool.ReuseHold))
	if len(ops) != 1 {
		t.Fatalf("%d unholds due after Q, want 1", len(ops))
	}
	apply(ops...)
	tr.lifted(ops)
	// The same address is allocated and released again at once.
	at := t0.Add(pool.ReuseHold)
	if r := apply(pool.Op{Kind: pool.OpAllocate, Time: at, Client: "c", Domain: "b.example"},
		pool.Op{Kind: pool.OpRelease, Time: at, Client: "c", Domain: "b.example"}); r[0].Addr != ops[0].Addr || r[1].Count != 1 {
		t.Fatalf("re-allocation and release: %+v", r)
	}
	if again := tr.due(read, at.Add(time.Millisecond)); len(again) != 0 {
		t.Fatalf("the new hold was lifted at once: %v", again)
	}
	if again := tr.due(read, at.Add(pool.ReuseHold+time.Millisecond)); len(again) != 1 {
		t.Fatalf("%d unholds due a Q after the new hold was seen, want 1", len(again))
	}
}

// TestLocalReadsAfterRestartDoNotReadTheLog: after a restart the newest
// entries are ones the FSM never sees (the new leader's no-op), so the FSM's
// applied index stays below the commit index until the next write. Checking
// that the gap is internal reads the log; it must be done once, not on every
// local read (it made every DNS answer of a restarted server read the log
// from disk, at a sixth of the speed).
func TestLocalReadsAfterRestartDoNotReadTheLog(t *testing.T) {
	tc := startCluster(t, 1, func(_ int, c *Config) { c.Join, c.BootstrapExpect = nil, 0 })
	n := tc.waitReady(1)
	if _, err := n.Propose(context.Background(), []pool.Op{allocOp(n, "c", "a.example")}); err != nil {
		t.Fatal(err)
	}
	n.Shutdown()
	n, err := Start(tc.cfgs[0])
	if err != nil {
		t.Fatal(err)
	}
	tc.nodes[0] = n
	tc.waitReady(1)
	poll.Until(t, 10*time.Second, "the restarted server to answer locally", n.LocalReadOK)
	if a, c := n.fsm.applied.Load(), n.raft.CommitIndex(); a >= c {
		t.Fatalf("FSM applied %d, commit %d: the restart left no internal entry after the last command, so this test checks nothing", a, c)
	}
	before := n.logScans.Load()
	for range 1000 {
		if !n.LocalReadOK() {
			t.Fatal("a current server stopped answering locally")
		}
	}
	if scans := n.logScans.Load() - before; scans > 1 {
		t.Fatalf("1000 local reads read the log %d times, want at most once", scans)
	}
}
