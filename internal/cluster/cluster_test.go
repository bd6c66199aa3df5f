package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/pool"
)

// freeAddr is a loopback address for a server to bind later, below the
// kernel's ephemeral range: a port probed there with ":0" can be handed to
// one of the many outgoing connections of the tests running beside this one
// before the server binds it (TestBootstrapExpectFormsOneCluster failed so
// under the race detector).
func freeAddr(t testing.TB) string {
	t.Helper()
	return testcluster.FreePort(t, "127.0.0.1")
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("IPPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type testCluster struct {
	t     testing.TB
	nodes []*Node
	cfgs  []Config
}

// startCluster starts n servers at the same instant with --bootstrap-expect n,
// in plain TCP unless mutate gives them TLS.
func startCluster(t testing.TB, n int, mutate func(i int, c *Config)) *testCluster {
	t.Helper()
	tc := &testCluster{t: t, nodes: make([]*Node, n), cfgs: make([]Config, n)}
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freeAddr(t)
	}
	root := t.TempDir()
	for i := range n {
		tc.cfgs[i] = Config{
			ID:              fmt.Sprintf("s%d", i+1),
			DataDir:         fmt.Sprintf("%s/s%d", root, i+1),
			ClusterAddr:     addrs[i],
			Join:            addrs,
			BootstrapExpect: n,
			Logger:          testLogger(t).With("server", i+1),
			RaftTimeout:     300 * time.Millisecond,
			// TLS is not what most of these tests are about; the ones it
			// is about set Config.TLS, which takes precedence.
			Insecure: true,
		}
		if mutate != nil {
			mutate(i, &tc.cfgs[i])
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tc.nodes[i], errs[i] = Start(tc.cfgs[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(tc.stopAll)
	return tc
}

func (tc *testCluster) stopAll() {
	for _, n := range tc.nodes {
		if n != nil {
			n.Shutdown()
		}
	}
}

// waitReady waits until every running server knows the same leader, the
// leader has all servers in its configuration and the pool is configured.
func (tc *testCluster) waitReady(want int) *Node {
	tc.t.Helper()
	var leader *Node
	ready := func() bool {
		leader = nil
		agree := true
		lid := ""
		for _, n := range tc.nodes {
			if n == nil {
				continue
			}
			id, _ := n.Leader()
			if id == "" || (lid != "" && id != lid) {
				agree = false
				break
			}
			lid = id
			if n.IsLeader() {
				leader = n
			}
		}
		if agree && leader != nil {
			f := leader.raft.GetConfiguration()
			_, configured := leader.PoolConfig()
			return f.Error() == nil && len(f.Configuration().Servers) == want && configured && leader.readyTerm.Load() == leader.raft.CurrentTerm()
		}
		return false
	}
	if poll.Wait(15*time.Second, ready) {
		return leader
	}
	for _, n := range tc.nodes {
		if n != nil {
			tc.t.Logf("%s: %+v", n.ID(), n.Local())
		}
	}
	tc.t.Fatal("cluster did not become ready")
	return nil
}

func allocOp(n *Node, client, domain string) pool.Op {
	return pool.Op{Kind: pool.OpAllocate, ID: n.NextRequestID(), Time: time.Now(), Client: client, Domain: domain}
}

func TestWritesThroughEveryServerAndReadYourWrites(t *testing.T) {
	tc := startCluster(t, 3, nil)
	tc.waitReady(3)
	ctx := context.Background()
	for i := range 1000 {
		writer := tc.nodes[i%3]
		reader := tc.nodes[(i+1)%3]
		client := fmt.Sprintf("c%d", i%7)
		domain := fmt.Sprintf("d%d.example", i)
		res, err := writer.Propose(ctx, []pool.Op{allocOp(writer, client, domain)})
		if err != nil || res[0].Err != nil {
			t.Fatalf("write %d through %s: %v %v", i, writer.ID(), err, res)
		}
		addr := res[0].Addr
		var found bool
		reader.Read(func(s *pool.State) { _, found = s.Lookup(client, addr) })
		if !found {
			if err := reader.ReadBarrier(ctx); err != nil {
				t.Fatalf("read barrier on %s: %v", reader.ID(), err)
			}
			var m pool.Mapping
			reader.Read(func(s *pool.State) { m, found = s.Lookup(client, addr) })
			if !found || m.Domain != domain {
				t.Fatalf("write %d: %s does not see %s -> %v after the barrier (%+v)", i, reader.ID(), domain, addr, m)
			}
		}
	}
}

func TestBootstrapExpectFormsOneCluster(t *testing.T) {
	runs := 20
	if testing.Short() {
		runs = 3
	}
	for run := range runs {
		tc := startCluster(t, 3, nil)
		leader := tc.waitReady(3)
		for _, n := range tc.nodes {
			f := n.raft.GetConfiguration()
			if err := f.Error(); err != nil {
				t.Fatal(err)
			}
			if got := len(f.Configuration().Servers); got != 3 {
				t.Fatalf("run %d: %s has %d servers in its configuration", run, n.ID(), got)
			}
			if id, _ := n.Leader(); id != leader.ID() {
				t.Fatalf("run %d: %s follows %q, not %q", run, n.ID(), id, leader.ID())
			}
		}
		tc.stopAll()
	}
}
