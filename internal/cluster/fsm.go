package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/buildinfo"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/internal/snapshot"
	"github.com/ippool/ippool/pool"
)

// fsm adapts the pool state machine to raft.FSM. Reads take the read lock and
// run on any goroutine; Raft applies under the write lock, a batch at a time.
type fsm struct {
	mu    sync.RWMutex
	state *pool.State
	// acl is replaced whole at each change (acl.State is immutable), so a
	// request checks its token without the lock. Written under mu.
	acl atomic.Pointer[acl.State]
	// policy, likewise: nil until a policy is set. Written under mu.
	policy atomic.Pointer[policy.Stored]
	log    *slog.Logger

	// onConfig is told the pool configuration after a batch that changed it
	// and after a restore, so the node can keep its record of it on disk. It
	// runs outside the lock.
	onConfig func(pool.Config)

	badEntries   func() // counts entries that did not decode
	snapshotTook func(time.Duration)
	// onDamaged is told, once, that this server's copy of a committed entry
	// failed its checksum.
	onDamaged func(error)
	// damaged, once set, stops applying: the state stays the true state as
	// of the entry before the one it could not apply (damaged on this
	// server's disk, or of a version only a newer build reads), and is
	// never snapshotted.
	damaged error

	// applied is the index of the last entry this FSM has seen (commands and
	// configurations) or of the snapshot it restored. Raft's own applied
	// index runs ahead of it: Raft counts an entry applied once it is queued
	// for the FSM.
	applied atomic.Uint64

	// restoresDecoded counts the restores whose bytes this FSM decoded (a
	// follower's installs and startup), not the leader's own restores,
	// which it installs as decoded (decodedBody). Tests read it.
	restoresDecoded atomic.Uint64
	// maxTime is the latest entry time applied (Unix ns), below which a
	// leader never stamps. It is not in snapshots: a server that installs
	// one knows only the times of the entries it applies after it.
	maxTime atomic.Int64
	// lastEntryVersion is the version of the last pool entry applied: what
	// the cluster writes, as a follower knows it. hits is when (the
	// cluster's time) each quota last refused an allocation, at apply or
	// before proposing on this server, by pool.QuotaOf's name. Neither is
	// in snapshots: they are for status only.
	lastEntryVersion atomic.Int32
	hitsMu           sync.Mutex
	hits             map[string]time.Time
	snapshot         *snapshotStore
	// spool returns an empty file with no name for a snapshot's encoding
	// (Node.SpoolFile; a temporary directory's in unit tests).
	spool func() (*os.File, error)
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
	return &fsm{state: pool.NewState(), log: log, hits: map[string]time.Time{}, onConfig: func(pool.Config) {}, badEntries: func() {}, onDamaged: func(error) {}, snapshotTook: func(time.Duration) {}, spool: tempSpool, progress: make(chan struct{})}
}

// quotaHit records that quota refused an allocation at at.
func (f *fsm) quotaHit(quota string, at time.Time) {
	f.hitsMu.Lock()
	defer f.hitsMu.Unlock()
	if at.After(f.hits[quota]) {
		f.hits[quota] = at
	}
}

// quotaHits is when each quota last refused an allocation.
func (f *fsm) quotaHits() map[string]time.Time {
	f.hitsMu.Lock()
	defer f.hitsMu.Unlock()
	out := make(map[string]time.Time, len(f.hits))
	for q, at := range f.hits {
		out[q] = at
	}
	return out
}

// isDamaged reports whether the FSM stopped at a damaged entry.
func (f *fsm) isDamaged() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.damaged != nil
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
	lastApplied := uint64(0)
	var damaged error
	f.mu.Lock()
	for i, l := range logs {
		if f.damaged != nil {
			out[i] = applyResponse{err: f.damaged}
			continue
		}
		lastApplied = l.Index
		if l.Type != raft.LogCommand {
			continue
		}
		var e pool.Entry
		var cmd acl.Command
		var policyCmd policy.Command
		var err error
		isACL, isPolicy := acl.IsCommand(l.Data), policy.IsCommand(l.Data)
		switch {
		case isACL:
			cmd, err = acl.DecodeCommand(l.Data)
		case isPolicy:
			policyCmd, err = policy.DecodeCommand(l.Data)
		default:
			e, err = pool.DecodeEntry(l.Data)
		}
		if errors.Is(err, pool.ErrCorruptEntry) {
			// Only this server's copy can be damaged: the entry was
			// checksummed when proposed and the others applied it. Skipping
			// it would leave this server alone with another state, so it
			// stops applying here and the node stops.
			f.damaged = fmt.Errorf("log entry %d on this server's disk is damaged (%v); the other servers hold it intact: stop this server, move its data dir away and start it again with the same --id to copy the state from them", l.Index, err)
			damaged = f.damaged
			lastApplied = l.Index - 1
			out[i] = applyResponse{err: err}
			continue
		}
		if fe, ok := errors.AsType[*pool.FutureEntryError](err); ok {
			// A newer ippool wrote it: every server of that build reads it,
			// so skipping it here would leave this server with a state the
			// cluster does not have, answering as if acknowledged mappings
			// never existed. It stops applying, as at a damaged entry, and
			// says which build it needs (docs/upgrading.md).
			f.damaged = fmt.Errorf("log entry %d has version %d, written by a newer ippool; this build (%s) reads log entry versions %d to %d, so it stopped before it rather than skip it: upgrade this server to the cluster's version and start it again (its data dir is intact)",
				l.Index, fe.Version, buildinfo.Version, pool.OldestEntryVersion, pool.EntryVersion)
			damaged = f.damaged
			lastApplied = l.Index - 1
			out[i] = applyResponse{err: err}
			continue
		}
		if err != nil {
			// S10: an entry nobody can decode is answered with an error on
			// every server alike, and changes nothing.
			f.log.Error("refusing a log entry that does not decode", "index", l.Index, "err", err)
			f.badEntries()
			out[i] = applyResponse{err: err}
			continue
		}
		if isACL {
			next, err := f.acl.Load().Apply(cmd)
			f.acl.Store(next)
			out[i] = applyResponse{err: err}
			continue
		}
		if isPolicy {
			next, err := policy.Apply(f.policy.Load(), policyCmd, l.Index)
			f.policy.Store(next)
			out[i] = applyResponse{err: err}
			continue
		}
		for j := range e.Ops {
			configChanged = configChanged || e.Ops[j].Kind == pool.OpSetConfig
		}
		results := f.state.ApplyEntry(e)
		out[i] = applyResponse{results: results}
		f.lastEntryVersion.Store(int32(e.Version))
		for _, r := range results {
			if q := pool.QuotaOf(r.Err); q != "" {
				f.quotaHit(q, e.Time)
			}
		}
		if t := e.Time.UnixNano(); t > f.maxTime.Load() {
			f.maxTime.Store(t)
		}
	}
	cfg, _ := f.state.Config()
	f.mu.Unlock()
	if lastApplied > 0 {
		f.setApplied(lastApplied)
	}
	if configChanged {
		f.onConfig(cfg)
	}
	if damaged != nil {
		f.log.Error("stopping: this server cannot apply a committed log entry", "err", damaged)
		f.onDamaged(damaged)
	}
	return out
}

// Snapshot encodes the state while Raft holds off applies, so the copy is a
// point in time, into an unnamed file in the data dir (spool); Persist then
// only copies bytes. A file, not memory: at 30M mappings the encoding is a
// gigabyte, which on the heap would raise the collector's goal, and the
// server's resident memory, by twice that at every snapshot.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	damaged := f.damaged
	f.mu.RUnlock()
	if damaged != nil {
		// Raft counts the damaged entry and those after it as applied; a
		// snapshot would record a state that lacks them as if it had them.
		return nil, damaged
	}
	file, err := f.spool()
	if err != nil {
		return nil, fmt.Errorf("a file for the snapshot: %w", err)
	}
	start := time.Now()
	f.mu.RLock()
	err = snapshot.WriteFile(file, snapshot.Contents{Pool: f.state, ACL: f.acl.Load(), Policy: f.policy.Load()})
	f.mu.RUnlock()
	f.snapshotTook(time.Since(start))
	if err != nil {
		file.Close()
		return nil, err
	}
	return &fsmSnapshot{file: file}, nil
}

// Restore replaces the state with a snapshot's. A corrupt snapshot is refused
// and the current state stays as it was.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var c snapshot.Contents
	if decoded := f.decodedRestore(); decoded != nil {
		c = *decoded
	} else {
		var err error
		if c, err = snapshot.Read(rc); err != nil {
			return err
		}
		f.restoresDecoded.Add(1)
	}
	f.mu.Lock()
	f.state = c.Pool
	f.acl.Store(c.ACL)
	f.policy.Store(c.Policy)
	cfg, ok := c.Pool.Config()
	f.mu.Unlock()
	// The replaced state and the decoding's garbage go now, in the
	// background, and their memory back to the system: the last collection
	// during the decoding found the old state and the new one both live, so
	// left to its pace the heap would grow to twice both before the next,
	// and the runtime returns freed memory slowly (a server held 2.7 times
	// its state after a 10M restore; docs/scale.md).
	go debug.FreeOSMemory()
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

type fsmSnapshot struct{ file *os.File }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	_, err := io.Copy(sink, io.NewSectionReader(s.file, 0, 1<<62))
	if err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release frees the spooled encoding: its file has no name, so closing it
// gives its space back.
func (s *fsmSnapshot) Release() { s.file.Close() }

// tempSpool is spool outside a node: a file in the temporary directory.
func tempSpool() (*os.File, error) { return unnamedFile("") }

// decodedRestore is the state a restore on this leader decoded from the
// snapshot Raft is about to restore, or nil when Raft restores one that
// was not decoded so (on a follower, or at startup).
func (f *fsm) decodedRestore() *snapshot.Contents {
	if f.snapshot == nil {
		return nil
	}
	return f.snapshot.takeDecoded()
}
