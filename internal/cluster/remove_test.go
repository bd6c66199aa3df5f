package cluster

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
)

// blackholeNet is a Network over loopback TCP on which a server can die the
// way a SIGKILLed tailnet node does: nothing it sends arrives, nothing
// reaches it, no connection is reset or closed, and a dial to or from it
// hangs until its deadline. Its open connections stay open and silent, as
// a WireGuard peer's do.
type blackholeNet struct {
	mu   sync.Mutex
	dead map[string]bool // by cluster address
	// gone is closed when the test ends, to let the dead servers' blocked
	// reads return so that they can be shut down.
	gone chan struct{}
}

func (b *blackholeNet) isDead(addr string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dead[addr]
}

func (b *blackholeNet) kill(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dead[addr] = true
}

// network is server self's Network.
func (b *blackholeNet) network(self string, ln net.Listener) *Network {
	return &Network{
		Name:     "blackhole test network",
		Listener: &holeListener{Listener: ln, b: b, self: self},
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			if b.isDead(self) || b.isDead(addr) {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return &holeConn{Conn: c, b: b, self: self}, nil
		},
	}
}

type holeListener struct {
	net.Listener
	b    *blackholeNet
	self string
}

func (l *holeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &holeConn{Conn: c, b: l.b, self: l.self}, nil
}

// holeConn drops what a dead server writes. Both ends of every connection
// are holeConns, so a dead server's peers read nothing from it (until their
// read deadline) and it reads nothing from them.
type holeConn struct {
	net.Conn
	b    *blackholeNet
	self string
}

// Read blocks on a dead server: it takes nothing in, so its peers' writes
// fill the connection's buffers and block, as writes to a vanished peer do.
func (c *holeConn) Read(p []byte) (int, error) {
	if c.b.isDead(c.self) {
		<-c.b.gone
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	if c.b.isDead(c.self) {
		<-c.b.gone
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *holeConn) Write(p []byte) (int, error) {
	if c.b.isDead(c.self) {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *holeConn) Close() error {
	if c.b.isDead(c.self) {
		// A killed process's connections are never closed on the wire.
		return nil
	}
	return c.Conn.Close()
}

// TestRemoveDeadLeaderThroughSurvivor is the tailnet HA test's removal in
// one process: three servers on a network where a dead server goes silent
// (no resets), writes through every server, then the leader dies and is
// removed through a survivor while writes go on. The HTTP API passes a
// context without a deadline, as here. The removal must return (the e2e
// test's DELETE, sent about a second after the kill, was never answered),
// succeed once the survivors have a leader, and leave both survivors with
// two servers and everything committed applied.
func TestRemoveDeadLeaderThroughSurvivor(t *testing.T) {
	for _, tt := range []struct {
		name string
		// soon removes through a follower right after the kill, before it
		// noticed; otherwise through the new leader after the failover.
		soon bool
	}{{"right after the kill through a follower", true}, {"after the failover through the new leader", false}} {
		t.Run(tt.name, func(t *testing.T) { removeDeadLeader(t, tt.soon) })
	}
}

func removeDeadLeader(t *testing.T, soon bool) {
	const n = 3
	lns, addrs := loopbackListeners(t, n)
	bh := &blackholeNet{dead: map[string]bool{}, gone: make(chan struct{})}
	tc := startCluster(t, n, func(i int, c *Config) {
		c.Insecure, c.Join = false, nil
		c.ClusterAddr = addrs[i]
		c.Network = bh.network(addrs[i], lns[i])
		c.Network.Peers = func() []string { return addrs }
	})
	// After startCluster's, so it runs before the servers are shut down.
	t.Cleanup(func() { close(bh.gone) })
	leader := tc.waitReady(n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, nd := range tc.nodes {
		res, err := nd.Propose(ctx, []pool.Op{allocOp(nd, fmt.Sprint("c", i), "before.example")})
		if err != nil || res[0].Err != nil {
			t.Fatalf("write through %s: %v %v", nd.ID(), err, res)
		}
		if err := nd.ReadBarrier(ctx); err != nil {
			t.Fatalf("read barrier on %s: %v", nd.ID(), err)
		}
	}
	var survivors []*Node
	for _, nd := range tc.nodes {
		if nd != leader {
			survivors = append(survivors, nd)
		}
	}

	// Writes keep coming through the survivors, as the e2e test's clients'
	// DNS and flows do.
	stopWrites := make(chan struct{})
	var writers sync.WaitGroup
	var writes atomic.Int64
	for i, nd := range survivors {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for j := 0; ; j++ {
				select {
				case <-stopWrites:
					return
				default:
				}
				wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
				if _, err := nd.Propose(wctx, []pool.Op{allocOp(nd, fmt.Sprint("w", i), fmt.Sprintf("d%d.example", j%50))}); err == nil {
					writes.Add(1)
				}
				wcancel()
			}
		}()
	}
	defer func() {
		close(stopWrites)
		writers.Wait()
	}()

	bh.kill(leader.ClusterAddr())
	via := survivors[0]
	if !soon {
		poll.Until(t, 15*time.Second, "a survivor to lead", func() bool {
			for _, nd := range survivors {
				if id, _ := nd.Leader(); nd.IsLeader() && id == nd.ID() {
					via = nd
					return true
				}
			}
			return false
		})
		before := writes.Load()
		poll.Until(t, 15*time.Second, "writes through the survivors after the failover", func() bool { return writes.Load() > before+10 })
	} else if id, _ := via.Leader(); id != leader.ID() {
		t.Logf("%s already left %s for %q: the removal will not meet the dead leader", via.ID(), leader.ID(), id)
	}
	status := func() {
		for _, nd := range survivors {
			st := nd.Local()
			t.Logf("%s: %s, leader %q, commit %d, FSM applied %d, Raft applied %d, last %d", nd.ID(), st.State, st.LeaderID, st.Commit, st.Applied, nd.raft.AppliedIndex(), st.LastIndex)
		}
	}
	done := make(chan error, 1)
	go func() { done <- via.RemoveServer(context.Background(), leader.ID()) }()
	// Twice the write timeout: the removal may wait for the survivors to
	// elect a leader, and the machine may be loaded.
	select {
	case err := <-done:
		if err != nil {
			status()
			t.Fatalf("removing %s through %s: %v", leader.ID(), via.ID(), err)
		}
	case <-time.After(2 * tc.nodes[0].cfg.WriteTimeout):
		status()
		buf := make([]byte, 1<<22)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "RemoveServer") {
				t.Logf("the removal's goroutine:\n%s", g)
			}
		}
		t.Fatalf("removing %s through %s did not return", leader.ID(), via.ID())
	}
	poll.Until(t, 15*time.Second, "both survivors to list two servers and apply everything committed", func() bool {
		for _, nd := range survivors {
			f := nd.raft.GetConfiguration()
			if f.Error() != nil || len(f.Configuration().Servers) != 2 || !nd.CaughtUp() {
				return false
			}
		}
		return true
	})
	before := writes.Load()
	poll.Until(t, 15*time.Second, "writes through the survivors after the removal", func() bool { return writes.Load() > before+10 })
}
