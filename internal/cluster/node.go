// Package cluster replicates the pool state machine with hashicorp/raft: the
// durable log (raft-wal), snapshots, the transport between servers (one
// address, mutual TLS), forwarding writes to the leader with group commit,
// the read barrier (docs/design.md#s4-read-your-writes-the-read-barrier), and membership (bootstrap, join,
// removal, leadership transfer on shutdown).
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/ippool/ippool/internal/connlimit"
	"github.com/ippool/ippool/pool"
)

// Node is one running server.
type Node struct {
	// contact is, on the leader, since when each follower missed its
	// heartbeats (contact.go).
	contact lostContact
	cfg     Config
	log     *slog.Logger
	raft    *raft.Raft
	fsm     *fsm
	store   *wal.WAL
	meta    *metadb.BoltMetaDB
	snaps   *snapshotStore
	mux     *mux
	conns   *connlimit.Listener
	rpc     *rpcClient
	http    *http.Server
	// fwd streams this server's writes to the leader; fwdConns are the
	// streams other servers opened to this one.
	fwd      *forwarder
	fwdConns connSet

	origin  uint64
	seq     atomic.Uint64
	batcher *batcher
	reads   *readIndexer
	// lastRound is the newest read-index round that succeeded (current.go).
	lastRound atomic.Pointer[currentAsOf]

	// readyTerm is the term in which this server, as leader, has applied
	// everything before its own first entry: its commit index is current.
	readyTerm atomic.Uint64
	// settled is the highest index the FSM's state is known to hold
	// everything through although it applied less: the entries after the
	// FSM's were all internal (appliedThrough).
	settled atomic.Uint64
	// logScans counts onlyInternalEntries' reads of the log, for tests.
	logScans atomic.Uint64
	// clock is the cluster's time as this server knows it (clock.go).
	clock clockState
	// writes is, on the leader, the log entry version it writes
	// (quotas.go); leaderGained wakes its refresh on gaining leadership.
	writes       *entryWrites
	leaderGained chan struct{}

	lock     *os.File
	fatal    chan error
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Start opens the data dir, listens on the cluster address and starts Raft.
// It returns once the server is running; bootstrap or join continue in the
// background, and Fatal reports if they fail for good.
func Start(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, fatal: make(chan error, 1), stop: make(chan struct{}), writes: newEntryWrites(), leaderGained: make(chan struct{}, 1)}
	var b [8]byte
	rand.Read(b[:])
	n.origin = binary.LittleEndian.Uint64(b[:]) | 1

	if err := n.openDataDir(); err != nil {
		return nil, err
	}
	// Bound before anything is made in the data dir (a new server's own
	// CA): a server that cannot listen leaves no half-made state behind.
	ln, err := n.listen()
	if err != nil {
		n.closeAll()
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("--cluster-addr %s is in use by another program (another ippool serve?): stop it, or give this server another --cluster-addr: %w", cfg.ClusterAddr, err)
		}
		return nil, fmt.Errorf("listening on --cluster-addr %s: %w", cfg.ClusterAddr, err)
	}
	tlsMode, err := n.setupTLS()
	if err != nil {
		n.closeAll()
		ln.Close()
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			n.closeAll()
			ln.Close()
		}
	}()
	n.conns = connlimit.New(ln, cfg.MaxConns, cfg.MaxConnsPerSource)
	n.mux = newMux(n.conns, n.cfg.TLS, cfg.HandshakeTimeout, func(msg string, args ...any) { n.log.Warn(msg, args...) })
	if nw := cfg.Network; nw != nil {
		n.mux.dialer, n.mux.authorize = nw.Dial, nw.Authorize
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		n.mux.localAddr = &net.TCPAddr{IP: tcp.IP}
	}
	n.rpc = newRPCClient(n.mux, cfg.IdleTimeout)
	n.fwd = &forwarder{m: n.mux}

	if err := n.openLog(); err != nil {
		return nil, err
	}
	trans, err := n.newTransport(ln)
	if err != nil {
		return nil, err
	}
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
	n.raft, err = newRaft(n.raftConfig(), n.fsm, logs, n.store, n.snaps, trans)
	if err != nil {
		// At start Raft reads only the data dir: its stable store, its
		// snapshots (it tries each, newest first) and the log checked above.
		file, what := cfg.DataDir, "the Raft state"
		if strings.Contains(err.Error(), "snapshot") {
			file, what = filepath.Join(cfg.DataDir, "snapshots"), "every snapshot"
		}
		return nil, &DamagedDataError{DataDir: cfg.DataDir, File: file, What: what, Err: err}
	}
	n.serve(ln.Addr(), !hasState)
	ok = true
	n.log.Info("cluster server started", "id", cfg.ID, "cluster_addr", n.cfg.ClusterAddr, "tls", tlsMode, "restarted", hasState)
	return n, nil
}

// openLog opens the Raft log, checks every entry (logcheck.go), opens the
// snapshot store and makes the FSM.
func (n *Node) openLog() error {
	walDir := filepath.Join(n.cfg.DataDir, "raft")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return err
	}
	// Own the meta DB: a failed wal.Open leaves it open and locked, and a
	// restart in the same process must be able to open the data dir again.
	n.meta = &metadb.BoltMetaDB{}
	var err error
	n.store, err = openWAL(walDir, n.meta)
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("opening the Raft log in %s: %w", walDir, err)
	}
	if err != nil {
		return &DamagedDataError{DataDir: n.cfg.DataDir, File: walDir, What: "the Raft log (its segment files or meta.db)", Err: err}
	}
	if err := checkLog(n.store, n.cfg.DataDir, walDir); err != nil {
		return err
	}
	fss, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.DataDir, 3, newHCLog(n.log, "snapshot"))
	if err != nil {
		return err
	}
	n.snaps = &snapshotStore{SnapshotStore: fss}
	n.fsm = newFSM(n.log)
	n.fsm.snapshot = n.snaps
	n.fsm.onConfig = n.saveConfig
	n.fsm.badEntries = n.cfg.Metrics.BadEntry
	n.fsm.onDamaged = n.fail
	n.fsm.snapshotTook = n.cfg.Metrics.Snapshot
	n.fsm.spool = n.SpoolFile
	return nil
}

// newTransport is Raft's transport over the cluster address's mux. With
// port 0 the address other servers are told is the one the listener got.
func (n *Node) newTransport(ln net.Listener) (raft.Transport, error) {
	advertise, err := net.ResolveTCPAddr("tcp", n.cfg.ClusterAddr)
	if err != nil {
		return nil, err
	}
	if advertise.Port == 0 {
		advertise = ln.Addr().(*net.TCPAddr)
		n.cfg.ClusterAddr = advertise.String()
	}
	layer := &raftLayer{chanListener: newChanListener(n.mux, n.mux.raftCh, ln.Addr()), advertise: advertise}
	// The heartbeats' transport only dials: its listener is fed by nothing,
	// since every connection a peer opens reaches the main transport.
	beats := &raftLayer{chanListener: newChanListener(n.mux, make(chan net.Conn), ln.Addr()), advertise: advertise}
	return &heartbeatTransport{
		NetworkTransport: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  layer,
			MaxPool: 4,
			Timeout: 5 * time.Second,
			Logger:  newHCLog(n.log, "raft-net"),
		}),
		beats: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  beats,
			MaxPool: 2,
			Timeout: 5 * time.Second,
			Logger:  newHCLog(n.log, "raft-net-heartbeat"),
		}),
	}, nil
}

func (n *Node) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.ID)
	rc.HeartbeatTimeout = n.cfg.RaftTimeout
	rc.ElectionTimeout = n.cfg.RaftTimeout
	// The lease only makes a leader that hears from no quorum step down
	// (reads confirm leadership with a round of heartbeats, read.go), so
	// it may be the whole timeout: at half of it, a leader restoring 10M
	// mappings on a loaded machine missed 250 ms of heartbeat answers and
	// stepped down mid-restore (docs/scale.md).
	rc.LeaderLeaseTimeout = n.cfg.RaftTimeout
	// Followers learn the commit index from the next AppendEntries, sent
	// within one to two commit timeouts of the last: that bounds how long a
	// read barrier on a follower waits after a quiet write. A shorter one
	// costs an idle leader CPU in heartbeats, a longer one slows barriers;
	// this one is between the two.
	rc.CommitTimeout = 10 * time.Millisecond
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.Logger = newHCLog(n.log, "raft")
	return rc
}

// serve starts the server's goroutines: the cluster port's mux and its RPC
// and forwarding listeners, leadership, the batcher, the current-server rounds and holds,
// and bootstrap or join for a server with no state yet.
func (n *Node) serve(addr net.Addr, bootstrap bool) {
	n.batcher = newBatcher(n, forwardBatchSlots)
	n.reads = &readIndexer{fetch: n.fetchReadIndex, done: n.noteRound}
	// A peer sends a request as soon as it has a connection, and RPCs
	// other than restores (which set their own deadlines) are small.
	n.http = &http.Server{Handler: n.rpcHandler(), ReadHeaderTimeout: n.cfg.HandshakeTimeout,
		ReadTimeout: rpcTimeout, WriteTimeout: rpcTimeout, IdleTimeout: n.cfg.IdleTimeout}
	rpcLn := newChanListener(n.mux, n.mux.rpcCh, addr)
	n.goRun(func() { n.mux.serve() })
	n.goRun(func() { n.http.Serve(rpcLn) })
	fwdLn := newChanListener(n.mux, n.mux.fwdCh, addr)
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
	n.goRun(n.watchEntryVersion)
	n.goRun(func() { n.batcher.run(n.stop) })
	n.goRun(n.keepCurrent)
	n.goRun(n.watchContact)
	n.goRun(n.liftHolds)
	n.goRun(n.sampleClocks)
	n.goRun(n.tuneSnapshots)
	if bootstrap {
		n.goRun(n.bootstrapOrJoin)
	}
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

// ID returns the server's ID.
func (n *Node) ID() string { return n.cfg.ID }

// ConnStats counts the connections open on the cluster address and those
// refused by its caps.
func (n *Node) ConnStats() connlimit.Stats { return n.conns.Stats() }

// ClusterAddr returns the address other servers reach this one at.
func (n *Node) ClusterAddr() string { return n.cfg.ClusterAddr }

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
