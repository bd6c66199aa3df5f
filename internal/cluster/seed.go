package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	snapshotpkg "github.com/ippool/ippool/internal/snapshot"
)

// SeedDataDir prepares an empty data dir from a backup, offline, the way
// etcdutl's snapshot restore does: the backup becomes the data dir's Raft
// snapshot, with a configuration of this one server. `ippool serve` started
// on it with the same ID and cluster address restores the state and leads a
// one-server cluster; more servers then join it with --join.
func SeedDataDir(dir, id, clusterAddr string, snapshot []byte) error {
	c, err := snapshotpkg.Read(bytes.NewReader(snapshot))
	if err != nil {
		return err
	}
	s := c.Pool
	cfg, configured := s.Config()
	if !configured {
		return errors.New("the backup holds no pool configuration")
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("data dir %s is not empty; seed a new one", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
		return err
	}
	// An empty log store: Raft refuses a snapshot without one.
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(filepath.Join(dir, "raft"), wal.WithMetaStore(meta))
	if err != nil {
		return err
	}
	w.Close()
	meta.Close()

	snaps, err := raft.NewFileSnapshotStore(dir, 3, io.Discard)
	if err != nil {
		return err
	}
	self := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(id), Address: raft.ServerAddress(clusterAddr), Suffrage: raft.Voter}}}
	// The transport only encodes the legacy peer list of the snapshot's meta.
	_, trans := raft.NewInmemTransport(raft.ServerAddress(clusterAddr))
	sink, err := snaps.Create(raft.SnapshotVersionMax, 1, 1, self, 1, trans)
	if err != nil {
		return err
	}
	if _, err := sink.Write(snapshot); err != nil {
		sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	r := record{ID: id, ClusterAddr: clusterAddr, PoolConfig: &cfg}
	n := &Node{cfg: Config{DataDir: dir}}
	return n.writeRecord(r)
}
