package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/buildinfo"
	"github.com/ippool/ippool/pool"
)

// Membership: forming the cluster (bootstrap or join), following
// leadership, and the operations that must run on the leader (removing a
// server, restoring a snapshot).

func (n *Node) info() Info {
	lid, laddr := n.Leader()
	inf := Info{ID: n.cfg.ID, Addr: n.cfg.ClusterAddr, LeaderID: lid, LeaderAddr: laddr}
	if c, ok := n.PoolConfig(); ok {
		inf.Pool = &c
	} else {
		inf.Pool = n.cfg.Pool
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			inf.Peers = append(inf.Peers, Peer{ID: string(s.ID), Addr: string(s.Address)})
		}
	}
	inf.Bootstrapped = len(inf.Peers) > 0
	bi := buildinfo.Get()
	inf.Version, inf.EntryVersions, inf.WritesEntryVersion = bi.Version, bi.EntryVersions, n.writesEntryVersion()
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
				// Another leader may admit an older server meanwhile: what
				// this one knew is not to be trusted when it leads again.
				n.writes.reset()
				continue
			}
			term := n.raft.CurrentTerm()
			if err := n.leaderBarrier(); err != nil {
				n.log.Warn("leader barrier failed", "err", err)
				continue
			}
			n.readyTerm.Store(term)
			n.log.Info("this server is the leader", "term", term)
			select {
			case n.leaderGained <- struct{}{}:
			default:
			}
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

// bootstrapOrJoin makes a new server part of a cluster.
func (n *Node) bootstrapOrJoin() {
	self := raft.Server{ID: raft.ServerID(n.cfg.ID), Address: raft.ServerAddress(n.cfg.ClusterAddr), Suffrage: raft.Voter}
	if len(n.cfg.Join) == 0 && (!n.cfg.joinsByDiscovery() || n.cfg.BootstrapExpect <= 1) {
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
			n.log.Info("waiting to join the cluster", "join", n.joinAddrs(), "err", err)
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
// many new servers are known they bootstrap together with the same list,
// so simultaneous starts form exactly one cluster.
func (n *Node) tryJoin(self raft.Server) (bool, error) {
	if f := n.raft.GetConfiguration(); f.Error() == nil && len(f.Configuration().Servers) > 0 {
		// Another server's leader already replicated a configuration to us.
		return true, nil
	}
	known := map[string]string{n.cfg.ID: n.cfg.ClusterAddr}
	var lastErr error
	var leaderAddr string
	for _, addr := range n.joinAddrs() {
		if addr == n.cfg.ClusterAddr {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var inf Info
		err := n.rpc.call(ctx, addr, rpcInfo, nil, &inf)
		cancel()
		if errors.Is(err, pool.ErrInvalidConfig) {
			// Its pool configuration does not parse: no retry fixes that.
			err = fmt.Errorf("server at %s answered with a pool configuration that does not parse (%v); this server has %v", addr, err, n.cfg.Pool)
			n.fail(err)
			return true, err
		}
		if err != nil {
			lastErr = err
			continue
		}
		if err := n.comparePool(inf); err != nil {
			n.fail(err)
			return true, err
		}
		if inf.Bootstrapped && inf.WritesEntryVersion > 0 {
			if err := checkCanRead(n.cfg.ID, buildinfo.Get().EntryVersions, inf.WritesEntryVersion, buildinfo.Version); err != nil {
				err = fmt.Errorf("server %s (ippool %s) answered that its cluster writes log entry version %d, and this build (%s) reads versions %d to %d: it does not join, since it could not follow the log; run the cluster's release here", inf.ID, inf.Version, inf.WritesEntryVersion, buildinfo.Version, pool.OldestEntryVersion, pool.EntryVersion)
				n.fail(err)
				return true, err
			}
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

// comparePool refuses to join a server whose pool differs from the flags.
// A peer whose answer does not decode never gets here: the RPC fails, and
// with a pool configuration that does not parse, that is final (tryJoin).
func (n *Node) comparePool(inf Info) error {
	if n.cfg.Pool == nil || inf.Pool == nil || inf.Pool.Equal(*n.cfg.Pool) {
		return nil
	}
	return fmt.Errorf("server %s has %s, but this server was started with %s; give every server the same --pool, --exclude and --lifetime", inf.ID, inf.Pool, *n.cfg.Pool)
}

func (n *Node) joinVia(leaderAddr string) (bool, error) {
	bi := buildinfo.Get()
	req := joinRequest{ID: n.cfg.ID, Addr: n.cfg.ClusterAddr, Pool: n.cfg.Pool, Version: bi.Version, EntryVersions: bi.EntryVersions}
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

// leaderBarrier waits for a Raft barrier, or until the server stops.
// Raft's applyCh is buffered (BatchApplyCh), and a barrier enqueued while
// Raft shuts down (Barrier's select may take the free buffer slot over
// the closed shutdown channel) is never answered: waiting on it alone
// would hang Shutdown, which waits for this goroutine.
func (n *Node) leaderBarrier() error {
	return n.await(n.raft.Barrier(n.cfg.WriteTimeout))
}

// await waits for a Raft future, or for this server to stop. Raft's apply
// channel is buffered, so a future enqueued as Raft shuts down may never be
// answered; without the stop case its waiter would hold Shutdown forever
// (seen with barriers and with VerifyLeader in the cluster tests).
func (n *Node) await(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-n.stop:
		return errShutdown
	}
}

// removeLocal is RemoveServer's leader side: it runs on the leader only
// (RemoveServer and the removal RPC bring it there).
func (n *Node) removeLocal(ctx context.Context, id string) error {
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
	// Raft answers the future once the new configuration is committed and
	// applied, which needs the other voters: while they do not answer and
	// this server still holds its lease it would wait without end, so the
	// wait is bounded by ctx (the removal may still be committed later).
	rf := n.raft.RemoveServer(raft.ServerID(id), 0, timeLeft(ctx, n.cfg.WriteTimeout))
	done := make(chan error, 1)
	go func() { done <- rf.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return applyError(err)
		}
		return nil
	case <-ctx.Done():
		return errRetry{ctx.Err()}
	case <-n.stop:
		return errShutdown
	}
}

func (n *Node) hasPeers() bool {
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 1
}

// RemoveServer takes a server out of the cluster, through the leader,
// retrying across leader changes until ctx's deadline, or WriteTimeout when
// ctx has none (the HTTP API's has none).
//
// Removing a dead leader is when it is most needed, and then this server
// may still follow the dead one: the e2e tailnet test removed a SIGKILLed
// leader a second after the kill. A tailnet (like any path that drops
// packets rather than refusing them) never resets the connections to a
// dead node, so an RPC to it over a pooled connection waited for an answer
// forever, with nothing to end it (TestRemoveDeadLeaderThroughSurvivor).
// So each attempt has its own short deadline, and the next one asks again
// who leads.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.WriteTimeout)
		defer cancel()
	}
	body, _ := json.Marshal(map[string]string{"id": id})
	backoff := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		var err error
		remote := false
		if n.IsLeader() {
			err = n.removeLocal(ctx, id)
		} else if _, addr := n.Leader(); addr != "" {
			remote = true
			actx, cancel := context.WithTimeout(ctx, n.leaderCallTimeout())
			err = n.rpc.call(actx, addr, rpcRemove, body, &struct{}{})
			cancel()
		} else {
			err = errRetry{pool.Errorf(pool.CodeNoLeader, "no leader is known to remove the server through")}
		}
		if err == nil {
			return nil
		}
		if attempt > 0 && errors.Is(err, pool.ErrNotFound) {
			// An earlier attempt removed it, and its answer was lost.
			return nil
		}
		if !retryable(err, remote) {
			var re *rpcError
			if errors.As(err, &re) {
				return &pool.Error{Code: re.Code, Msg: re.Message}
			}
			return err
		}
		select {
		case <-ctx.Done():
			return noQuorum(fmt.Errorf("removing server %s: %w", id, unwrapRetry(err)))
		case <-n.stop:
			return errShutdown
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// leaderCallTimeout bounds one attempt of a request to the leader that is
// retried (RemoveServer): long enough for a commit round on a slow network,
// short enough that a leader that vanished without a reset costs a retry,
// not the whole write timeout.
func (n *Node) leaderCallTimeout() time.Duration {
	return max(time.Second, 2*n.cfg.RaftTimeout)
}

// retryable reports whether another attempt at a request to the leader may
// succeed: the server asked no longer leads, none is known, or a request
// sent to another server got no answer (a dead or unreachable leader).
func retryable(err error, remote bool) bool {
	var re *rpcError
	if errors.As(err, &re) {
		return re.Retry || re.Code == pool.CodeNoLeader
	}
	if errors.As(err, new(errRetry)) {
		return true
	}
	var pe *pool.Error
	if errors.As(err, &pe) {
		return pe.Code == pool.CodeNoLeader
	}
	// From another server, the rest are transport errors: refused, reset,
	// timed out, or the attempt's deadline.
	return remote
}

func unwrapRetry(err error) error {
	var r errRetry
	if errors.As(err, &r) {
		return r.err
	}
	return err
}

// callLeader sends a request that only the leader may serve, once. Without
// a deadline in ctx it gets WriteTimeout: a leader that died silently
// would otherwise hold the caller forever (see RemoveServer).
func (n *Node) callLeader(ctx context.Context, path string, body []byte, what string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.WriteTimeout)
		defer cancel()
	}
	return n.onLeader(what, func(addr string) error {
		return n.rpc.call(ctx, addr, path, body, &struct{}{})
	})
}

// onLeader runs call with the leader's address and turns the leader's
// refusal into the error it names.
func (n *Node) onLeader(what string, call func(addr string) error) error {
	_, addr := n.Leader()
	if addr == "" {
		return pool.Errorf(pool.CodeNoLeader, "no leader is known to %s through", what)
	}
	err := call(addr)
	var re *rpcError
	if errors.As(err, &re) {
		return &pool.Error{Code: re.Code, Msg: re.Message}
	}
	return err
}
