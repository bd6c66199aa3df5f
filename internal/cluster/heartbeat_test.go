package cluster

import (
	"testing"

	"github.com/hashicorp/raft"
)

// The heartbeats' own transport takes what NetworkTransport's receiving
// side answers outside Raft's main loop, and nothing else.
func TestIsHeartbeat(t *testing.T) {
	beat := raft.AppendEntriesRequest{Term: 3, RPCHeader: raft.RPCHeader{Addr: []byte("127.0.0.1:7481")}}
	if !isHeartbeat(&beat) {
		t.Fatal("a heartbeat not taken for one")
	}
	for name, a := range map[string]raft.AppendEntriesRequest{
		"entries":      {Term: 3, RPCHeader: raft.RPCHeader{Addr: []byte("x")}, Entries: []*raft.Log{{Index: 1}}},
		"commit index": {Term: 3, RPCHeader: raft.RPCHeader{Addr: []byte("x")}, LeaderCommitIndex: 9},
		"previous log": {Term: 3, RPCHeader: raft.RPCHeader{Addr: []byte("x")}, PrevLogEntry: 4, PrevLogTerm: 2},
		"no term":      {RPCHeader: raft.RPCHeader{Addr: []byte("x")}},
		"no leader":    {Term: 3},
	} {
		if isHeartbeat(&a) {
			t.Errorf("%s: taken for a heartbeat", name)
		}
	}
}
