package service

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// Node is what a Service needs of its server in the cluster: the
// replicated state it reads and writes (Store) and the operations on the
// cluster itself that it only passes through (Admin). *cluster.Node is the
// one `ippool serve` runs (the composition root, internal/server, checks
// that it fits); this package's tests use a fake where they test the
// service's own logic. Front ends reach the node only through the Service.
type Node interface {
	Store
	Admin
}

// Store is the replicated state as this server holds it.
type Store interface {
	// Read runs fn on the local state under a read lock.
	Read(fn func(*pool.State))
	// ReadBarrier returns once the local state holds every write the
	// leader had committed when it was called.
	ReadBarrier(ctx context.Context) error
	// LocalReadOK says whether the local state may answer on its own now:
	// it is at most StaleBound behind the leader.
	LocalReadOK() bool
	StaleBound() time.Duration
	// Propose commits ops through the leader and returns their results.
	Propose(ctx context.Context, ops []pool.Op) ([]pool.Result, error)
	NextRequestID() pool.RequestID
	PoolConfig() (pool.Config, bool)
	// ACL is the replicated access control state (nil before bootstrap);
	// ApplyACL commits a change to it through the leader.
	ACL() *acl.State
	ApplyACL(ctx context.Context, cmd acl.Command) error
	// Policy is the replicated policy (nil before one is set); SetPolicy
	// commits a new one through the leader and returns its revision.
	Policy() *policy.Stored
	SetPolicy(ctx context.Context, cmd policy.Command) (uint64, error)
	// Local is this server's own view of the cluster; CaughtUp says
	// whether the local state holds every entry this server knows to be
	// committed.
	Local() wire.Status
	CaughtUp() bool
	// QuotaRefusal is the quota_exceeded error the leader would answer an
	// allocation of domain (normalized) for client with, judged on the
	// local state, or nil when it might succeed.
	QuotaRefusal(client, domain string) error
}

// Admin is what operators do to the cluster through this server.
type Admin interface {
	// Status is every member's state, as Local is this server's.
	Status(ctx context.Context) wire.Status
	RemoveServer(ctx context.Context, id string) error
	// Restore replaces the replicated state with the snapshot of size
	// bytes in snapshot.
	Restore(ctx context.Context, snapshot io.ReaderAt, size int64) error
	// SpoolFile returns an empty, owner-only file that disappears when
	// closed, on the server's disk, to hold an upload.
	SpoolFile() (*os.File, error)
	// RaftStats are hashicorp/raft's counters, for the metrics.
	RaftStats() map[string]uint64
}

// Status is every member's state as this server sees it.
func (s *Service) Status(ctx context.Context) wire.Status {
	st := s.node.Status(ctx)
	if f := s.egressMissing.Load(); f != nil {
		for _, a := range (*f)() {
			st.EgressMissing = append(st.EgressMissing, a.String())
		}
	}
	return st
}

// ReportMissingEgress has Status list the egress addresses missing gives:
// those of the connectors this server runs.
func (s *Service) ReportMissingEgress(missing func() []netip.Addr) { s.egressMissing.Store(&missing) }

// Local is this server's own state.
func (s *Service) Local() wire.Status { return s.node.Local() }

// RemoveServer takes a server out of the cluster, through the leader.
func (s *Service) RemoveServer(ctx context.Context, id string) error {
	return s.node.RemoveServer(ctx, id)
}

// PoolConfig is the replicated pool configuration, false before one is set.
func (s *Service) PoolConfig() (pool.Config, bool) { return s.node.PoolConfig() }

// StaleBound is B: how stale a local answer of this server may be.
func (s *Service) StaleBound() time.Duration { return s.node.StaleBound() }

// Readiness is why a server is not ready to serve, or nil when it is.
type Readiness struct {
	Code pool.Code
	Msg  string
}

// Ready says whether this server knows a leader, has applied what it knows
// to be committed and has a pool: the point from which its answers are
// current. It returns nil when ready.
func (s *Service) Ready() (wire.Status, *Readiness) {
	st := s.node.Local()
	switch {
	case st.LeaderID == "":
		return st, &Readiness{pool.CodeNoLeader, "no leader is known"}
	case !s.node.CaughtUp():
		return st, &Readiness{"catching_up", fmt.Sprintf("applied %d of %d committed entries", st.Applied, st.Commit)}
	case st.Pool == "":
		return st, &Readiness{pool.CodeNotConfigured, "the pool is not configured yet"}
	}
	return st, nil
}
