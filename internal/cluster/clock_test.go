package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
)

func TestMedianOffsetOutvotesAMinority(t *testing.T) {
	h := time.Hour
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{[]time.Duration{0}, 0},
		{[]time.Duration{0, -h, -h}, -h},      // this server's clock is the wrong one
		{[]time.Duration{0, h, 0}, 0},         // a peer's is
		{[]time.Duration{0, -h, h}, 0},        // one each way
		{[]time.Duration{0, 2 * h}, 0},        // two that disagree: the earlier
		{[]time.Duration{0, -h}, -h},          //
		{[]time.Duration{0, h, h, -h, 0}, 0},  // five, two wrong
		{[]time.Duration{0, 5, 3, h}, 3},      // four: the lower middle one
		{[]time.Duration{0, -h, 5 * h, 7}, 0}, //
	} {
		if got := medianOffset(append([]time.Duration(nil), tc.in...)); got != tc.want {
			t.Errorf("median of %v = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestClockIsKnownWithAMajority: a leader stamps entries only once the
// clocks it read are a majority of the voters, its own included.
func TestClockIsKnownWithAMajority(t *testing.T) {
	n := &Node{cfg: Config{ID: "a"}}
	now := time.Now()
	voters := map[raft.ServerID]bool{"a": true, "b": true, "c": true, "d": true, "e": true}
	n.clock.peers = map[raft.ServerID]clockSample{"b": {offset: time.Hour, at: now}}
	n.updateClockOffset(now, voters)
	if n.clock.known.Load() {
		t.Fatal("2 of 5 clocks are known")
	}
	n.clock.peers["c"] = clockSample{offset: time.Hour, at: now}
	n.clock.peers["x"] = clockSample{offset: time.Hour, at: now} // removed from the cluster
	n.clock.peers["d"] = clockSample{offset: time.Hour, at: now.Add(-clockSampleTTL - time.Second)}
	n.updateClockOffset(now, voters)
	if !n.clock.known.Load() {
		t.Fatal("3 of 5 clocks are not known")
	}
	if len(n.clock.peers) != 2 {
		t.Fatalf("readings kept: %v; want b and c (x left, d is stale)", n.clock.peers)
	}
	if got := time.Duration(n.clock.offset.Load()); got != time.Hour {
		t.Fatalf("offset %v; want the median of 0, 1h and 1h", got)
	}
}

// logTimes returns the time of every pool entry in n's log, in log order.
func logTimes(t *testing.T, n *Node) []time.Time {
	t.Helper()
	first, _ := n.store.FirstIndex()
	last, _ := n.store.LastIndex()
	var out []time.Time
	for i := first; i <= last && first > 0; i++ {
		var l raft.Log
		if err := n.store.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		// Versions 3 on carry one time for the whole entry, the leader's.
		if l.Type != raft.LogCommand || len(l.Data) == 0 || l.Data[0] < 3 || l.Data[0] > pool.EntryVersion {
			continue
		}
		e, err := pool.DecodeEntry(l.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Time)
	}
	return out
}

// TestSkewedClocksCannotForgetClientsEarly: two of three servers have
// clocks an hour off, one ahead, one behind, far more than the lifetime
// (10s) and reuse hold. Writes through every server, with each of them
// leading in turn, are stamped with the cluster's time, so the client
// allocated first is not forgotten, and the log's times stay close to the
// real time and never go backwards. Before entries were stamped by the
// leader, the first write through the server an hour ahead forgot every
// client on every server.
func TestSkewedClocksCannotForgetClientsEarly(t *testing.T) {
	cfg, err := pool.ParseConfig("10.0.0.0/24", "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	skew := []time.Duration{0, -time.Hour, time.Hour}
	tc := startCluster(t, 3, func(i int, c *Config) {
		c.Pool = &cfg
		c.ClockOffset = skew[i]
	})
	leader := tc.waitReady(3)
	for _, n := range tc.nodes {
		// Once it has read both others, the median is the right clock.
		poll.Until(t, 10*time.Second, n.ID()+"'s cluster time to be right", func() bool {
			d := time.Since(n.Now())
			return n.clock.known.Load() && d > -time.Second && d < time.Second
		})
	}
	ctx := context.Background()
	start := time.Now()
	res, err := leader.Propose(ctx, []pool.Op{allocOp(leader, "victim", "a.example")})
	if err != nil || res[0].Err != nil {
		t.Fatalf("allocating the victim: %v %v", err, res)
	}
	write := 0
	check := func(phase string) {
		t.Helper()
		for _, n := range tc.nodes {
			write++
			res, err := n.Propose(ctx, []pool.Op{allocOp(n, fmt.Sprintf("c%d", write), "b.example")})
			if err != nil || res[0].Err != nil {
				t.Fatalf("%s: write through %s: %v %v", phase, n.ID(), err, res)
			}
		}
		for _, n := range tc.nodes {
			if err := n.ReadBarrier(ctx); err != nil {
				t.Fatal(err)
			}
			var ok bool
			n.Read(func(s *pool.State) { _, ok = s.Get("victim", "a.example") })
			if !ok {
				t.Fatalf("%s: %s forgot the victim %v after it was allocated", phase, n.ID(), time.Since(start))
			}
		}
	}
	check("s1 leads")
	for _, target := range []int{2, 1} {
		n := tc.nodes[target]
		poll.Until(t, 10*time.Second, n.ID()+" to lead", func() bool {
			if !n.IsLeader() {
				leader := tc.nodes[0]
				for _, m := range tc.nodes {
					if m.IsLeader() {
						leader = m
					}
				}
				leader.raft.LeadershipTransferToServer(raft.ServerID(n.ID()), raft.ServerAddress(n.ClusterAddr())).Error()
			}
			return n.IsLeader()
		})
		check(fmt.Sprintf("%s (clock %v) leads", n.ID(), n.cfg.ClockOffset))
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second+pool.ReuseHold {
		t.Fatalf("the test took %v, past the victim's lifetime and hold: it shows nothing", elapsed)
	}
	for _, n := range tc.nodes {
		times := logTimes(t, n)
		if len(times) < 10 {
			t.Fatalf("%s: only %d entries of version 3 or later in the log", n.ID(), len(times))
		}
		for i, at := range times {
			if i > 0 && at.Before(times[i-1]) {
				t.Fatalf("%s: entry time went back from %v to %v", n.ID(), times[i-1], at)
			}
			if d := time.Since(at); d < -2*time.Second || d > time.Minute {
				t.Fatalf("%s: an entry is stamped %v, %v from now", n.ID(), at, d)
			}
		}
	}
}

// TestMaxClientsIsTheLeaders: the client bound travels in each entry, so a
// new client past it is refused alike whichever server takes the write,
// with quota_exceeded back through forwarding, while known clients go on.
func TestMaxClientsIsTheLeaders(t *testing.T) {
	tc := startCluster(t, 3, func(i int, c *Config) { c.MaxClients = 2 })
	tc.waitReady(3)
	ctx := context.Background()
	for i, client := range []string{"a", "b"} {
		n := tc.nodes[i]
		if res, err := n.Propose(ctx, []pool.Op{allocOp(n, client, "x.example")}); err != nil || res[0].Err != nil {
			t.Fatalf("client %s: %v %v", client, err, res)
		}
	}
	for _, n := range tc.nodes {
		res, err := n.Propose(ctx, []pool.Op{allocOp(n, "c", "x.example")})
		if err != nil || !errors.Is(res[0].Err, pool.ErrQuotaExceeded) {
			t.Fatalf("a third client through %s: %v %+v, want quota_exceeded", n.ID(), err, res)
		}
		if res, err := n.Propose(ctx, []pool.Op{allocOp(n, "a", "y.example")}); err != nil || res[0].Err != nil {
			t.Fatalf("a known client through %s: %v %v", n.ID(), err, res)
		}
	}
}

// TestBadOpFailsOnlyItsCaller: an op the log would refuse, batched with
// others, fails its own caller and not theirs.
func TestBadOpFailsOnlyItsCaller(t *testing.T) {
	n := startSolo(t, Config{ID: "solo", DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Insecure: true, Logger: testLogger(t)})
	t.Cleanup(func() { n.Shutdown() })
	good := []pool.Op{allocOp(n, "a", "x.example")}
	bad := []pool.Op{{Kind: pool.OpAllocate, ID: n.NextRequestID(), Client: "not valid", Domain: "x.example"}}
	b := &batcher{n: n}
	pg := &proposal{ops: good, done: make(chan proposalResult, 1)}
	pb := &proposal{ops: bad, done: make(chan proposalResult, 1)}
	b.send([]*proposal{pg, pb}, 2, nil)
	if r := <-pb.done; !errors.Is(r.err, pool.ErrBadCommand) {
		t.Fatalf("the bad op: %+v", r)
	}
	if r := <-pg.done; r.err != nil || r.results[0].Err != nil {
		t.Fatalf("the good op: %+v", r)
	}
}
