package cluster

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/buildinfo"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
)

// DamagedDataError is a data dir this server cannot start from: a Raft log
// entry, the log's metadata or every snapshot is unreadable. Its message
// names the file and says how to recover, because the operator reading it
// has a server that will not start and needs the next step, not a trace.
type DamagedDataError struct {
	DataDir string
	// File is the damaged file or directory.
	File string
	// What says what could not be read, e.g. "log entry 5253".
	What string
	Err  error
}

func (e *DamagedDataError) Error() string {
	return fmt.Sprintf("%s in %s cannot be read: %v. This server's copy of the data is damaged, so it did not start. "+
		"If the other servers are up and hold a quorum, move %s aside (keep it to report the fault) and start this server again with the same flags: "+
		"it starts from an empty data dir, rejoins and copies the state from the leader. "+
		"If it is the only server, or most servers are damaged, restore the newest backup with `ippool snapshot restore`",
		e.What, e.File, e.Err, e.DataDir)
}

func (e *DamagedDataError) Unwrap() error { return e.Err }

// checkLog reads every entry of the Raft log before Raft starts.
// hashicorp/raft reads the entries after the newest snapshot in NewRaft and
// panics on the first it cannot read; raft-wal's decoder itself panics on
// some damaged entries (a varint that overflows). Reading them here first
// turns either into a DamagedDataError naming the segment file. The whole
// log is at most a snapshot threshold plus the trailing logs, so this costs
// one sequential read of it at start (BenchmarkCheckLog), and Raft reads most
// of them again right after.
func checkLog(store raft.LogStore, dataDir, walDir string) error {
	first, err := store.FirstIndex()
	if err != nil {
		return &DamagedDataError{DataDir: dataDir, File: walDir, What: "the Raft log's first index", Err: err}
	}
	last, err := store.LastIndex()
	if err != nil {
		return &DamagedDataError{DataDir: dataDir, File: walDir, What: "the Raft log's last index", Err: err}
	}
	if last == 0 {
		return nil
	}
	var entry raft.Log
	for i := first; i <= last; i++ {
		err := readEntry(store, i, &entry)
		if err == nil && entry.Index != i {
			err = fmt.Errorf("the entry there says it is entry %d", entry.Index)
		}
		if err != nil {
			return &DamagedDataError{DataDir: dataDir, File: segmentFile(walDir, i), What: fmt.Sprintf("Raft log entry %d (of %d-%d)", i, first, last), Err: err}
		}
		if v, err := futureEntryVersion(&entry); err != nil {
			return &DamagedDataError{DataDir: dataDir, File: segmentFile(walDir, i), What: fmt.Sprintf("Raft log entry %d (of %d-%d)", i, first, last), Err: err}
		} else if v != 0 {
			return fmt.Errorf("the Raft log in %s holds entry %d of log entry version %d, written by a newer ippool; this build (%s) reads versions %d to %d, so it does not start rather than skip it: run the newer build on this data dir (docs/upgrading.md says which downgrades are allowed)",
				dataDir, i, v, buildinfo.Version, pool.OldestEntryVersion, pool.EntryVersion)
		}
	}
	return nil
}

// futureEntryVersion returns the version of a command entry that only a
// newer build can read, 0 for one this build reads (or judges when it
// applies it), and an error for one whose unknown version fails its
// checksum: this server's damaged copy.
func futureEntryVersion(l *raft.Log) (byte, error) {
	if l.Type != raft.LogCommand || len(l.Data) == 0 || acl.IsCommand(l.Data) || policy.IsCommand(l.Data) || l.Data[0] <= pool.EntryVersion {
		return 0, nil
	}
	_, err := pool.DecodeEntry(l.Data)
	if fe, ok := errors.AsType[*pool.FutureEntryError](err); ok {
		return fe.Version, nil
	}
	return 0, err
}

// readEntry is store.GetLog with a panic in the store turned into an error.
func readEntry(store raft.LogStore, i uint64, entry *raft.Log) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the log store panicked reading it: %v", p)
		}
	}()
	return store.GetLog(i, entry)
}

// segmentFile names the raft-wal segment that holds entry i: segments are
// named <first index, 20 digits>-<segment id>.wal, so it is the last file
// whose name sorts at or before i's. It falls back to the directory.
func segmentFile(walDir string, i uint64) string {
	files, _ := filepath.Glob(filepath.Join(walDir, "*.wal"))
	sort.Strings(files)
	key := fmt.Sprintf("%020d-", i)
	found := walDir
	for _, f := range files {
		if b := filepath.Base(f); len(b) >= len(key) && b[:len(key)] <= key {
			found = f
		}
	}
	return found
}

// openWAL is wal.Open with a panic in the log store or its metadata
// database (bbolt panics on some damaged pages) turned into an error.
func openWAL(dir string, meta *metadb.BoltMetaDB) (w *wal.WAL, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the log store panicked opening it: %v", p)
		}
	}()
	return wal.Open(dir, wal.WithMetaStore(meta))
}

// newRaft is raft.NewRaft with a panic turned into an error: NewRaft panics
// when its log or stable store fails during start (checkLog has read the
// log first, so this is the net under it).
func newRaft(conf *raft.Config, fsm raft.FSM, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("raft panicked while starting: %v", p)
		}
	}()
	return raft.NewRaft(conf, fsm, logs, stable, snaps, trans)
}
