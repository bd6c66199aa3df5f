// Package cluster replicates the pool state machine with hashicorp/raft: the
// durable log (raft-wal), snapshots, the transport between servers (one
// address, mutual TLS), forwarding writes to the leader with group commit,
// the read barrier of DESIGN.md S4, and membership (bootstrap, join,
// removal, leadership transfer on shutdown).
package cluster

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/ippool/ippool/pool"
)

// Config configures one server.
type Config struct {
	// ID names the server in the cluster; it must not change across restarts.
	ID string
	// DataDir holds the Raft log, snapshots and the server's record.
	DataDir string
	// ClusterAddr is host:port for all server-to-server traffic; it is also
	// the address other servers dial, so it must not be a wildcard.
	ClusterAddr string
	// Join lists cluster addresses of other servers.
	Join []string
	// BootstrapExpect > 1 makes the server wait until it has found that many
	// servers (itself included) through Join, then bootstrap them together.
	// 0 or 1 with no Join bootstraps a single-server cluster.
	BootstrapExpect int
	// Pool is the pool this server was told to serve; nil means "whatever
	// the cluster has" (or DefaultPool when it bootstraps a new one).
	Pool *pool.Config
	// TLS, when set, is used for mutual TLS on the cluster address.
	TLS *tls.Config
	// Insecure allows plain TCP on non-loopback cluster addresses.
	Insecure bool

	// RaftTimeout is the heartbeat and election timeout. The LAN default of
	// 500ms gives sub-second failover; raise it on slow or lossy networks.
	RaftTimeout time.Duration
	// SnapshotThreshold and SnapshotInterval control log compaction:
	// Raft checks every interval whether that many entries were written
	// since the last snapshot.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs are kept after a snapshot so a lagging follower can catch
	// up from the log instead of a full snapshot.
	TrailingLogs uint64
	// WriteTimeout bounds a write, retries included; past it the write fails
	// with no_quorum.
	WriteTimeout time.Duration
	// MaxBatch caps the ops in one log entry.
	MaxBatch int
	// LinearizableReads turns local answers off: every read that would be
	// answered from local state goes through the read barrier.
	LinearizableReads bool
	// StaleBound (B) is how old this server's knowledge of the leader's
	// commit index may be when it answers from local state; it is derived
	// from RaftTimeout (fresh.go), not set.
	StaleBound time.Duration

	Logger *slog.Logger
	// Metrics receives counts; nil discards them.
	Metrics Metrics
}

// DefaultPool is the pool of a cluster bootstrapped without --pool: the
// 198.18.0.0/15 benchmarking block (RFC 2544), which fake-IP DNS tools
// commonly use because it is never routed on the internet.
func DefaultPool() pool.Config {
	c, _ := pool.ParseConfig("198.18.0.0/15", "", pool.DefaultLifetime)
	return c
}

func (c *Config) setDefaults() error {
	if c.ID == "" {
		return errors.New("cluster: a server ID is required")
	}
	if c.DataDir == "" {
		return errors.New("cluster: a data dir is required")
	}
	host, _, err := net.SplitHostPort(c.ClusterAddr)
	if err != nil {
		return fmt.Errorf("cluster address %q: %w", c.ClusterAddr, err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("cluster address %q is a wildcard; give the address other servers reach this one at", c.ClusterAddr)
	}
	if c.TLS == nil && !c.Insecure {
		for _, a := range append([]string{c.ClusterAddr}, c.Join...) {
			if !isLoopback(a) {
				return fmt.Errorf("cluster address %s is not loopback: give the TLS flags (ippool tls init makes the files) or --insecure to run without TLS", a)
			}
		}
	}
	if c.RaftTimeout == 0 {
		c.RaftTimeout = 500 * time.Millisecond
	}
	c.StaleBound = StaleBound(c.RaftTimeout)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 16384
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 30 * time.Second
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 4 * time.Second
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 1024
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	return nil
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Node is one running server.
type Node struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *fsm
	store *wal.WAL
	meta  *metadb.BoltMetaDB
	snaps *snapshotStore
	mux   *mux
	rpc   *rpcClient
	http  *http.Server
	// fwd streams this server's writes to the leader; fwdConns are the
	// streams other servers opened to this one.
	fwd      *forwarder
	fwdConns connSet

	origin  uint64
	seq     atomic.Uint64
	batcher *batcher
	reads   *readIndexer
	// fresh is the newest read-index round that succeeded (fresh.go).
	fresh atomic.Pointer[freshness]

	// readyTerm is the term in which this server, as leader, has applied
	// everything before its own first entry: its commit index is current.
	readyTerm atomic.Uint64

	lock     *os.File
	fatal    chan error
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// record is what a data dir remembers of its server, to refuse a restart
// with flags that contradict it.
type record struct {
	ID          string `json:"id"`
	ClusterAddr string `json:"cluster_addr"`
	Pool        string `json:"pool,omitempty"`
	Exclude     string `json:"exclude,omitempty"`
	Lifetime    string `json:"lifetime,omitempty"`
}

const recordFile = "server.json"

// Start opens the data dir, listens on the cluster address and starts Raft.
// It returns once the server is running; bootstrap or join continue in the
// background, and Fatal reports if they fail for good.
func Start(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, fatal: make(chan error, 1), stop: make(chan struct{})}
	var b [8]byte
	rand.Read(b[:])
	n.origin = binary.LittleEndian.Uint64(b[:]) | 1

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n.lock = lock
	if err := n.checkRecord(); err != nil {
		lock.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.ClusterAddr)
	if err != nil {
		return nil, fmt.Errorf("listening on the cluster address: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			n.closeAll()
			ln.Close()
		}
	}()
	n.mux = newMux(ln, cfg.TLS, func(msg string, args ...any) { n.log.Warn(msg, args...) })
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		n.mux.localAddr = &net.TCPAddr{IP: tcp.IP}
	}
	n.rpc = newRPCClient(n.mux)
	n.fwd = &forwarder{m: n.mux}

	walDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, err
	}
	// Own the meta DB: a failed wal.Open leaves it open and locked, and a
	// restart in the same process must be able to open the data dir again.
	n.meta = &metadb.BoltMetaDB{}
	n.store, err = openWAL(walDir, n.meta)
	if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("opening the Raft log in %s: %w", walDir, err)
	}
	if err != nil {
		return nil, &DamagedDataError{DataDir: cfg.DataDir, File: walDir, What: "the Raft log (its segment files or meta.db)", Err: err}
	}
	if err := checkLog(n.store, cfg.DataDir, walDir); err != nil {
		return nil, err
	}
	fss, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, newHCLog(n.log, "snapshot"))
	if err != nil {
		return nil, err
	}
	n.snaps = &snapshotStore{SnapshotStore: fss}
	n.fsm = newFSM(n.log)
	n.fsm.snapshot = n.snaps
	n.fsm.onConfig = n.saveConfig
	n.fsm.badEntries = cfg.Metrics.BadEntry
	n.fsm.onDamaged = n.fail
	n.fsm.snapshotTook = cfg.Metrics.Snapshot

	advertise, err := net.ResolveTCPAddr("tcp", cfg.ClusterAddr)
	if err != nil {
		return nil, err
	}
	if advertise.Port == 0 {
		advertise = ln.Addr().(*net.TCPAddr)
		n.cfg.ClusterAddr = advertise.String()
	}
	layer := &raftLayer{chanListener: newChanListener(n.mux, n.mux.raftCh, ln.Addr()), advertise: advertise}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 4,
		Timeout: 5 * time.Second,
		Logger:  newHCLog(n.log, "raft-net"),
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.RaftTimeout
	rc.ElectionTimeout = cfg.RaftTimeout
	rc.LeaderLeaseTimeout = cfg.RaftTimeout / 2
	// Followers learn the commit index from the next AppendEntries, sent
	// within one to two commit timeouts of the last: that bounds how long a
	// read barrier on a follower waits after a quiet write. Measured on a
	// 3-server cluster here: 5ms costs an idle leader 12% of a core, 20ms
	// 5% but 20-40ms barriers; 10ms is the middle.
	rc.CommitTimeout = 10 * time.Millisecond
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.Logger = newHCLog(n.log, "raft")

	hasState, err := raft.HasExistingState(n.store, n.store, n.snaps)
	if err != nil {
		return nil, err
	}
	// Raft reads every entry back right after writing it, to replicate it
	// (leader) and to apply it (everyone); the cache answers those reads
	// from memory instead of a pread per entry.
	logs, err := raft.NewLogCache(4096, n.store)
	if err != nil {
		return nil, err
	}
	n.raft, err = newRaft(rc, n.fsm, logs, n.store, n.snaps, trans)
	if err != nil {
		// At start Raft reads only the data dir: its stable store, its
		// snapshots (it tries each, newest first) and the log checked above.
		file, what := cfg.DataDir, "the Raft state"
		if strings.Contains(err.Error(), "snapshot") {
			file, what = filepath.Join(cfg.DataDir, "snapshots"), "every snapshot"
		}
		return nil, &DamagedDataError{DataDir: cfg.DataDir, File: file, What: what, Err: err}
	}
	n.batcher = newBatcher(n, forwardBatchSlots)
	n.reads = &readIndexer{fetch: n.fetchReadIndex, fresh: n.noteFresh}
	n.http = &http.Server{Handler: n.rpcHandler(), ReadHeaderTimeout: 10 * time.Second}
	rpcLn := newChanListener(n.mux, n.mux.rpcCh, ln.Addr())
	n.goRun(func() { n.mux.serve() })
	n.goRun(func() { n.http.Serve(rpcLn) })
	fwdLn := newChanListener(n.mux, n.mux.fwdCh, ln.Addr())
	n.goRun(func() {
		for {
			c, err := fwdLn.Accept()
			if err != nil {
				return
			}
			go n.serveForward(c)
		}
	})
	n.goRun(n.watchLeadership)
	n.goRun(func() { n.batcher.run(n.stop) })
	n.goRun(n.keepFresh)
	n.goRun(n.liftHolds)
	if !hasState {
		n.goRun(n.bootstrapOrJoin)
	}
	ok = true
	n.log.Info("cluster server started", "id", cfg.ID, "cluster_addr", n.cfg.ClusterAddr, "tls", cfg.TLS != nil, "restarted", hasState)
	return n, nil
}

func (n *Node) goRun(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

// Fatal delivers an error that stops this server for good: a configuration
// that conflicts with the cluster's, or a committed log entry that its disk
// damaged.
func (n *Node) Fatal() <-chan error { return n.fatal }

func (n *Node) fail(err error) {
	select {
	case n.fatal <- err:
	default:
	}
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
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s is corrupt (%v); it records this server's identity, so restore it or start with an empty data dir", path, err)
	}
	if r.ID != n.cfg.ID {
		return fmt.Errorf("data dir %s belongs to server %q, but --id is %q", n.cfg.DataDir, r.ID, n.cfg.ID)
	}
	if r.ClusterAddr != n.cfg.ClusterAddr {
		return fmt.Errorf("data dir %s was used with --cluster-addr %s, but this start has %s; the other servers know it by the old address", n.cfg.DataDir, r.ClusterAddr, n.cfg.ClusterAddr)
	}
	if n.cfg.Pool != nil && r.Pool != "" {
		stored, err := pool.ParseConfig(r.Pool, r.Exclude, parseDurationOr(r.Lifetime, pool.DefaultLifetime))
		if err == nil && !stored.Equal(*n.cfg.Pool) {
			return fmt.Errorf("data dir %s holds %s, but the flags say %s; start without --pool, --exclude and --lifetime to keep the stored pool, or change the pool with `ippool pool set`", n.cfg.DataDir, stored, *n.cfg.Pool)
		}
	}
	return nil
}

func (n *Node) writeRecord(r record) error {
	b, _ := json.MarshalIndent(r, "", "  ")
	path := filepath.Join(n.cfg.DataDir, recordFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// saveConfig keeps the record's copy of the pool in step with the state.
func (n *Node) saveConfig(c pool.Config) {
	r := record{ID: n.cfg.ID, ClusterAddr: n.cfg.ClusterAddr, Pool: c.PoolString(), Exclude: c.ExcludeString(), Lifetime: c.Lifetime.String()}
	if err := n.writeRecord(r); err != nil {
		n.log.Warn("could not record the pool configuration", "err", err)
	}
	// No comparison with the flags here: the log replays every pool the
	// cluster ever had, and a change through the API is legitimate. The
	// flags are checked against the record at start and against the
	// cluster's pool when joining.
}

// ID returns the server's ID.
func (n *Node) ID() string { return n.cfg.ID }

// ClusterAddr returns the address other servers reach this one at.
func (n *Node) ClusterAddr() string { return n.cfg.ClusterAddr }

// Raft exposes the Raft instance for status and metrics.
func (n *Node) Raft() *raft.Raft { return n.raft }

// Read runs fn with the local state under a read lock. The state may lag the
// leader's; see ReadBarrier.
func (n *Node) Read(fn func(s *pool.State)) { n.fsm.read(fn) }

// PoolConfig returns the replicated pool configuration.
func (n *Node) PoolConfig() (pool.Config, bool) {
	var c pool.Config
	var ok bool
	n.fsm.read(func(s *pool.State) { c, ok = s.Config() })
	return c, ok
}

// IsLeader reports whether this server is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's ID and cluster address, empty when unknown.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// NextRequestID returns a request ID unique to this process.
func (n *Node) NextRequestID() pool.RequestID {
	return pool.RequestID{Origin: n.origin, Seq: n.seq.Add(1)}
}

func (n *Node) info() Info {
	lid, laddr := n.Leader()
	inf := Info{ID: n.cfg.ID, Addr: n.cfg.ClusterAddr, LeaderID: lid, LeaderAddr: laddr}
	if c, ok := n.PoolConfig(); ok {
		inf.Pool, inf.Exclude, inf.Lifetime = c.PoolString(), c.ExcludeString(), c.Lifetime.String()
	} else if n.cfg.Pool != nil {
		inf.Pool, inf.Exclude, inf.Lifetime = n.cfg.Pool.PoolString(), n.cfg.Pool.ExcludeString(), n.cfg.Pool.Lifetime.String()
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			inf.Peers = append(inf.Peers, Peer{ID: string(s.ID), Addr: string(s.Address)})
		}
	}
	inf.Bootstrapped = len(inf.Peers) > 0
	return inf
}

// watchLeadership readies a new leader: a barrier makes sure everything of
// earlier terms is applied, so its commit index can serve read barriers, and
// a cluster without a pool gets one.
func (n *Node) watchLeadership() {
	for {
		select {
		case <-n.stop:
			return
		case isLeader := <-n.raft.LeaderCh():
			n.cfg.Metrics.LeadershipChange(isLeader)
			if !isLeader {
				continue
			}
			term := n.raft.CurrentTerm()
			if err := n.raft.Barrier(n.cfg.WriteTimeout).Error(); err != nil {
				n.log.Warn("leader barrier failed", "err", err)
				continue
			}
			n.readyTerm.Store(term)
			n.log.Info("this server is the leader", "term", term)
			if _, ok := n.PoolConfig(); !ok {
				cfg := DefaultPool()
				if n.cfg.Pool != nil {
					cfg = *n.cfg.Pool
				}
				op := pool.Op{Kind: pool.OpSetConfig, ID: n.NextRequestID(), Time: time.Now(), Config: cfg}
				ctx, cancel := context.WithTimeout(context.Background(), n.cfg.WriteTimeout)
				res, err := n.Propose(ctx, []pool.Op{op})
				cancel()
				if err == nil {
					err = res[0].Err
				}
				if err != nil {
					n.log.Error("could not set the pool configuration", "err", err)
				} else {
					n.log.Info("pool configured", "pool", cfg.String())
				}
			}
		}
	}
}

// bootstrapOrJoin makes a fresh server part of a cluster.
func (n *Node) bootstrapOrJoin() {
	self := raft.Server{ID: raft.ServerID(n.cfg.ID), Address: raft.ServerAddress(n.cfg.ClusterAddr), Suffrage: raft.Voter}
	if len(n.cfg.Join) == 0 {
		if n.cfg.BootstrapExpect > 1 {
			n.fail(fmt.Errorf("--bootstrap-expect %d needs --join with the other servers' cluster addresses", n.cfg.BootstrapExpect))
			return
		}
		n.bootstrap([]raft.Server{self})
		return
	}
	retry := time.NewTicker(250 * time.Millisecond)
	defer retry.Stop()
	for attempt := 0; ; attempt++ {
		done, err := n.tryJoin(self)
		if done {
			return
		}
		if err != nil && attempt%20 == 0 {
			n.log.Info("waiting to join the cluster", "join", n.cfg.Join, "err", err)
		}
		select {
		case <-n.stop:
			return
		case <-retry.C:
		}
	}
}

func (n *Node) bootstrap(servers []raft.Server) {
	err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		n.fail(fmt.Errorf("bootstrapping the cluster: %w", err))
		return
	}
	n.log.Info("bootstrapped the cluster", "servers", len(servers))
}

// tryJoin makes one round of contact with the join addresses. A running
// cluster is joined through its leader; with BootstrapExpect, once that
// many fresh servers are known they bootstrap together with the same list,
// so simultaneous starts form exactly one cluster.
func (n *Node) tryJoin(self raft.Server) (bool, error) {
	if f := n.raft.GetConfiguration(); f.Error() == nil && len(f.Configuration().Servers) > 0 {
		// Another server's leader already replicated a configuration to us.
		return true, nil
	}
	known := map[string]string{n.cfg.ID: n.cfg.ClusterAddr}
	var lastErr error
	var leaderAddr string
	for _, addr := range n.cfg.Join {
		if addr == n.cfg.ClusterAddr {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var inf Info
		err := n.rpc.call(ctx, addr, rpcInfo, nil, &inf)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		if err := n.comparePool(inf); err != nil {
			n.fail(err)
			return true, err
		}
		if inf.Bootstrapped && inf.LeaderAddr != "" {
			leaderAddr = inf.LeaderAddr
		}
		known[inf.ID] = inf.Addr
		for _, p := range inf.Peers {
			known[p.ID] = p.Addr
		}
	}
	if leaderAddr != "" {
		return n.joinVia(leaderAddr)
	}
	if n.cfg.BootstrapExpect > 1 && len(known) >= n.cfg.BootstrapExpect {
		var servers []raft.Server
		for id, addr := range known {
			servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(addr), Suffrage: raft.Voter})
		}
		slices.SortFunc(servers, func(a, b raft.Server) int { return cmp.Compare(string(a.ID), string(b.ID)) })
		n.bootstrap(servers)
		return true, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("found %d of %d servers", len(known), max(n.cfg.BootstrapExpect, 2))
	}
	return false, lastErr
}

func (n *Node) comparePool(inf Info) error {
	if n.cfg.Pool == nil || inf.Pool == "" {
		return nil
	}
	theirs, err := pool.ParseConfig(inf.Pool, inf.Exclude, parseDurationOr(inf.Lifetime, pool.DefaultLifetime))
	if err != nil || theirs.Equal(*n.cfg.Pool) {
		return nil
	}
	return fmt.Errorf("server %s has %s, but this server was started with %s; give every server the same --pool, --exclude and --lifetime", inf.ID, theirs, *n.cfg.Pool)
}

func (n *Node) joinVia(leaderAddr string) (bool, error) {
	req := joinRequest{ID: n.cfg.ID, Addr: n.cfg.ClusterAddr}
	if n.cfg.Pool != nil {
		req.Pool, req.Exclude, req.Lifetime = n.cfg.Pool.PoolString(), n.cfg.Pool.ExcludeString(), n.cfg.Pool.Lifetime.String()
	}
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.WriteTimeout)
	defer cancel()
	var inf Info
	err := n.rpc.call(ctx, leaderAddr, rpcJoin, body, &inf)
	var re *rpcError
	if errors.As(err, &re) && re.Code == pool.CodeInvalidConfig {
		n.fail(re)
		return true, re
	}
	if err != nil {
		return false, err
	}
	n.log.Info("joined the cluster", "leader", leaderAddr)
	return true, nil
}

// Remove takes a server out of the cluster; it must be called on the leader
// (the HTTP layer forwards).
func (n *Node) Remove(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return pool.Errorf(pool.CodeNoLeader, "removing a server must go through the leader")
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	found := false
	for _, s := range f.Configuration().Servers {
		found = found || s.ID == raft.ServerID(id)
	}
	if !found {
		return pool.Errorf(pool.CodeNotFound, "no server %q in the cluster", id)
	}
	return n.raft.RemoveServer(raft.ServerID(id), 0, timeLeft(ctx, n.cfg.WriteTimeout)).Error()
}

func timeLeft(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return def
}

// Shutdown stops the server. A leader first hands leadership to a follower,
// so writes pause for a round trip rather than an election timeout.
func (n *Node) Shutdown() error {
	var err error
	n.stopOnce.Do(func() {
		if n.raft != nil && n.IsLeader() && n.hasPeers() {
			if terr := n.raft.LeadershipTransfer().Error(); terr != nil {
				n.log.Warn("leadership transfer failed", "err", terr)
			} else {
				n.log.Info("handed leadership over before stopping")
			}
		}
		close(n.stop)
		if n.raft != nil {
			err = n.raft.Shutdown().Error()
		}
		n.closeAll()
		n.wg.Wait()
	})
	return err
}

func (n *Node) hasPeers() bool {
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 1
}

func (n *Node) closeAll() {
	if n.mux != nil {
		n.mux.close()
	}
	if n.http != nil {
		n.http.Close()
	}
	if n.rpc != nil {
		n.rpc.close()
	}
	if n.fwd != nil {
		n.fwd.close()
	}
	n.fwdConns.closeAll()
	if n.store != nil {
		n.store.Close()
	}
	if n.meta != nil {
		n.meta.Close()
	}
	if n.lock != nil {
		n.lock.Close()
	}
}

// Restore replaces the cluster's state with a snapshot, through the leader:
// Raft installs it at a new index and ships it to every follower.
func (n *Node) Restore(ctx context.Context, snapshot []byte) error {
	if !n.IsLeader() {
		return n.callLeader(ctx, rpcRestore, snapshot, "restore")
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(len(snapshot))}
	return n.raft.Restore(meta, bytes.NewReader(snapshot), timeLeft(ctx, time.Minute))
}

// RemoveServer takes a server out of the cluster, through the leader.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if n.IsLeader() {
		return n.Remove(ctx, id)
	}
	body, _ := json.Marshal(map[string]string{"id": id})
	return n.callLeader(ctx, rpcRemove, body, "remove the server")
}

// callLeader sends a request that only the leader may serve.
func (n *Node) callLeader(ctx context.Context, path string, body []byte, what string) error {
	_, addr := n.Leader()
	if addr == "" {
		return pool.Errorf(pool.CodeNoLeader, "no leader is known to %s through", what)
	}
	var out struct{}
	err := n.rpc.call(ctx, addr, path, body, &out)
	var re *rpcError
	if errors.As(err, &re) {
		return &pool.Error{Code: re.Code, Msg: re.Message}
	}
	return err
}
