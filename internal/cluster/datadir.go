package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ippool/ippool/pool"
)

// The data dir: its lock, and the record of which server, cluster address
// and pool it belongs to, checked against the flags at every start.

// record is what a data dir remembers of its server, to refuse a restart
// with flags that contradict it.
type record struct {
	ID          string       `json:"id"`
	ClusterAddr string       `json:"cluster_addr"`
	PoolConfig  *pool.Config `json:"pool_config,omitempty"`
	// Records written before PoolConfig held the pool as three strings;
	// they are read, never written.
	LegacyPool     string `json:"pool,omitempty"`
	LegacyExclude  string `json:"exclude,omitempty"`
	LegacyLifetime string `json:"lifetime,omitempty"`
}

// storedPool is the pool the record holds, nil when none.
func (r record) storedPool() (*pool.Config, error) {
	if r.PoolConfig != nil || r.LegacyPool == "" {
		return r.PoolConfig, nil
	}
	lifetime := pool.DefaultLifetime
	if r.LegacyLifetime != "" {
		d, err := time.ParseDuration(r.LegacyLifetime)
		if err != nil {
			return nil, fmt.Errorf("lifetime %q: %v", r.LegacyLifetime, err)
		}
		lifetime = d
	}
	c, err := pool.ParseConfig(r.LegacyPool, r.LegacyExclude, lifetime)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

const recordFile = "server.json"

// openDataDir creates the data dir if needed, locks it, makes it owner-only
// and checks the record against the flags.
func (n *Node) openDataDir() error {
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return err
	}
	lock, err := lockDataDir(n.cfg.DataDir)
	if err != nil {
		return err
	}
	n.lock = lock
	err = restrictDataDir(n.cfg.DataDir)
	if err == nil {
		err = n.checkRecord()
	}
	if err != nil {
		lock.Close()
		n.lock = nil
		return err
	}
	return nil
}

// lockDataDir takes an exclusive lock on the data dir, so a second server
// pointed at it fails at once instead of waiting forever on the log store's
// own lock (or, worse, sharing its files).
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another ippool process (%v)", dir, err)
	}
	return f, nil
}

// checkRecord compares the flags with what the data dir remembers.
func (n *Node) checkRecord() error {
	path := filepath.Join(n.cfg.DataDir, recordFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return n.writeRecord(record{ID: n.cfg.ID, ClusterAddr: n.cfg.ClusterAddr})
	}
	if err != nil {
		return err
	}
	var r record
	err = json.Unmarshal(b, &r)
	var stored *pool.Config
	if err == nil {
		stored, err = r.storedPool()
	}
	if err != nil {
		return fmt.Errorf("%s is corrupt (%v); it records this server's identity and pool, so restore it or start with an empty data dir", path, err)
	}
	if r.ID != n.cfg.ID {
		return fmt.Errorf("data dir %s belongs to server %q, but --id is %q: start it with --id %s (or no --id: the data dir says), or give server %q a data dir of its own", n.cfg.DataDir, r.ID, n.cfg.ID, r.ID, n.cfg.ID)
	}
	if r.ClusterAddr != n.cfg.ClusterAddr {
		return fmt.Errorf("data dir %s was used with --cluster-addr %s, but this start has %s; the other servers know it by the old address", n.cfg.DataDir, r.ClusterAddr, n.cfg.ClusterAddr)
	}
	if n.cfg.Pool != nil && stored != nil && !stored.Equal(*n.cfg.Pool) {
		return fmt.Errorf("data dir %s holds %s, but the flags say %s; start without --pool, --exclude and --lifetime to keep the stored pool, or change the pool with `ippool pool set`", n.cfg.DataDir, stored, *n.cfg.Pool)
	}
	return nil
}

func (n *Node) writeRecord(r record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return replaceFile(filepath.Join(n.cfg.DataDir, recordFile), append(b, '\n'))
}

// replaceFile writes path through a synced temporary file and a rename, then
// syncs the directory: after a crash path holds the old contents or the new,
// never a torn or empty file (the record is this server's identity).
func replaceFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename or a new file in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// restrictDataDir makes the data dir and everything in it owner-only (0700
// directories, 0600 files), whatever it was made with: it holds the cluster
// CA's key and every client's mappings, and a directory made by someone else
// (systemd's StateDirectory makes 0755) or files from an older binary or a
// library that creates them 0644 would be readable by every local user.
// Files created later are kept owner-only by `ippool serve`'s umask. Other
// parts of the server may be writing in the data dir meanwhile (the
// tailnet's state replaces and removes its cache files), so a file gone
// by the time the walk reaches it is skipped.
func restrictDataDir(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path != dir {
			return nil
		}
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o600)
		switch {
		case d.IsDir():
			mode = 0o700
		case !d.Type().IsRegular():
			// Symlinks and the like: chmod would follow a link out of the
			// data dir.
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if info.Mode().Perm() == mode {
			return nil
		}
		if err := os.Chmod(path, mode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("making %s owner-only: %w", path, err)
		}
		return nil
	})
}

// saveConfig keeps the record's copy of the pool in step with the state.
func (n *Node) saveConfig(c pool.Config) {
	r := record{ID: n.cfg.ID, ClusterAddr: n.cfg.ClusterAddr, PoolConfig: &c}
	if err := n.writeRecord(r); err != nil {
		n.log.Warn("could not record the pool configuration", "err", err)
	}
	// No comparison with the flags here: the log replays every pool the
	// cluster ever had, and a change through the API is legitimate. The
	// flags are checked against the record at start and against the
	// cluster's pool when joining.
}
