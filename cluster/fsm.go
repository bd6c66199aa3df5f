package cluster

import (
	"bytes"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/pool"
)

// fsm adapts the pool state machine to raft.FSM. Reads take the read lock and
// run on any goroutine; Raft applies under the write lock, a batch at a time.
type fsm struct {
	mu    sync.RWMutex
	state *pool.State
	log   *slog.Logger

	// onApplied is told the pool configuration after each batch, so the node
	// can keep its record of it on disk. It runs outside the lock.
	onConfig func(pool.Config)

	badEntries   func() // counts entries that did not decode
	snapshotTook func(time.Duration)

	// applied is the index of the last entry this FSM has seen (commands and
	// configurations) or of the snapshot it restored. Raft's own applied
	// index runs ahead of it: Raft counts an entry applied once it is queued
	// for the FSM.
	applied  atomic.Uint64
	snapshot *snapshotStore
	// progress is closed and replaced after every batch, to wake waiters.
	progressMu sync.Mutex
	progress   chan struct{}
}

// applyResponse is what an ApplyFuture's Response holds for our entries.
type applyResponse struct {
	results []pool.Result
	err     error
}

var _ raft.BatchingFSM = (*fsm)(nil)

func newFSM(log *slog.Logger) *fsm {
	return &fsm{state: pool.NewState(), log: log, onConfig: func(pool.Config) {}, badEntries: func() {}, snapshotTook: func(time.Duration) {}, progress: make(chan struct{})}
}

// progressCh returns a channel closed at the next applied batch or restore.
func (f *fsm) progressCh() <-chan struct{} {
	f.progressMu.Lock()
	defer f.progressMu.Unlock()
	return f.progress
}

func (f *fsm) setApplied(index uint64) {
	f.applied.Store(index)
	f.progressMu.Lock()
	close(f.progress)
	f.progress = make(chan struct{})
	f.progressMu.Unlock()
}

func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	configChanged := false
	f.mu.Lock()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		ops, err := pool.DecodeCommand(l.Data)
		if err != nil {
			// S10: an entry nobody can decode is answered with an error on
			// every server alike, and changes nothing.
			f.log.Error("refusing a log entry that does not decode", "index", l.Index, "err", err)
			f.badEntries()
			out[i] = applyResponse{err: err}
			continue
		}
		for j := range ops {
			configChanged = configChanged || ops[j].Kind == pool.OpSetConfig
		}
		out[i] = applyResponse{results: f.state.ApplyOps(ops)}
	}
	cfg, _ := f.state.Config()
	f.mu.Unlock()
	if len(logs) > 0 {
		f.setApplied(logs[len(logs)-1].Index)
	}
	if configChanged {
		f.onConfig(cfg)
	}
	return out
}

// Snapshot encodes the state while Raft holds off applies, so the copy is a
// point in time; the encoding is fast (tens of ms for a million mappings)
// and Persist then only writes bytes.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	var buf bytes.Buffer
	start := time.Now()
	f.mu.RLock()
	err := f.state.WriteSnapshot(&buf)
	f.mu.RUnlock()
	f.snapshotTook(time.Since(start))
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{data: buf.Bytes()}, nil
}

// Restore replaces the state with a snapshot's. A corrupt snapshot is refused
// and the current state stays as it was.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := pool.ReadSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.state = s
	cfg, ok := s.Config()
	f.mu.Unlock()
	if f.snapshot != nil {
		f.setApplied(f.snapshot.opened.Load())
	}
	if ok {
		f.onConfig(cfg)
	}
	return nil
}

// read runs fn with the state under the read lock.
func (f *fsm) read(fn func(s *pool.State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
