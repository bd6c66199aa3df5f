package service

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// fakeNode is a Node in memory: writes apply at once to one pool.State,
// reads see it, and the test sets whether the server is fresh and whether
// a read barrier succeeds. It is for the service's own logic; the wiring to
// a real cluster node is tested on one (service_test.go).
type fakeNode struct {
	mu    sync.RWMutex
	state *pool.State

	fresh      atomic.Bool
	barrierErr atomic.Pointer[error]
	barriers   atomic.Int64
	proposals  atomic.Int64
	seq        atomic.Uint64
}

func newFakeNode(t *testing.T, poolText string, lifetime time.Duration) *fakeNode {
	t.Helper()
	cfg, err := pool.ParseConfig(poolText, "", lifetime)
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{state: pool.NewState()}
	if _, err := n.state.SetConfig(cfg, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	n.fresh.Store(true)
	return n
}

func (n *fakeNode) Read(fn func(*pool.State)) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	fn(n.state)
}

func (n *fakeNode) ReadBarrier(ctx context.Context) error {
	n.barriers.Add(1)
	if err := n.barrierErr.Load(); err != nil {
		return *err
	}
	return nil
}

func (n *fakeNode) LocalReadOK() bool         { return n.fresh.Load() }
func (n *fakeNode) StaleBound() time.Duration { return 300 * time.Millisecond }

func (n *fakeNode) Propose(ctx context.Context, ops []pool.Op) ([]pool.Result, error) {
	n.proposals.Add(1)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.ApplyOps(ops), nil
}

func (n *fakeNode) NextRequestID() pool.RequestID {
	return pool.RequestID{Origin: 1, Seq: n.seq.Add(1)}
}

func (n *fakeNode) PoolConfig() (c pool.Config, ok bool) {
	n.Read(func(s *pool.State) { c, ok = s.Config() })
	return c, ok
}

func (n *fakeNode) Restore(ctx context.Context, snapshot []byte) error {
	s, err := pool.ReadSnapshot(bytes.NewReader(snapshot))
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.state = s
	n.mu.Unlock()
	return nil
}

func (n *fakeNode) Local() wire.Status {
	c, _ := n.PoolConfig()
	return wire.Status{ID: "fake", State: "Leader", LeaderID: "fake", Pool: c.String(), LocalReads: n.fresh.Load()}
}
func (n *fakeNode) Status(ctx context.Context) wire.Status            { return n.Local() }
func (n *fakeNode) CaughtUp() bool                                    { return true }
func (n *fakeNode) RemoveServer(ctx context.Context, id string) error { return nil }
func (n *fakeNode) RaftStats() map[string]uint64                      { return map[string]uint64{} }

// newFakeService is a Service on a fakeNode with a clock the test moves.
func newFakeService(t *testing.T, poolText string, lifetime time.Duration) (*Service, *fakeNode, *Metrics, *atomic.Int64) {
	t.Helper()
	node := newFakeNode(t, poolText, lifetime)
	metrics := NewMetrics(prometheus.NewRegistry())
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	svc := New(node, Options{Metrics: metrics, MarkFlush: time.Hour, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	t.Cleanup(svc.Close)
	return svc, node, metrics, &now
}
