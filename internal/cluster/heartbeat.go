package cluster

import "github.com/hashicorp/raft"

// heartbeatTransport sends Raft's heartbeats over connections of their own.
// hashicorp/raft's NetworkTransport keeps one pool of connections a peer for
// every RPC, and a snapshot sent to a peer takes a pooled connection and
// closes it after, so the next heartbeat dials. A TLS dial parses the peer's
// certificate through crypto/tls's cache of weak pointers, and turning a
// weak pointer strong waits while the collector finishes a mark phase,
// which takes seconds with a heap of gigabytes (runtime: once a ragged
// barrier finds more work, weak-to-strong conversions stay blocked until
// mark termination). A leader that had just restored 10M mappings and begun
// sending them to its followers waited so for a second in its heartbeats'
// handshakes and lost its lease (docs/scale.md). A second transport, used
// for heartbeats alone, keeps its connection from one beat to the next.
type heartbeatTransport struct {
	*raft.NetworkTransport
	beats *raft.NetworkTransport
}

func (t *heartbeatTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if isHeartbeat(args) {
		return t.beats.AppendEntries(id, target, args, resp)
	}
	return t.NetworkTransport.AppendEntries(id, target, args, resp)
}

func (t *heartbeatTransport) Close() error {
	t.beats.Close()
	return t.NetworkTransport.Close()
}

// isHeartbeat is NetworkTransport's own test of a heartbeat, which its
// receiving side answers at once, outside Raft's main loop.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return a.Term != 0 && (len(a.Addr) > 0 || len(a.Leader) > 0) &&
		a.PrevLogEntry == 0 && a.PrevLogTerm == 0 && len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}
