package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/ca"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
)

func tlsFiles(t *testing.T, dir string, i int) ca.Files {
	return ca.ServerFiles(filepath.Join(dir, fmt.Sprintf("server-%d", i)))
}

func TestMutualTLSRefusesAnotherCA(t *testing.T) {
	good, bad := t.TempDir(), t.TempDir()
	if _, err := ca.Init(good, 3, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Init(bad, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	tc := startCluster(t, 2, func(i int, c *Config) {
		conf, err := tlsFiles(t, good, i+1).Load()
		if err != nil {
			t.Fatal(err)
		}
		c.TLS = conf
	})
	leader := tc.waitReady(2)
	res, err := leader.Propose(context.Background(), []pool.Op{allocOp(leader, "c", "a.example")})
	if err != nil || res[0].Err != nil {
		t.Fatalf("write over TLS: %v %v", err, res)
	}

	// An intruder with a certificate from another CA tries to join.
	conf, err := tlsFiles(t, bad, 1).Load()
	if err != nil {
		t.Fatal(err)
	}
	intruder, err := Start(Config{ID: "intruder", DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Join: []string{tc.cfgs[0].ClusterAddr}, TLS: conf, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Shutdown()
	// It can neither reach the RPC port nor get itself added.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var inf Info
	if err := intruder.rpc.call(ctx, tc.cfgs[0].ClusterAddr, rpcInfo, nil, &inf); err == nil {
		t.Fatal("a server with another CA's certificate got an answer from the cluster")
	}
	// One join round, run here rather than waited for: it must fail and
	// leave the membership as it was.
	self := raft.Server{ID: "intruder", Address: raft.ServerAddress(intruder.ClusterAddr()), Suffrage: raft.Voter}
	if done, err := intruder.tryJoin(self); done || err == nil {
		t.Fatalf("the intruder's join round: done=%v err=%v", done, err)
	}
	f := leader.raft.GetConfiguration()
	if err := f.Error(); err != nil || len(f.Configuration().Servers) != 2 {
		t.Fatalf("the cluster now has %d servers (%v)", len(f.Configuration().Servers), err)
	}
}

func TestNoQuorumFailsFastAndReadsStillAnswer(t *testing.T) {
	tc := startCluster(t, 3, func(i int, c *Config) { c.WriteTimeout = time.Second })
	leader := tc.waitReady(3)
	res, err := leader.Propose(context.Background(), []pool.Op{allocOp(leader, "c", "kept.example")})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	addr := res[0].Addr
	// Keep one follower, caught up; stop the other two servers.
	var survivor *Node
	for i, n := range tc.nodes {
		if survivor == nil && n != leader {
			survivor = n
			if err := n.ReadBarrier(context.Background()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		n.Shutdown()
		tc.nodes[i] = nil
	}
	start := time.Now()
	_, err = survivor.Propose(context.Background(), []pool.Op{allocOp(survivor, "c", "new.example")})
	took := time.Since(start)
	if !errors.Is(err, pool.ErrNoQuorum) {
		t.Fatalf("write without quorum: %v, want no_quorum", err)
	}
	// Bounded by the write timeout, with slack for a loaded machine.
	if took > 10*time.Second {
		t.Fatalf("write without quorum took %v", took)
	}
	var m pool.Mapping
	var ok bool
	survivor.Read(func(s *pool.State) { m, ok = s.Lookup("c", addr) })
	if !ok || m.Domain != "kept.example" {
		t.Fatalf("local read without quorum: %+v %v", m, ok)
	}
}

func TestFullClusterRestartKeepsMappings(t *testing.T) {
	tc := startCluster(t, 3, func(i int, c *Config) {
		c.SnapshotThreshold = 50
		c.TrailingLogs = 10
		c.SnapshotInterval = 100 * time.Millisecond
	})
	tc.waitReady(3)
	want := map[string]string{}
	for i := range 300 {
		n := tc.nodes[i%3]
		d := fmt.Sprintf("d%d.example", i)
		res, err := n.Propose(context.Background(), []pool.Op{allocOp(n, "c", d)})
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res)
		}
		want[d] = res[0].Addr.String()
	}
	// Let every server compact its log, so the restart goes through a
	// snapshot plus a log tail.
	for _, n := range tc.nodes {
		poll.Until(t, 10*time.Second, n.ID()+" to take a snapshot", func() bool {
			snaps, _ := n.snaps.List()
			return len(snaps) > 0
		})
	}
	tc.stopAll()
	for i := range tc.nodes {
		n, err := Start(tc.cfgs[i])
		if err != nil {
			t.Fatal(err)
		}
		tc.nodes[i] = n
	}
	tc.waitReady(3)
	for _, n := range tc.nodes {
		if err := n.ReadBarrier(context.Background()); err != nil {
			t.Fatal(err)
		}
		n.Read(func(s *pool.State) {
			for d, a := range want {
				if m, ok := s.Get("c", d); !ok || m.Addr.String() != a {
					t.Fatalf("%s after restart: %s -> %+v, want %s", n.ID(), d, m, a)
				}
			}
		})
	}
}

func TestRestartWithDifferentPoolIsRefused(t *testing.T) {
	p, _ := pool.ParseConfig("10.0.0.0/24", "", time.Hour)
	dir := t.TempDir()
	cfg := Config{ID: "solo", DataDir: dir, ClusterAddr: freeAddr(t), Pool: &p, Logger: testLogger(t)}
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "the pool to be configured", func() bool {
		_, ok := n.PoolConfig()
		return ok
	})
	n.Shutdown()
	other, _ := pool.ParseConfig("10.9.0.0/24", "", time.Hour)
	cfg.Pool = &other
	_, err = Start(cfg)
	if err == nil || !strings.Contains(err.Error(), "10.0.0.0/24") || !strings.Contains(err.Error(), "10.9.0.0/24") {
		t.Fatalf("restart with another pool: %v; want an error naming both pools", err)
	}
}

func TestDataDirInUseIsRefused(t *testing.T) {
	dir := t.TempDir()
	n, err := Start(Config{ID: "one", DataDir: dir, ClusterAddr: freeAddr(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	_, err = Start(Config{ID: "one", DataDir: dir, ClusterAddr: freeAddr(t), Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "in use by another ippool process") {
		t.Fatalf("second server on the same data dir: %v", err)
	}
}

// TestJoinRunningClusterAndRemove adds a fourth server with --join alone; it
// must become a voter, catch up, and leave again when removed.
func TestJoinRunningClusterAndRemove(t *testing.T) {
	tc := startCluster(t, 3, nil)
	leader := tc.waitReady(3)
	ctx := context.Background()
	res, err := leader.Propose(ctx, []pool.Op{allocOp(leader, "c", "before-join.example")})
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	// Join through a follower: it finds the leader and asks it.
	var via string
	for i, n := range tc.nodes {
		if n != leader {
			via = tc.cfgs[i].ClusterAddr
			break
		}
	}
	cfg := Config{ID: "s4", DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Join: []string{via}, Insecure: true, Logger: testLogger(t), RaftTimeout: 300 * time.Millisecond}
	joiner, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.nodes, tc.cfgs = append(tc.nodes, joiner), append(tc.cfgs, cfg)
	tc.waitReady(4)
	if err := joiner.ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	var ok bool
	joiner.Read(func(s *pool.State) { _, ok = s.Get("c", "before-join.example") })
	if !ok {
		t.Fatal("the joined server did not catch up")
	}
	// Remove it through a server that is not the leader.
	if err := tc.nodes[(indexOfNode(tc.nodes, leader)+1)%3].RemoveServer(ctx, "s4"); err != nil {
		t.Fatal(err)
	}
	f := leader.raft.GetConfiguration()
	if err := f.Error(); err != nil || len(f.Configuration().Servers) != 3 {
		t.Fatalf("after removal the configuration has %d servers (%v)", len(f.Configuration().Servers), err)
	}
	if err := leader.RemoveServer(ctx, "nobody"); !errors.Is(err, pool.ErrNotFound) {
		t.Fatalf("removing an unknown server: %v", err)
	}
}

func indexOfNode(nodes []*Node, n *Node) int {
	for i, m := range nodes {
		if m == n {
			return i
		}
	}
	return -1
}

// TestUndecodableEntryIsRefusedOnEveryServer commits an entry every server
// refuses straight into the Raft log, past the forwarding checks: a
// checksummed entry of a known version whose domain is not in normal form.
// Every server must answer it with an error and go on applying what follows
// (S10). (An entry of an unknown version stops a server instead:
// TestFutureEntryStopsTheServerAndItsRestart.)
func TestUndecodableEntryIsRefusedOnEveryServer(t *testing.T) {
	tc := startCluster(t, 3, nil)
	leader := tc.waitReady(3)
	good, err := pool.EncodeEntry(nil, pool.Entry{Time: leader.Now(), Ops: []pool.Op{{Kind: pool.OpAllocate, Client: "c", Domain: "poison.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Replace(good[:len(good)-4], []byte("poison"), []byte("POISON"), 1)
	poison := binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	f := leader.raft.Apply(poison, time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	resp, ok := f.Response().(applyResponse)
	if !ok || !errors.Is(resp.err, pool.ErrBadCommand) {
		t.Fatalf("garbage entry answered %#v", f.Response())
	}
	ctx := context.Background()
	res, err := leader.Propose(ctx, []pool.Op{allocOp(leader, "c", "after-garbage.example")})
	if err != nil || res[0].Err != nil {
		t.Fatalf("write after the garbage entry: %v %v", err, res)
	}
	for _, n := range tc.nodes {
		if err := n.ReadBarrier(ctx); err != nil {
			t.Fatalf("%s: %v", n.ID(), err)
		}
		var ok bool
		n.Read(func(s *pool.State) { _, ok = s.Get("c", "after-garbage.example") })
		if !ok {
			t.Fatalf("%s stopped applying after the garbage entry", n.ID())
		}
	}
}

// TestDamagedEntryStopsOnlyThatServer: a byte of an older, fsynced log entry
// decays on one follower's disk (raft-wal checks only its last batch). On
// restart that follower finds the entry's checksum wrong, stops applying
// before it and reports a fatal error, instead of applying something the
// others did not; the others go on.
func TestDamagedEntryStopsOnlyThatServer(t *testing.T) {
	tc := startCluster(t, 3, nil)
	defer tc.stopAll()
	leader := tc.waitReady(3)
	ctx := context.Background()
	write := func(domain string) {
		t.Helper()
		res, err := leader.Propose(ctx, []pool.Op{allocOp(leader, "c", domain)})
		if err != nil || res[0].Err != nil {
			t.Fatalf("writing %s: %v %v", domain, err, res)
		}
	}
	write("damage-me.example")
	for i := range 20 { // later batches, so the damaged one is not the last
		write(fmt.Sprintf("after%d.example", i))
	}
	fi := 0
	for i, n := range tc.nodes {
		if n != leader {
			fi = i
		}
	}
	follower := tc.nodes[fi]
	if err := follower.ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	follower.Shutdown()
	tc.nodes[fi] = nil

	segs, _ := filepath.Glob(filepath.Join(tc.cfgs[fi].DataDir, "raft", "*.wal"))
	damaged := 0
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if at := bytes.Index(b, []byte("damage-me.example")); at >= 0 {
			b[at] = 'D' // an upper-case letter would not even be a valid domain
			if err := os.WriteFile(seg, b, 0o600); err != nil {
				t.Fatal(err)
			}
			damaged++
		}
	}
	if damaged != 1 {
		t.Fatalf("found the entry in %d WAL segments, want 1", damaged)
	}

	restarted, err := Start(tc.cfgs[fi])
	if err != nil {
		t.Fatal(err)
	}
	tc.nodes[fi] = restarted
	select {
	case err := <-restarted.Fatal():
		if !strings.Contains(err.Error(), "damaged") {
			t.Fatalf("fatal error does not say the entry is damaged: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the server with the damaged entry kept running")
	}
	if restarted.CaughtUp() {
		t.Error("the server that stopped applying at a damaged entry says it is caught up (/readyz would be 200)")
	}
	restarted.Read(func(s *pool.State) {
		if _, ok := s.Get("c", "after19.example"); ok {
			t.Error("the damaged server applied entries after the damaged one")
		}
	})
	if _, err := restarted.fsm.Snapshot(); err == nil {
		t.Error("the damaged server would snapshot a state that lacks the damaged entry")
	}
	// The two intact servers still make a quorum.
	write("after-damage.example")

	// What the error says to do: move the data dir away, start again with
	// the same ID; the server copies the state from the others.
	restarted.Shutdown()
	tc.nodes[fi] = nil
	if err := os.Rename(tc.cfgs[fi].DataDir, tc.cfgs[fi].DataDir+".damaged"); err != nil {
		t.Fatal(err)
	}
	rebuilt, err := Start(tc.cfgs[fi])
	if err != nil {
		t.Fatal(err)
	}
	tc.nodes[fi] = rebuilt
	poll.Until(t, 15*time.Second, "the wiped server to catch up", func() bool {
		if rebuilt.ReadBarrier(ctx) != nil {
			return false
		}
		var ok bool
		rebuilt.Read(func(s *pool.State) {
			_, ok1 := s.Get("c", "damage-me.example")
			_, ok2 := s.Get("c", "after-damage.example")
			ok = ok1 && ok2
		})
		return ok
	})
}
