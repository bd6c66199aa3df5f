package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/buildinfo"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// Status and ServerStatus live in wire, so that the Go client can decode
// them without linking Raft; the aliases keep cluster.Status working.
type (
	Status       = wire.Status
	ServerStatus = wire.ServerStatus
)

// Local returns this server's own numbers.
func (n *Node) Local() Status {
	lid, laddr := n.Leader()
	s := Status{
		ID: n.cfg.ID, Addr: n.cfg.ClusterAddr, State: n.raft.State().String(),
		LeaderID: lid, LeaderAddr: laddr,
		Term: n.raft.CurrentTerm(), Commit: n.raft.CommitIndex(), Applied: n.appliedIndex(), LastIndex: n.raft.LastIndex(),
	}
	if c, ok := n.PoolConfig(); ok {
		s.Pool = c.String()
	}
	s.StaleBound, s.ReuseHold, s.LocalReads = n.StaleBound().String(), pool.ReuseHold.String(), n.LocalReadOK()
	s.QuotasEnforced = n.writesEntryVersion() >= quotaEntryVersion
	bi := buildinfo.Get()
	s.Version, s.EntryVersions = bi.Version, bi.EntryVersions
	if notAfter, ok := n.CertificateExpiry(); ok {
		s.CertificateExpires = notAfter.UTC().Format(time.RFC3339)
	}
	n.Read(func(st *pool.State) { s.HeldAddresses = st.HeldCount() })
	return s
}

// Status asks every member for its state, each within a short timeout.
func (n *Node) Status(ctx context.Context) Status {
	st := n.Local()
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return st
	}
	servers := f.Configuration().Servers
	st.Servers = make([]ServerStatus, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		ss := &st.Servers[i]
		ss.ID, ss.Addr, ss.Voter = string(s.ID), string(s.Address), s.Suffrage == raft.Voter
		ss.Role = "follower"
		if ss.ID == st.LeaderID {
			ss.Role = "leader"
		}
		if ss.ID == n.cfg.ID {
			ss.Reachable, ss.Term, ss.Applied = true, st.Term, st.Applied
			ss.Version, ss.EntryVersions = st.Version, st.EntryVersions
			ss.Role = roleOf(n.raft.State())
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			var peer statusInfo
			if err := n.rpc.call(c, ss.Addr, rpcStatus, nil, &peer); err != nil {
				// Its role is whatever it is now, which nobody here knows.
				ss.Role = "unknown"
				ss.Error = "did not answer: " + peerError(err)
				if since, ok := n.contact.lost(ss.ID); ok {
					ss.UnreachableSince = since.UTC().Format(time.RFC3339)
				}
				return
			}
			ss.Reachable, ss.Term, ss.Applied, ss.Role = true, peer.Term, peer.Applied, peer.Role
			ss.Version, ss.EntryVersions = peer.Version, peer.EntryVersions
		}()
	}
	wg.Wait()
	st.ClusterEntryVersion = clusterEntryVersion(st.Servers)
	var usage wire.QuotaUsage
	var limits wire.QuotaLimits
	st.QuotasEnforced, st.QuotasReason, usage, limits, st.Alarms = n.QuotaStatus()
	st.Usage, st.Limits = &usage, &limits
	return st
}

// baselineEntryVersion is the newest log entry version every release
// reads, those that do not say what they read included (before 0.3.0).
const baselineEntryVersion = 3

// clusterEntryVersion is the newest entry version every member reads: a
// member that did not say (an older release, or one that did not answer)
// counts as reading the baseline only.
func clusterEntryVersion(servers []ServerStatus) int {
	v := pool.EntryVersion
	for _, s := range servers {
		newest := baselineEntryVersion
		if n := len(s.EntryVersions); n > 0 {
			newest = s.EntryVersions[n-1]
		}
		v = min(v, newest)
	}
	return v
}

type statusInfo struct {
	Role    string `json:"role"`
	Term    uint64 `json:"term"`
	Applied uint64 `json:"applied_index"`
	// Version and EntryVersions: since 0.3.0.
	Version       string `json:"version,omitempty"`
	EntryVersions []int  `json:"entry_versions,omitempty"`
}

func roleOf(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Candidate:
		return "candidate"
	case raft.Follower:
		return "follower"
	}
	return "shutdown"
}

func (n *Node) statusInfo() statusInfo {
	bi := buildinfo.Get()
	return statusInfo{Role: roleOf(n.raft.State()), Term: n.raft.CurrentTerm(), Applied: n.appliedIndex(), Version: bi.Version, EntryVersions: bi.EntryVersions}
}

// RaftStats returns Raft's own counters as numbers where they are numbers.
func (n *Node) RaftStats() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range n.raft.Stats() {
		if u, err := strconv.ParseUint(v, 10, 64); err == nil {
			out[k] = u
		}
	}
	return out
}

// appliedIndex is the last entry this server has applied, the leader's
// no-op and barrier entries included: the FSM's own count skips them, so an
// idle cluster after an election would show its commit index ahead of it
// for good, which reads as a server that stopped applying.
func (n *Node) appliedIndex() uint64 {
	return max(n.fsm.applied.Load(), n.raft.AppliedIndex())
}

// peerError is why a peer did not answer, without the RPC's URL, which
// names an internal path the operator never typed.
func peerError(err error) string {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer within a second"
	}
	return err.Error()
}

// CertificateExpiry is when this server's cluster certificate expires;
// false without TLS on the cluster port.
func (n *Node) CertificateExpiry() (time.Time, bool) {
	if n.cfg.TLS == nil || len(n.cfg.TLS.Certificates) == 0 {
		return time.Time{}, false
	}
	c := n.cfg.TLS.Certificates[0]
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return time.Time{}, false
		}
	}
	if leaf == nil {
		return time.Time{}, false
	}
	return leaf.NotAfter, true
}
