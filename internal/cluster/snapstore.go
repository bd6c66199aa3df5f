package cluster

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/snapshot"
)

// snapshotStore remembers the index of the snapshot Raft last opened. Raft
// opens a snapshot right before it hands it to FSM.Restore, and Restore is
// given only a reader; the read barrier needs to know which index the restored
// state stands for.
//
// It also carries a restore's decoded state from the leader's check to its
// FSM (decodedBody): a restore is decoded once on the leader, not checked
// and then decoded again, which at 30M mappings is a second 3 GB state and
// some ten seconds of two cores.
type snapshotStore struct {
	raft.SnapshotStore
	opened atomic.Uint64

	mu sync.Mutex
	// decoded is the contents of the snapshot with ID decodedID, stored by
	// the restore running on this leader; openedID is the snapshot Raft
	// opened last.
	decodedID, openedID string
	decoded             *snapshot.Contents
}

func (s *snapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &snapshotSink{SnapshotSink: sink, store: s}, nil
}

func (s *snapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err == nil {
		s.opened.Store(meta.Index)
		s.mu.Lock()
		s.openedID = id
		s.mu.Unlock()
	}
	return meta, rc, err
}

// takeDecoded returns the decoded contents of the snapshot Raft opened
// last, when the restore running here decoded it before Raft stored it,
// and forgets them. Raft opens the snapshot it restores right before
// FSM.Restore; the leader's replication may open one in between, and then
// the FSM decodes the bytes as it would without this: the contents are
// never those of another snapshot.
func (s *snapshotStore) takeDecoded() *snapshot.Contents {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.decoded == nil || s.openedID != s.decodedID {
		return nil
	}
	c := s.decoded
	s.decodedID, s.decoded = "", nil
	return c
}

// forgetDecoded drops what a restore left unused (it failed before the
// FSM ran, or the FSM decoded the bytes after all).
func (s *snapshotStore) forgetDecoded() {
	s.mu.Lock()
	s.decodedID, s.decoded = "", nil
	s.mu.Unlock()
}

// snapshotSink notes, when a decodedBody is copied into it, whose contents
// it holds.
type snapshotSink struct {
	raft.SnapshotSink
	store   *snapshotStore
	decoded *snapshot.Contents
}

func (s *snapshotSink) Close() error {
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	if s.decoded != nil {
		s.store.mu.Lock()
		s.store.decodedID, s.store.decoded = s.ID(), s.decoded
		s.store.mu.Unlock()
	}
	return nil
}

// decodedBody is a snapshot's bytes together with their decoding. Raft
// copies a user restore into a new snapshot with io.Copy, which hands the
// sink to WriteTo: the sink then knows what it holds, and the FSM, when
// Raft opens that snapshot, installs the contents instead of decoding the
// bytes again. Every other reader just reads the bytes.
type decodedBody struct {
	io.Reader
	contents *snapshot.Contents
}

func (b *decodedBody) WriteTo(w io.Writer) (int64, error) {
	if sink, ok := w.(*snapshotSink); ok {
		sink.decoded = b.contents
	}
	return io.Copy(w, b.Reader)
}
