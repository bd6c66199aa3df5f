package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/alecthomas/kong"
	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/ca"
	"github.com/ippool/ippool/internal/cluster"
	"github.com/ippool/ippool/internal/dnsfront"
	"github.com/ippool/ippool/internal/httpapi"
	"github.com/ippool/ippool/internal/server"
	"github.com/ippool/ippool/internal/service"
	"github.com/ippool/ippool/pool"
)

// ServeCmd runs a server. With no flags it is a single-server cluster on
// loopback with its state in ./ippool-data; every flag can also be set as
// IPPOOL_<NAME> in the environment.
type ServeCmd struct {
	Config kong.ConfigFlag `help:"A JSON file of settings: serve's flag names with underscores as keys, like {\"http_addr\": \"0.0.0.0:7480\", \"join\": [\"10.0.0.2:7481\"]}; flags and IPPOOL_<NAME> variables override it." type:"existingfile" placeholder:"FILE" group:"server" env:"IPPOOL_CONFIG"`

	ID                   string        `help:"Server ID, unique in the cluster and fixed across restarts (default: the one recorded in the data dir, else the host name)." group:"server"`
	DataDir              string        `help:"Directory for the Raft log, snapshots and the server's record." default:"ippool-data" group:"server"`
	Pool                 string        `help:"Addresses to hand out: comma-separated IPv4 prefixes, FIRST-LAST ranges or addresses (default: the cluster's, or 198.18.0.0/15 for a new one)." group:"pool"`
	Exclude              string        `help:"Addresses never handed out, same syntax as --pool." group:"pool"`
	Lifetime             time.Duration `help:"How long a mapping may sit unused before its address may be reused (default 48h)." group:"pool"`
	HTTPAddr             string        `help:"Address of the HTTP API, metrics and health. One that is not loopback needs --acl and HTTPS (or --insecure); on loopback, requests naming another host are refused (DNS rebinding)." default:"${http_addr}" group:"http"`
	DNSAddr              string        `help:"Address of the DNS server (UDP and TCP); empty: no DNS."`
	ClusterAddr          string        `help:"Address for all server-to-server traffic; other servers dial it." default:"${cluster_addr}" group:"server"`
	Join                 []string      `help:"Cluster addresses of other servers to join or to bootstrap with." sep:"," group:"server"`
	BootstrapExpect      int           `help:"Wait for this many servers (this one included, found through --join) and bootstrap them together." group:"server"`
	TLSCA                string        `name:"tls-ca" help:"Cluster CA certificate (PEM); with --tls-cert and --tls-key turns on mutual TLS between servers." group:"tls"`
	TLSCert              string        `name:"tls-cert" help:"This server's certificate (PEM), signed by the cluster CA." group:"tls"`
	TLSKey               string        `name:"tls-key" help:"This server's private key (PEM)." group:"tls"`
	Insecure             bool          `help:"Allow plain text where no TLS is configured: plain TCP between servers when the TLS flags are not given and the data dir holds no CA of its own (anyone who reaches the cluster address can then join, vote and write), and plain HTTP on a non-loopback --http-addr. Without it and without the TLS flags, a server starting a new cluster alone makes its own CA in DATA-DIR/tls, and one given --join or --bootstrap-expect refuses to start." group:"tls"`
	ACL                  bool          `name:"acl" help:"Require ACL tokens on the HTTP API even before 'ippool acl bootstrap' (then only bootstrap, /healthz and /readyz answer); once bootstrapped, tokens are required whatever this says." group:"http"`
	HTTPTLSCert          string        `name:"http-tls-cert" help:"Certificate (PEM) for HTTPS on the HTTP address; reloaded on SIGHUP." group:"http"`
	HTTPTLSKey           string        `name:"http-tls-key" help:"Private key (PEM) of --http-tls-cert." group:"http"`
	HTTPClientCA         string        `name:"http-client-ca" help:"CA (PEM) whose client certificates HTTPS requires; reloaded on SIGHUP." group:"http"`
	RaftTimeout          time.Duration `help:"Raft heartbeat and election timeout; failover takes one to two of it." default:"${raft_timeout}" group:"server"`
	LinearizableReads    bool          `help:"Confirm every lookup hit and known allocation with the leader (a read barrier) instead of answering from local state while it is at most one Raft timeout stale; about 4x the cost of a lookup." group:"server"`
	SnapshotThreshold    uint64        `help:"Log entries between snapshots." default:"${snapshot_threshold}" group:"server"`
	SnapshotInterval     time.Duration `help:"How often to check whether a snapshot is due." default:"${snapshot_interval}" group:"server"`
	WriteTimeout         time.Duration `help:"Longest a write may take, retries included, before it fails with no_quorum." default:"${write_timeout}" group:"server"`
	MaxClients           int           `help:"Most clients the cluster holds (0: no bound); an allocation for a new client past it gets 429 quota_exceeded (DNS: SERVFAIL) until idle clients are forgotten. The leader's applies: give every server the same." default:"${max_clients}" group:"limits"`
	MaxMappings          int           `help:"Most mappings the cluster holds, all clients together (0: no bound); past it an allocation that would add one gets 429 quota_exceeded (DNS: SERVFAIL) until mappings are released or their clients go idle. The default keeps a server within about 2 GB: 1M clients with a first mapping at ~0.9 KB (0.9 GB) + 4M further mappings at ~150 B (0.6 GB) + 256 MiB of domain text with its indexes (0.5 GB). Enforced once every server reads log entry version 4; the leader's applies: give every server the same." default:"${max_mappings}" group:"limits"`
	MaxMappingsPerClient int           `help:"Most mappings one client holds (0: no bound beyond its pool); past it 429 quota_exceeded (DNS: SERVFAIL). Enforced like --max-mappings." default:"${max_mappings_per_client}" group:"limits"`
	MaxDomainBytes       int64         `help:"Most bytes of domain names the cluster holds, each distinct name counted once as it is stored once (0: no bound); an allocation whose new name would pass it gets 429 quota_exceeded (DNS: SERVFAIL). Enforced like --max-mappings." default:"${max_domain_bytes}" group:"limits"`
	HTTPWriteRate        float64       `name:"http-write-rate" help:"Writes a second each HTTP caller may make (its token, or without ACLs its source address): allocations that reach the log, releases, pool and token changes; past it 429 rate_limited with Retry-After (0: no limit)." default:"1000" group:"limits"`
	HTTPWriteBurst       int           `name:"http-write-burst" help:"Burst of writes an HTTP caller may make above --http-write-rate." default:"2000" group:"limits"`
	TestClockOffset      time.Duration `hidden:"" help:"For tests only: run this server's clock this far off." group:"server"`
	MarkWindow           time.Duration `help:"A lookup writes a later last-used time only when the stored one is older than this (default min(5m, lifetime/10))." group:"server"`

	MemoryLimitRatio        float64       `name:"memory-limit-ratio" help:"Share of this process's cgroup memory limit (a container's) given to the Go runtime as its soft limit, so that the collector works harder before the kernel would kill the server; 0: off. GOMEMLIMIT, when set, wins; with no cgroup limit nothing is set (docs/scale.md)." default:"0.9" group:"limits"`
	MaxRestoreBytes         int64         `help:"Largest snapshot a restore may send (PUT /v1/snapshot, admins only); it is received into a file in the data dir, not memory." default:"${max_restore_bytes}" group:"limits"`
	HTTPMaxConns            int           `name:"http-max-conns" help:"Open connections on the HTTP address at most; more are closed at once." default:"4096" group:"limits"`
	HTTPMaxConnsPerIP       int           `name:"http-max-conns-per-ip" help:"Open connections on the HTTP address from one IP address at most." default:"256" group:"limits"`
	HTTPHeaderTimeout       time.Duration `name:"http-header-timeout" help:"Longest a new HTTP connection may take to finish its TLS handshake and request headers, and any request its headers from their first byte." default:"${http_header_timeout}" group:"limits"`
	HTTPBodyTimeout         time.Duration `name:"http-body-timeout" help:"Longest an HTTP request's body may take to arrive (a restore's too), and its answer to be sent." default:"${http_body_timeout}" group:"limits"`
	HTTPIdleTimeout         time.Duration `name:"http-idle-timeout" help:"A kept-alive HTTP connection sending nothing for this long is closed." default:"${http_idle_timeout}" group:"limits"`
	ClusterMaxConns         int           `name:"cluster-max-conns" help:"Open connections on the cluster address at most; more are closed at once. A server opens a few dozen to each peer at most." default:"${cluster_max_conns}" group:"limits"`
	ClusterMaxConnsPerIP    int           `name:"cluster-max-conns-per-ip" help:"Open connections on the cluster address from one IP address at most; keep it above 80, what one server may open." default:"${cluster_max_conns_per_ip}" group:"limits"`
	ClusterHandshakeTimeout time.Duration `name:"cluster-handshake-timeout" help:"Longest a new cluster connection may take to finish TLS, send its protocol byte and then its first request." default:"${cluster_handshake_timeout}" group:"limits"`
	ClusterIdleTimeout      time.Duration `name:"cluster-idle-timeout" help:"A forwarding stream or RPC connection on the cluster address carrying nothing for this long is closed (servers redial)." default:"${cluster_idle_timeout}" group:"limits"`

	DNSDomains         []string      `name:"dns-domains" help:"Names the DNS server answers ('.' for all); others get REFUSED." default:"." sep:"," group:"dns"`
	DNSUpstream        []string      `name:"dns-upstream" help:"Upstream resolvers, tried in order: host:port; tls://host[:port][@tls-name] for DNS over TLS (port 853); https://host/path for DNS over HTTPS (default: /etc/resolv.conf's)." sep:"," group:"dns"`
	DNSUpstreamCA      string        `name:"dns-upstream-ca" help:"PEM file of CA certificates trusted for tls:// and https:// upstreams, besides the system's." type:"existingfile" group:"dns"`
	IgnoreDestinations []string      `help:"Prefixes: a name resolving into one is answered with its real addresses." sep:"," group:"dns"`
	V6Prefix           string        `name:"v6-prefix" help:"A /96 ULA prefix; AAAA answers carry the pool address in its last 32 bits." env:"IPPOOL_V6_PREFIX" group:"dns"`
	DNSTTL             time.Duration `name:"dns-ttl" help:"TTL of DNS answers." default:"${dns_ttl}" group:"dns"`
	DNSCacheMinTTL     time.Duration `name:"dns-cache-min-ttl" help:"Upstream answers are cached at least this long." default:"${dns_cache_min_ttl}" group:"dns"`
	DNSCacheMaxTTL     time.Duration `name:"dns-cache-max-ttl" help:"Upstream answers are cached at most this long." default:"${dns_cache_max_ttl}" group:"dns"`
	DNSUnwantedReplies int           `name:"dns-unwanted-reply-threshold" help:"Unwanted upstream replies (wrong ID, question or case: forgery attempts) after which the upstream cache is cleared (0: never)." default:"${dns_unwanted_reply_threshold}" group:"dns"`
	PolicyDenyRcode    string        `name:"policy-deny-rcode" help:"How DNS answers a name the policy denies the client: nxdomain (to the client it does not exist) or refused." enum:"nxdomain,refused" default:"nxdomain" group:"dns"`
	DNSPrivateDomains  []string      `name:"dns-private-domains" help:"Names (and names under them) whose upstream answers may hold private addresses; other names' private addresses are dropped." sep:"," group:"dns"`
	DNSClientMap       string        `name:"dns-client-map" help:"File of 'prefix client-id' lines mapping query sources to client IDs." group:"dns"`
	DNSRateLimit       float64       `name:"dns-rate-limit" help:"Tokens per second per DNS client (0: no limit); a query takes one for each upstream lookup it needs and for a new allocation, and is REFUSED without." default:"100" group:"dns"`
	DNSBurst           int           `name:"dns-burst" help:"Bucket size of --dns-rate-limit." default:"200" group:"dns"`
	DNSAllow           []string      `name:"dns-allow" help:"Source prefixes that may query; others get REFUSED (0.0.0.0/0,::/0 for all)." default:"${dns_allow}" sep:"," group:"dns"`
	DNSNewClientsRate  float64       `name:"dns-new-clients-rate" help:"Queries per second, all sources together, from clients the pool holds nothing of that need an upstream lookup or an allocation (0: no limit); past it REFUSED. Bounds the clients a forged-source flood can create." default:"10" group:"dns"`
	DNSNewClientsBurst int           `name:"dns-new-clients-burst" help:"Bucket size of --dns-new-clients-rate." default:"100" group:"dns"`
	DNSTCPMaxConns     int           `name:"dns-tcp-max-conns" help:"Open DNS-over-TCP connections at most; more are closed at once." default:"${dns_tcp_max_conns}" group:"dns"`
	DNSTCPMaxPerSource int           `name:"dns-tcp-max-conns-per-source" help:"Open DNS-over-TCP connections at most per source address." default:"${dns_tcp_max_conns_per_source}" group:"dns"`
	DNSTCPTimeout      time.Duration `name:"dns-tcp-timeout" help:"A DNS-over-TCP connection is closed when its next query has not arrived in full within this, or its reply cannot be sent." default:"${dns_tcp_timeout}" group:"dns"`

	ConnectorFlags `embed:"" group:"connector"`
	TailnetFlags   `embed:"" group:"tailnet"`

	Pprof     bool   `help:"Serve Go's profiler under /debug/pprof/ on the HTTP address." group:"http"`
	LogLevel  string `help:"debug, info, warn or error." default:"info" enum:"debug,info,warn,error" group:"logging"`
	LogFormat string `help:"text or json." default:"text" enum:"text,json" group:"logging"`
}

// Help is shown by `ippool serve --help`.
func (c *ServeCmd) Help() string {
	return `Examples:
  ippool serve                                  # one server on loopback, state in ./ippool-data
  ippool serve --pool 100.64.0.0/16 --dns-addr 127.0.0.1:5353
  ippool tls init --dir tls --servers 3         # then copy tls/server-N to server N
  ippool serve --id s1 --cluster-addr 10.0.0.1:7481 --join 10.0.0.2:7481,10.0.0.3:7481 \
      --bootstrap-expect 3 --tls-ca server-1/ca.pem --tls-cert server-1/cert.pem --tls-key server-1/key.pem
  ippool serve --http-addr 0.0.0.0:7480 --acl --http-tls-cert api.pem --http-tls-key api-key.pem   # then ippool acl bootstrap
  TS_AUTHKEY=tskey-... ippool serve --tailnet --cluster-tag tag:ippool --id s1 --bootstrap-expect 3 --pool 100.64.1.0/24`
}

func (c *ServeCmd) logger() *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// clusterConfig turns the flags into the cluster's configuration.
func (c *ServeCmd) clusterConfig(log *slog.Logger) (cluster.Config, error) {
	cfg := cluster.Config{
		ID: c.ID, DataDir: c.DataDir, ClusterAddr: c.ClusterAddr, Join: c.Join, BootstrapExpect: c.BootstrapExpect,
		Insecure: c.Insecure, RaftTimeout: c.RaftTimeout, LinearizableReads: c.LinearizableReads, SnapshotThreshold: c.SnapshotThreshold,
		SnapshotInterval: c.SnapshotInterval, WriteTimeout: c.WriteTimeout, Logger: log,
		MaxConns: c.ClusterMaxConns, MaxConnsPerSource: c.ClusterMaxConnsPerIP, HandshakeTimeout: c.ClusterHandshakeTimeout,
		IdleTimeout: c.ClusterIdleTimeout, MaxRestoreBytes: c.MaxRestoreBytes,
	}
	if err := c.checkLimits(); err != nil {
		return cfg, err
	}
	if cfg.ID == "" {
		cfg.ID = recordedID(c.DataDir)
	}
	if c.Pool != "" {
		lifetime := c.Lifetime
		if lifetime == 0 {
			lifetime = pool.DefaultLifetime
		}
		p, err := parsePoolFlags(c.Pool, c.Exclude, lifetime)
		if err != nil {
			return cfg, err
		}
		cfg.Pool = &p
	} else if c.Exclude != "" || c.Lifetime != 0 {
		return cfg, errors.New("--exclude and --lifetime describe a pool: give --pool with them")
	}
	if c.HTTPWriteRate < 0 || c.HTTPWriteBurst < 0 {
		return cfg, errors.New("--http-write-rate and --http-write-burst must be 0 (no limit) or more")
	}
	for _, q := range []struct {
		flag   string
		v, max int64
	}{
		{pool.QuotaFlagClients, int64(c.MaxClients), pool.MaxClientsLimit},
		{pool.QuotaFlagMappings, int64(c.MaxMappings), pool.MaxMappingsLimit},
		{pool.QuotaFlagMappingsPerClient, int64(c.MaxMappingsPerClient), pool.MaxMappingsLimit},
		{pool.QuotaFlagDomainBytes, c.MaxDomainBytes, pool.MaxDomainBytesLimit},
	} {
		if q.v < 0 || q.v > q.max {
			return cfg, fmt.Errorf("%s %d is outside 0 (no bound) to %d", q.flag, q.v, q.max)
		}
	}
	// 0 is no bound here, and the default in cluster.Config.
	noBound := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	cfg.MaxClients, cfg.ClockOffset = int(noBound(int64(c.MaxClients))), c.TestClockOffset
	cfg.MaxMappings, cfg.MaxMappingsPerClient = int(noBound(int64(c.MaxMappings))), int(noBound(int64(c.MaxMappingsPerClient)))
	cfg.MaxDomainBytes = noBound(c.MaxDomainBytes)
	files := ca.Files{CA: c.TLSCA, Cert: c.TLSCert, Key: c.TLSKey}
	if files.Enabled() {
		t, err := files.Load()
		if err != nil {
			return cfg, err
		}
		cfg.TLS = t
	}
	return cfg, nil
}

// checkLimits refuses limits that would switch a bound off.
func (c *ServeCmd) checkLimits() error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--http-header-timeout", c.HTTPHeaderTimeout}, {"--http-body-timeout", c.HTTPBodyTimeout}, {"--http-idle-timeout", c.HTTPIdleTimeout},
		{"--cluster-handshake-timeout", c.ClusterHandshakeTimeout}, {"--cluster-idle-timeout", c.ClusterIdleTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("%s must be positive", d.flag)
		}
	}
	for _, n := range []struct {
		flag string
		v    int
	}{{"--http-max-conns", c.HTTPMaxConns}, {"--http-max-conns-per-ip", c.HTTPMaxConnsPerIP},
		{"--cluster-max-conns", c.ClusterMaxConns}, {"--cluster-max-conns-per-ip", c.ClusterMaxConnsPerIP}} {
		if n.v <= 0 {
			return fmt.Errorf("%s must be positive", n.flag)
		}
	}
	if c.MaxRestoreBytes <= 0 {
		return errors.New("--max-restore-bytes must be positive")
	}
	return nil
}

// recordedID is the ID a data dir was used with, else the host name.
func recordedID(dataDir string) string {
	var r struct{ ID string }
	if b, err := os.ReadFile(filepath.Join(dataDir, "server.json")); err == nil && json.Unmarshal(b, &r) == nil && r.ID != "" {
		return r.ID
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "ippool-1"
}

func (c *ServeCmd) dnsConfig(log *slog.Logger) (dnsfront.Config, error) {
	cfg := dnsfront.Config{
		Addr: c.DNSAddr, Domains: c.DNSDomains, Upstreams: c.DNSUpstream, TTL: c.DNSTTL, ClientMap: c.DNSClientMap,
		CacheMinTTL: c.DNSCacheMinTTL, CacheMaxTTL: c.DNSCacheMaxTTL,
		UnwantedReplyThreshold: c.DNSUnwantedReplies, PrivateDomains: c.DNSPrivateDomains, UpstreamCA: c.DNSUpstreamCA,
		RateLimit: c.DNSRateLimit, Burst: c.DNSBurst, Logger: log,
		NewClientRate: c.DNSNewClientsRate, NewClientBurst: c.DNSNewClientsBurst,
		TCPMaxConns: c.DNSTCPMaxConns, TCPMaxConnsPerSource: c.DNSTCPMaxPerSource, TCPTimeout: c.DNSTCPTimeout,
	}
	if c.DNSUnwantedReplies < 0 {
		return cfg, errors.New("--dns-unwanted-reply-threshold must not be negative")
	}
	if c.PolicyDenyRcode == "refused" {
		cfg.PolicyDenyRcode = dns.RcodeRefused
	} else {
		cfg.PolicyDenyRcode = dns.RcodeNameError
	}
	if c.DNSTCPMaxConns <= 0 || c.DNSTCPMaxPerSource <= 0 || c.DNSTCPTimeout <= 0 {
		return cfg, errors.New("--dns-tcp-max-conns, --dns-tcp-max-conns-per-source and --dns-tcp-timeout must be positive")
	}
	for _, s := range c.DNSAllow {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return cfg, fmt.Errorf("--dns-allow: %q is not a prefix (a single address is ADDR/32 or ADDR/128)", s)
		}
		cfg.Allow = append(cfg.Allow, p)
	}
	if len(cfg.Allow) == 0 {
		return cfg, errors.New("--dns-allow: no prefix given; 0.0.0.0/0,::/0 allows every source")
	}
	for _, s := range c.IgnoreDestinations {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return cfg, fmt.Errorf("--ignore-destinations: %q is not a prefix", s)
		}
		cfg.IgnoreDestinations = append(cfg.IgnoreDestinations, p)
	}
	if c.V6Prefix != "" {
		p, err := netip.ParsePrefix(c.V6Prefix)
		if err == nil {
			p, err = pool.CheckV6Prefix(p)
		}
		if err != nil {
			return cfg, fmt.Errorf("--v6-prefix %q: %v", c.V6Prefix, err)
		}
		cfg.V6Prefix = p
	}
	return cfg, nil
}

// Run turns the flags into the server's configuration and runs it until
// SIGINT or SIGTERM, then stops it gracefully (internal/server).
func (c *ServeCmd) Run(cli *CLI) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	setMemoryLimit(cfg.Logger, c.MemoryLimitRatio)
	if os.Getenv("GOGC") == "" {
		// The collector lets the heap grow to 1.75 times the live state
		// before the next cycle, not 2 (GOGC 100), as Prometheus does:
		// the state is almost all of the heap and long-lived, so the
		// default headroom made a server's resident memory 2.1 times its
		// state at 10M mappings; at 75 it is under 2, for a third more
		// collections (docs/scale.md). GOGC in the environment wins.
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return server.Run(ctx, cfg)
}

// defaultGCPercent is the server's GOGC unless the environment sets one.
const defaultGCPercent = 75

// setMemoryLimit gives the runtime a soft memory limit of ratio times the
// cgroup's, as Prometheus does by default (--auto-gomemlimit): at tens of
// millions of mappings the heap is gigabytes and the collector's default
// headroom (GOGC 100, twice the live heap) would pass a container's limit.
func setMemoryLimit(log *slog.Logger, ratio float64) {
	if ratio == 0 {
		return
	}
	limit, err := memlimit.Set(memlimit.WithRatio(ratio), memlimit.WithProvider(memlimit.FromCgroup))
	switch {
	case err != nil && !errors.Is(err, memlimit.ErrNoLimit) && !errors.Is(err, memlimit.ErrNoCgroup):
		// Common and harmless (a container without the cgroup's files
		// mounted): said at debug level, not at every start.
		log.Debug("could not read the cgroup's memory limit; no soft memory limit set", "err", err)
	case err == nil && limit > 0 && limit < math.MaxInt64:
		log.Info("soft memory limit set", "bytes", limit, "ratio", ratio)
	}
}

// config checks the flags and turns them into the server's configuration.
func (c *ServeCmd) config() (server.Config, error) {
	log := c.logger()
	cfg := server.Config{Logger: log}
	if c.MemoryLimitRatio < 0 || c.MemoryLimitRatio > 1 {
		return cfg, fmt.Errorf("--memory-limit-ratio %v is not 0 to 1", c.MemoryLimitRatio)
	}
	httpsTLS, httpLoopback, err := c.httpSetup()
	if err != nil {
		return cfg, err
	}
	if err := c.checkTailnet(); err != nil {
		return cfg, err
	}
	if cfg.Cluster, err = c.clusterConfig(log); err != nil {
		return cfg, err
	}
	cfg.Service = service.Options{MarkWindow: c.MarkWindow, RequireACL: c.ACL, WriteRate: c.HTTPWriteRate, WriteBurst: c.HTTPWriteBurst}
	cfg.HTTP = server.HTTP{
		Addr: c.HTTPAddr, TLS: httpsTLS, Loopback: httpLoopback, MaxConns: c.HTTPMaxConns, PerIP: c.HTTPMaxConnsPerIP,
		API: httpapi.Options{Pprof: c.Pprof, MaxRestoreBytes: c.MaxRestoreBytes,
			HeaderTimeout: c.HTTPHeaderTimeout, BodyTimeout: c.HTTPBodyTimeout, IdleTimeout: c.HTTPIdleTimeout},
		ReloadOnSIGHUP: true, StartMessage: true,
	}
	if c.DNSAddr != "" || c.Connector || c.Tailnet {
		dcfg, err := c.dnsConfig(log.With("component", "dns"))
		if err != nil {
			return cfg, err
		}
		cfg.DNS = &dcfg
	}
	if c.Connector {
		ccfg, err := c.connectorConfig(log.With("component", "connector"))
		if err != nil {
			return cfg, err
		}
		cfg.Connector = &ccfg
	}
	if c.Tailnet {
		t, err := c.tailnetConfig(log, cfg.Cluster.ID)
		if err != nil {
			return cfg, err
		}
		cfg.Tailnet = &t
	}
	return cfg, nil
}

// parsePoolFlags parses --pool, --exclude and --lifetime, naming the flag
// that is wrong: each is parsed alone first, then the three together.
func parsePoolFlags(poolText, exclude string, lifetime time.Duration) (pool.Config, error) {
	if _, err := pool.ParseRanges(poolText); err != nil {
		return pool.Config{}, fmt.Errorf("--pool %q: %w", poolText, err)
	}
	if _, err := pool.ParseRanges(exclude); err != nil {
		return pool.Config{}, fmt.Errorf("--exclude %q: %w", exclude, err)
	}
	if lifetime < pool.MinLifetime {
		return pool.Config{}, fmt.Errorf("--lifetime %v is under the minimum of %v", lifetime, pool.MinLifetime)
	}
	p, err := pool.ParseConfig(poolText, exclude, lifetime)
	if err == nil {
		err = p.CheckNew()
	}
	if err != nil {
		return pool.Config{}, fmt.Errorf("--pool %q with --exclude %q: %w", poolText, exclude, err)
	}
	return p, nil
}
