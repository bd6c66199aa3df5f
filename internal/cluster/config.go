package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
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
	// Insecure runs plain TCP on the cluster address when TLS is nil and
	// the data dir holds no CA of its own. Without either, a server
	// starting a new cluster alone makes a CA of its own in the data dir
	// (autotls.go), and one that is to join others refuses to start.
	Insecure bool
	// Network, when set, carries the cluster port over another network
	// than the host's TCP (a tailnet), whose own identity replaces the
	// cluster CA: TLS is neither used nor made, and every accepted
	// connection must pass Network.Authorize.
	Network *Network

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
	// MaxClients bounds the clients the cluster holds: a new client past it
	// is refused with quota_exceeded. The leader puts its own in every
	// entry it appends, so give every server the same. 0 takes
	// DefaultMaxClients; -1 is no bound (0 after setDefaults, as in the
	// entry).
	MaxClients int
	// MaxMappings, MaxMappingsPerClient and MaxDomainBytes are the mapping
	// quotas (pool.Quotas), stamped by the leader like MaxClients once
	// every server reads log entry version 4. 0 takes the default
	// (DefaultMaxMappings and the others); -1 is no bound.
	MaxMappings          int
	MaxMappingsPerClient int
	MaxDomainBytes       int64
	// ClockOffset is added to this server's clock; for tests only, to
	// show that a server whose clock is wrong cannot move the cluster's.
	ClockOffset time.Duration

	// MaxConns and MaxConnsPerSource cap the connections open on the
	// cluster address, in all and from one IP address; one past a cap is
	// closed at accept. A server opens a few dozen to each peer at most
	// (Raft's pool and pipeline, RPCs, one forwarding stream), so the
	// defaults, 1024 and 128, leave room for a large cluster.
	MaxConns          int
	MaxConnsPerSource int
	// HandshakeTimeout bounds a new cluster connection's TLS handshake, its
	// protocol byte and its first request (an RPC's header, a forwarding
	// frame, Raft's first RPC): peers send them at once. Default 10s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a forwarding stream or an RPC connection that
	// carries nothing for this long; a follower redials when it next
	// writes. Default 2m.
	IdleTimeout time.Duration
	// MaxRestoreBytes bounds a snapshot restore that another server sends
	// this one to install as leader. Default 4 GiB.
	MaxRestoreBytes int64

	Logger *slog.Logger
	// Metrics receives counts; nil discards them.
	Metrics Metrics
}

// Defaults of Config, and of serve's flags that set it.
const (
	DefaultAddr              = "127.0.0.1:7481"
	DefaultRaftTimeout       = 500 * time.Millisecond
	DefaultSnapshotThreshold = 16384
	DefaultSnapshotInterval  = 30 * time.Second
	DefaultTrailingLogs      = 10240
	DefaultWriteTimeout      = 4 * time.Second
	DefaultMaxBatch          = 1024
	DefaultMaxConns          = 1024
	DefaultMaxConnsPerSource = 128
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
)

// DefaultPool is the pool of a cluster bootstrapped without --pool: the
// 198.18.0.0/15 benchmarking block (RFC 2544), which fake-IP DNS tools
// commonly use because it is never routed on the internet.
func DefaultPool() pool.Config {
	c, _ := pool.ParseConfig("198.18.0.0/15", "", pool.DefaultLifetime)
	return c
}

// quotaBound is a quota as Config gives it: 0 the default, -1 none (0 in
// a log entry).
func quotaBound(v, def, limit int64, flag string) (int64, error) {
	switch {
	case v == 0:
		return def, nil
	case v == -1:
		return 0, nil
	case v < 0 || v > limit:
		return 0, fmt.Errorf("cluster: %s %d is outside 1 to %d (or -1: no bound)", flag, v, limit)
	}
	return v, nil
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
	if err := c.checkNetwork(); err != nil {
		return err
	}
	if err := c.checkTLS(); err != nil {
		return err
	}
	if c.RaftTimeout == 0 {
		c.RaftTimeout = DefaultRaftTimeout
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	var clients, mappings, perClient int64
	if clients, err = quotaBound(int64(c.MaxClients), DefaultMaxClients, pool.MaxClientsLimit, pool.QuotaFlagClients); err != nil {
		return err
	}
	c.MaxClients = int(clients)
	if mappings, err = quotaBound(int64(c.MaxMappings), DefaultMaxMappings, pool.MaxMappingsLimit, pool.QuotaFlagMappings); err != nil {
		return err
	}
	if perClient, err = quotaBound(int64(c.MaxMappingsPerClient), DefaultMaxMappingsPerClient, pool.MaxMappingsLimit, pool.QuotaFlagMappingsPerClient); err != nil {
		return err
	}
	if c.MaxDomainBytes, err = quotaBound(c.MaxDomainBytes, DefaultMaxDomainBytes, pool.MaxDomainBytesLimit, pool.QuotaFlagDomainBytes); err != nil {
		return err
	}
	c.MaxMappings, c.MaxMappingsPerClient = int(mappings), int(perClient)
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxConnsPerSource == 0 {
		c.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxRestoreBytes == 0 {
		c.MaxRestoreBytes = wire.DefaultMaxRestoreBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	return nil
}
