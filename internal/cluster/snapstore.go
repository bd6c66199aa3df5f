package cluster

import (
	"io"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// snapshotStore remembers the index of the snapshot Raft last opened. Raft
// opens a snapshot right before it hands it to FSM.Restore, and Restore is
// given only a reader; the read barrier needs to know which index the restored
// state stands for.
type snapshotStore struct {
	raft.SnapshotStore
	opened atomic.Uint64
}

func (s *snapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err == nil {
		s.opened.Store(meta.Index)
	}
	return meta, rc, err
}
