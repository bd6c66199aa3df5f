// Package fakenode is a cluster server in memory for unit tests of the
// layers above the cluster (service, httpapi): writes apply at once to one
// pool.State, and the test sets whether the server is current and whether a
// read barrier succeeds. Tests of the wiring to Raft use a real node.
package fakenode

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/policy"
	snapshotpkg "github.com/ippool/ippool/internal/snapshot"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// Node is a service.Node in memory. The fields say what the test set or
// saw: Current for LocalReadOK, BarrierErr for ReadBarrier's answer, Refuse
// for QuotaRefusal's, and the number of barriers and proposals made.
type Node struct {
	mu    sync.RWMutex
	state *pool.State
	acl   *acl.State
	// policy and its revisions: a counter, as the log index is for the
	// real node.
	policy    *policy.Stored
	revisions uint64

	Current    atomic.Bool
	BarrierErr atomic.Pointer[error]
	Refuse     func(client, domain string) error
	Barriers   atomic.Int64
	Proposals  atomic.Int64
	seq        atomic.Uint64
}

// New is a new server whose state has the pool poolText.
func New(t testing.TB, poolText string, lifetime time.Duration) *Node {
	t.Helper()
	cfg, err := pool.ParseConfig(poolText, "", lifetime)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{state: pool.NewState()}
	if _, err := n.state.SetConfig(cfg, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	n.Current.Store(true)
	return n
}

func (n *Node) Read(fn func(*pool.State)) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	fn(n.state)
}

func (n *Node) ReadBarrier(ctx context.Context) error {
	n.Barriers.Add(1)
	if err := n.BarrierErr.Load(); err != nil {
		return *err
	}
	return nil
}

func (n *Node) LocalReadOK() bool { return n.Current.Load() }

// QuotaRefusal answers what Refuse says, if the test set it (before
// using the node), else nil: the fake stamps no bounds.
func (n *Node) QuotaRefusal(client, domain string) error {
	if n.Refuse == nil {
		return nil
	}
	return n.Refuse(client, domain)
}
func (n *Node) StaleBound() time.Duration { return 300 * time.Millisecond }

func (n *Node) Propose(ctx context.Context, ops []pool.Op) ([]pool.Result, error) {
	n.Proposals.Add(1)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.ApplyOps(ops), nil
}

func (n *Node) NextRequestID() pool.RequestID {
	return pool.RequestID{Origin: 1, Seq: n.seq.Add(1)}
}

func (n *Node) PoolConfig() (c pool.Config, ok bool) {
	n.Read(func(s *pool.State) { c, ok = s.Config() })
	return c, ok
}

func (n *Node) Restore(ctx context.Context, snapshot io.ReaderAt, size int64) error {
	c, err := snapshotpkg.Read(io.NewSectionReader(snapshot, 0, size))
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.state = c.Pool
	if c.ACL != nil {
		n.acl = c.ACL
	}
	if c.Policy != nil {
		n.policy = c.Policy
	}
	n.mu.Unlock()
	return nil
}

// SpoolFile is a temporary file removed as soon as it is made, as the real
// node's.
func (n *Node) SpoolFile() (*os.File, error) {
	f, err := os.CreateTemp("", "ippool-fakenode-spool-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

func (n *Node) Local() wire.Status {
	c, _ := n.PoolConfig()
	return wire.Status{ID: "fake", State: "Leader", LeaderID: "fake", Pool: c.String(), LocalReads: n.Current.Load()}
}
func (n *Node) Status(ctx context.Context) wire.Status            { return n.Local() }
func (n *Node) CaughtUp() bool                                    { return true }
func (n *Node) RemoveServer(ctx context.Context, id string) error { return nil }
func (n *Node) RaftStats() map[string]uint64                      { return map[string]uint64{} }

func (n *Node) ACL() *acl.State {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.acl
}

func (n *Node) Policy() *policy.Stored {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.policy
}

func (n *Node) SetPolicy(ctx context.Context, cmd policy.Command) (uint64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	next, err := policy.Apply(n.policy, cmd, n.revisions+1)
	if err != nil {
		return 0, err
	}
	n.revisions++
	n.policy = next
	return next.Revision, nil
}

func (n *Node) ApplyACL(ctx context.Context, cmd acl.Command) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	next, err := n.acl.Apply(cmd)
	n.acl = next
	return err
}
