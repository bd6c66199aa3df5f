package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	gometricsprom "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ippool/ippool/internal/cluster"
	"github.com/ippool/ippool/internal/connector"
	"github.com/ippool/ippool/internal/connlimit"
	"github.com/ippool/ippool/internal/dnsfront"
	"github.com/ippool/ippool/internal/httpapi"
	"github.com/ippool/ippool/internal/service"
	"github.com/ippool/ippool/pool"
)

// ServeCmd runs a server. With no flags it is a single-server cluster on
// loopback with its state in ./ippool-data; every flag can also be set as
// IPPOOL_<NAME> in the environment.
type ServeCmd struct {
	ID                string        `help:"Server ID, unique in the cluster and fixed across restarts (default: the one recorded in the data dir, else the host name)." env:"IPPOOL_ID"`
	DataDir           string        `help:"Directory for the Raft log, snapshots and the server's record." default:"ippool-data" env:"IPPOOL_DATA_DIR"`
	Pool              string        `help:"Addresses to hand out: comma-separated IPv4 prefixes, FIRST-LAST ranges or addresses (default: the cluster's, or 198.18.0.0/15 for a new one)." env:"IPPOOL_POOL"`
	Exclude           string        `help:"Addresses never handed out, same syntax as --pool." env:"IPPOOL_EXCLUDE"`
	Lifetime          time.Duration `help:"How long a mapping may sit unused before its address may be reused (default 48h)." env:"IPPOOL_LIFETIME"`
	HTTPAddr          string        `help:"Address of the HTTP API, metrics and health. One that is not loopback needs --acl and HTTPS (or --insecure); on loopback, requests naming another host are refused (DNS rebinding)." default:"127.0.0.1:7480" env:"IPPOOL_HTTP_ADDR"`
	DNSAddr           string        `help:"Address of the DNS server (UDP and TCP); empty: no DNS." env:"IPPOOL_DNS_ADDR"`
	ClusterAddr       string        `help:"Address for all server-to-server traffic; other servers dial it." default:"127.0.0.1:7481" env:"IPPOOL_CLUSTER_ADDR"`
	Join              []string      `help:"Cluster addresses of other servers to join or to bootstrap with." env:"IPPOOL_JOIN" sep:","`
	BootstrapExpect   int           `help:"Wait for this many servers (this one included, found through --join) and bootstrap them together." env:"IPPOOL_BOOTSTRAP_EXPECT"`
	TLSCA             string        `name:"tls-ca" help:"Cluster CA certificate (PEM); with --tls-cert and --tls-key turns on mutual TLS between servers." env:"IPPOOL_TLS_CA"`
	TLSCert           string        `name:"tls-cert" help:"This server's certificate (PEM), signed by the cluster CA." env:"IPPOOL_TLS_CERT"`
	TLSKey            string        `name:"tls-key" help:"This server's private key (PEM)." env:"IPPOOL_TLS_KEY"`
	Insecure          bool          `help:"Allow plain text where no TLS is configured: plain TCP between servers when the TLS flags are not given and the data dir holds no CA of its own (anyone who reaches the cluster address can then join, vote and write), and plain HTTP on a non-loopback --http-addr. Without it and without the TLS flags, a server starting a new cluster alone makes its own CA in DATA-DIR/tls, and one given --join or --bootstrap-expect refuses to start." env:"IPPOOL_INSECURE"`
	ACL               bool          `name:"acl" help:"Require ACL tokens on the HTTP API even before 'ippool acl bootstrap' (then only bootstrap, /healthz and /readyz answer); once bootstrapped, tokens are required whatever this says." env:"IPPOOL_ACL"`
	HTTPTLSCert       string        `name:"http-tls-cert" help:"Certificate (PEM) for HTTPS on the HTTP address; reloaded on SIGHUP." env:"IPPOOL_HTTP_TLS_CERT"`
	HTTPTLSKey        string        `name:"http-tls-key" help:"Private key (PEM) of --http-tls-cert." env:"IPPOOL_HTTP_TLS_KEY"`
	HTTPClientCA      string        `name:"http-client-ca" help:"CA (PEM) whose client certificates HTTPS requires; reloaded on SIGHUP." env:"IPPOOL_HTTP_CLIENT_CA"`
	RaftTimeout       time.Duration `help:"Raft heartbeat and election timeout; failover takes one to two of it." default:"500ms" env:"IPPOOL_RAFT_TIMEOUT"`
	LinearizableReads bool          `help:"Confirm every lookup hit and known allocation with the leader (a read barrier) instead of answering from local state while it is at most one Raft timeout stale; about 4x the cost of a lookup." env:"IPPOOL_LINEARIZABLE_READS"`
	SnapshotThreshold uint64        `help:"Log entries between snapshots." default:"16384" env:"IPPOOL_SNAPSHOT_THRESHOLD"`
	SnapshotInterval  time.Duration `help:"How often to check whether a snapshot is due." default:"30s" env:"IPPOOL_SNAPSHOT_INTERVAL"`
	WriteTimeout      time.Duration `help:"Longest a write may take, retries included, before it fails with no_quorum." default:"4s" env:"IPPOOL_WRITE_TIMEOUT"`
	MaxClients        int           `help:"Most clients the cluster holds; an allocation for a new client past it gets 429 quota_exceeded (DNS: SERVFAIL) until idle clients are forgotten. The leader's applies: give every server the same." default:"1000000" env:"IPPOOL_MAX_CLIENTS"`
	HTTPWriteRate     float64       `name:"http-write-rate" help:"Writes a second each HTTP caller may make (its token, or without ACLs its source address): allocations that reach the log, releases, pool and token changes; past it 429 rate_limited with Retry-After (0: no limit)." default:"1000" env:"IPPOOL_HTTP_WRITE_RATE"`
	HTTPWriteBurst    int           `name:"http-write-burst" help:"Burst of writes an HTTP caller may make above --http-write-rate." default:"2000" env:"IPPOOL_HTTP_WRITE_BURST"`
	TestClockOffset   time.Duration `hidden:"" help:"For tests only: run this server's clock this far off." env:"IPPOOL_TEST_CLOCK_OFFSET"`
	MarkWindow        time.Duration `help:"A lookup writes a fresher last-used time only when the stored one is older than this (default min(5m, lifetime/10))." env:"IPPOOL_MARK_WINDOW"`

	MaxRestoreBytes         int64         `help:"Largest snapshot a restore may send (PUT /v1/snapshot, admins only); it is received into a file in the data dir, not memory." default:"4294967296" env:"IPPOOL_MAX_RESTORE_BYTES"`
	HTTPMaxConns            int           `name:"http-max-conns" help:"Open connections on the HTTP address at most; more are closed at once." default:"4096" env:"IPPOOL_HTTP_MAX_CONNS"`
	HTTPMaxConnsPerIP       int           `name:"http-max-conns-per-ip" help:"Open connections on the HTTP address from one IP address at most." default:"256" env:"IPPOOL_HTTP_MAX_CONNS_PER_IP"`
	HTTPHeaderTimeout       time.Duration `name:"http-header-timeout" help:"Longest a new HTTP connection may take to finish its TLS handshake and request headers, and any request its headers from their first byte." default:"10s" env:"IPPOOL_HTTP_HEADER_TIMEOUT"`
	HTTPBodyTimeout         time.Duration `name:"http-body-timeout" help:"Longest an HTTP request's body may take to arrive (a restore's too), and its answer to be sent." default:"2m" env:"IPPOOL_HTTP_BODY_TIMEOUT"`
	HTTPIdleTimeout         time.Duration `name:"http-idle-timeout" help:"A kept-alive HTTP connection sending nothing for this long is closed." default:"2m" env:"IPPOOL_HTTP_IDLE_TIMEOUT"`
	ClusterMaxConns         int           `name:"cluster-max-conns" help:"Open connections on the cluster address at most; more are closed at once. A server opens a few dozen to each peer at most." default:"1024" env:"IPPOOL_CLUSTER_MAX_CONNS"`
	ClusterMaxConnsPerIP    int           `name:"cluster-max-conns-per-ip" help:"Open connections on the cluster address from one IP address at most; keep it above 80, what one server may open." default:"128" env:"IPPOOL_CLUSTER_MAX_CONNS_PER_IP"`
	ClusterHandshakeTimeout time.Duration `name:"cluster-handshake-timeout" help:"Longest a new cluster connection may take to finish TLS, send its protocol byte and then its first request." default:"10s" env:"IPPOOL_CLUSTER_HANDSHAKE_TIMEOUT"`
	ClusterIdleTimeout      time.Duration `name:"cluster-idle-timeout" help:"A forwarding stream or RPC connection on the cluster address carrying nothing for this long is closed (servers redial)." default:"2m" env:"IPPOOL_CLUSTER_IDLE_TIMEOUT"`

	DNSDomains         []string      `name:"dns-domains" help:"Names the DNS server answers ('.' for all); others get REFUSED." default:"." env:"IPPOOL_DNS_DOMAINS" sep:","`
	DNSUpstream        []string      `name:"dns-upstream" help:"Upstream resolvers host:port (default: /etc/resolv.conf's)." env:"IPPOOL_DNS_UPSTREAM" sep:","`
	IgnoreDestinations []string      `help:"Prefixes: a name resolving into one is answered with its real addresses." env:"IPPOOL_IGNORE_DESTINATIONS" sep:","`
	V6Prefix           string        `name:"v6-prefix" help:"A /96 ULA prefix; AAAA answers carry the pool address in its last 32 bits." env:"IPPOOL_V6_PREFIX"`
	DNSTTL             time.Duration `name:"dns-ttl" help:"TTL of DNS answers." default:"60s" env:"IPPOOL_DNS_TTL"`
	DNSCacheMinTTL     time.Duration `name:"dns-cache-min-ttl" help:"Upstream answers are cached at least this long." default:"5s" env:"IPPOOL_DNS_CACHE_MIN_TTL"`
	DNSCacheMaxTTL     time.Duration `name:"dns-cache-max-ttl" help:"Upstream answers are cached at most this long." default:"1h" env:"IPPOOL_DNS_CACHE_MAX_TTL"`
	DNSClientMap       string        `name:"dns-client-map" help:"File of 'prefix client-id' lines mapping query sources to client IDs." env:"IPPOOL_DNS_CLIENT_MAP"`
	DNSRateLimit       float64       `name:"dns-rate-limit" help:"Tokens per second per DNS client (0: no limit); a query takes one for each upstream lookup it needs and for a new allocation, and is REFUSED without." default:"100" env:"IPPOOL_DNS_RATE_LIMIT"`
	DNSBurst           int           `name:"dns-burst" help:"Bucket size of --dns-rate-limit." default:"200" env:"IPPOOL_DNS_BURST"`
	DNSAllow           []string      `name:"dns-allow" help:"Source prefixes that may query; others get REFUSED (0.0.0.0/0,::/0 for all)." default:"127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7" env:"IPPOOL_DNS_ALLOW" sep:","`
	DNSNewClientsRate  float64       `name:"dns-new-clients-rate" help:"Queries per second, all sources together, from clients the pool holds nothing of that need an upstream lookup or an allocation (0: no limit); past it REFUSED. Bounds the clients a forged-source flood can create." default:"10" env:"IPPOOL_DNS_NEW_CLIENTS_RATE"`
	DNSNewClientsBurst int           `name:"dns-new-clients-burst" help:"Bucket size of --dns-new-clients-rate." default:"100" env:"IPPOOL_DNS_NEW_CLIENTS_BURST"`
	DNSTCPMaxConns     int           `name:"dns-tcp-max-conns" help:"Open DNS-over-TCP connections at most; more are closed at once." default:"256" env:"IPPOOL_DNS_TCP_MAX_CONNS"`
	DNSTCPMaxPerSource int           `name:"dns-tcp-max-conns-per-source" help:"Open DNS-over-TCP connections at most per source address." default:"16" env:"IPPOOL_DNS_TCP_MAX_CONNS_PER_SOURCE"`
	DNSTCPTimeout      time.Duration `name:"dns-tcp-timeout" help:"A DNS-over-TCP connection is closed when its next query has not arrived in full within this, or its reply cannot be sent." default:"10s" env:"IPPOOL_DNS_TCP_TIMEOUT"`

	ConnectorFlags `embed:""`
	TailnetFlags   `embed:""`

	Pprof     bool   `help:"Serve Go's profiler under /debug/pprof/ on the HTTP address." env:"IPPOOL_PPROF"`
	LogLevel  string `help:"debug, info, warn or error." default:"info" enum:"debug,info,warn,error" env:"IPPOOL_LOG_LEVEL"`
	LogFormat string `help:"text or json." default:"text" enum:"text,json" env:"IPPOOL_LOG_FORMAT"`
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
		p, err := pool.ParseConfig(c.Pool, c.Exclude, lifetime)
		if err == nil {
			err = p.CheckNew()
		}
		if err != nil {
			return cfg, fmt.Errorf("--pool/--exclude/--lifetime: %w", err)
		}
		cfg.Pool = &p
	} else if c.Exclude != "" || c.Lifetime != 0 {
		return cfg, errors.New("--exclude and --lifetime describe a pool: give --pool with them")
	}
	if c.MaxClients < 1 || c.MaxClients > pool.MaxClientsLimit {
		return cfg, fmt.Errorf("--max-clients %d is outside 1 to %d", c.MaxClients, pool.MaxClientsLimit)
	}
	if c.HTTPWriteRate < 0 || c.HTTPWriteBurst < 0 {
		return cfg, errors.New("--http-write-rate and --http-write-burst must be 0 (no limit) or more")
	}
	cfg.MaxClients, cfg.ClockOffset = c.MaxClients, c.TestClockOffset
	files := cluster.TLSFiles{CA: c.TLSCA, Cert: c.TLSCert, Key: c.TLSKey}
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
		RateLimit: c.DNSRateLimit, Burst: c.DNSBurst, Logger: log,
		NewClientRate: c.DNSNewClientsRate, NewClientBurst: c.DNSNewClientsBurst,
		TCPMaxConns: c.DNSTCPMaxConns, TCPMaxConnsPerSource: c.DNSTCPMaxPerSource, TCPTimeout: c.DNSTCPTimeout,
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
		if err != nil || !p.Addr().Is6() || p.Bits() != 96 {
			return cfg, fmt.Errorf("--v6-prefix %q must be an IPv6 /96, like fd7a:115c:a1e0:b1a::/96", c.V6Prefix)
		}
		cfg.V6Prefix = p.Masked()
	}
	return cfg, nil
}

// Run starts the server and blocks until SIGINT or SIGTERM, then stops it
// gracefully: the HTTP and DNS servers drain, buffered marks are written and
// a leader hands over leadership.
func (c *ServeCmd) Run(cli *CLI) error {
	// Everything the server creates (Raft log segments, the meta DB,
	// snapshots, its record) is owner-only: the libraries make some of it
	// 0644 or 0755, and the data dir holds every client's mappings and the
	// cluster CA's key. The cluster package fixes what already exists.
	syscall.Umask(0o077)
	log := c.logger()
	httpsTLS, httpLoopback, err := c.httpSetup()
	if err != nil {
		return err
	}
	stopReload := reloadOnSIGHUP(log, httpsTLS)
	defer stopReload()
	if err := c.checkTailnet(); err != nil {
		return err
	}
	ccfg, err := c.clusterConfig(log)
	if err != nil {
		return err
	}
	var dcfg dnsfront.Config
	if c.DNSAddr != "" || c.Connector || c.Tailnet {
		if dcfg, err = c.dnsConfig(log.With("component", "dns")); err != nil {
			return err
		}
	}
	if c.Connector {
		if err := connector.Supported(); err != nil {
			return err
		}
	}
	httpLn, httpConns, err := listenHTTP(c.HTTPAddr, httpLoopback, httpsTLS, c.HTTPMaxConns, c.HTTPMaxConnsPerIP)
	if err != nil {
		return err
	}
	defer httpLn.Close()

	var tn *tailnetMode
	if c.Tailnet {
		// Up may wait for an interactive login: let ^C end the wait.
		upCtx, stopUp := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		tn, err = c.startTailnet(upCtx, log, &ccfg)
		stopUp()
		if err != nil {
			return err
		}
		// Deferred before the cluster's shutdown, so it runs after it:
		// the leadership transfer runs over the tailnet.
		defer tn.close()
		dcfg.Clients = tn.node
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := service.NewMetrics(reg)
	ccfg.Metrics = metrics
	if err := exportRaftMetrics(reg); err != nil {
		return err
	}
	node, err := cluster.Start(ccfg)
	if err != nil {
		return err
	}
	defer node.Shutdown()
	service.RegisterClusterGauges(reg, node)
	registerConnMetrics(reg, "http", httpConns.Stats)
	registerConnMetrics(reg, "cluster", node.ConnStats)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ippool_cluster_peers_refused_total",
		Help: "Cluster connections refused because the peer is not one of the cluster's (with --tailnet: a node without --cluster-tag).",
	}, func() float64 { return float64(node.RefusedPeers()) }))
	// The service judges mappings by the cluster's time, as the leader
	// stamps them (docs/design.md#clocks).
	svc := service.New(node, service.Options{MarkWindow: c.MarkWindow, RequireACL: c.ACL, Logger: log, Metrics: metrics,
		Now: node.Now, WriteRate: c.HTTPWriteRate, WriteBurst: c.HTTPWriteBurst})
	service.RegisterBoundGauges(reg, svc, c.MaxClients)
	defer svc.Close()

	// DNS listens before HTTP serves, so /readyz never says ready while the
	// DNS port is still closed.
	var dns *dnsfront.Server
	if c.DNSAddr != "" || c.Connector || c.Tailnet {
		// The connector resolves through the DNS front end's upstreams and
		// cache, so it has one even when DNS is off; then it never listens.
		if dns, err = dnsfront.New(dcfg, svc); err != nil {
			return fmt.Errorf("starting DNS: %w", err)
		}
		defer dns.Shutdown(context.Background())
	}
	if c.DNSAddr != "" {
		if err := dns.Start(); err != nil {
			return fmt.Errorf("starting DNS: %w", err)
		}
		registerDNSMetrics(reg, dns)
	}
	if tn != nil {
		if err := tn.serveDNS(dns); err != nil {
			return err
		}
		registerDNSMetrics(reg, dns)
		ccfg, err := c.connectorConfig(log.With("component", "connector"), reg)
		if err != nil {
			return err
		}
		if ccfg.AllowDial, err = c.testDialAllow(); err != nil {
			return err
		}
		conn, err := connector.New(ccfg, svc, dns)
		if err != nil {
			return fmt.Errorf("starting the tailnet's connector: %w", err)
		}
		defer conn.Close()
		tn.serveFlows(conn, svc.PoolConfig, dcfg.V6Prefix)
		if len(c.TailnetHTTPAllow) > 0 {
			_, port, _ := net.SplitHostPort(c.HTTPAddr)
			tsrv := httpapi.NewServer(svc, reg, log, httpapi.Options{Pprof: c.Pprof, MaxRestoreBytes: c.MaxRestoreBytes,
				HeaderTimeout: c.HTTPHeaderTimeout, BodyTimeout: c.HTTPBodyTimeout, IdleTimeout: c.HTTPIdleTimeout})
			if err := tn.serveHTTP(tsrv, port, c.TailnetHTTPAllow); err != nil {
				return err
			}
		}
	}
	var conn *connector.Connector
	if c.Connector {
		ccfg, err := c.connectorConfig(log.With("component", "connector"), reg)
		if err == nil {
			conn, err = connector.New(ccfg, svc, dns)
		}
		if err == nil {
			err = conn.Start()
		}
		if err != nil {
			return fmt.Errorf("starting the connector: %w", err)
		}
		defer conn.Close()
	}

	httpSrv := httpapi.NewServer(svc, reg, log, httpapi.Options{Pprof: c.Pprof, LoopbackHostsOnly: httpLoopback, MaxRestoreBytes: c.MaxRestoreBytes,
		HeaderTimeout: c.HTTPHeaderTimeout, BodyTimeout: c.HTTPBodyTimeout, IdleTimeout: c.HTTPIdleTimeout})
	httpErr := make(chan error, 1)
	go func() { httpErr <- httpSrv.Serve(httpLn) }()

	httpURL := "http://" + httpLn.Addr().String()
	if httpsTLS != nil {
		httpURL = "https://" + httpLn.Addr().String()
	}
	log.Info("ippool is serving", "id", node.ID(), "http", httpURL, "cluster", node.ClusterAddr(), "dns", c.DNSAddr, "data_dir", c.DataDir)
	fmt.Fprintf(os.Stderr, "\nippool %s is up. Try:\n  %s -X POST %s/v1/clients/node1/domains/example.com\n\n", node.ID(), curlHint(httpsTLS), httpURL)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	var runErr error
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case err := <-node.Fatal():
		runErr = err
	case err := <-httpErr:
		runErr = fmt.Errorf("HTTP server: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if conn != nil {
		// Rules first: no flow may arrive at a port about to close.
		if err := conn.Close(); err != nil {
			log.Warn("connector shutdown", "err", err)
		}
	}
	if tn != nil {
		tn.stop(ctx)
	}
	if dns != nil {
		dns.Shutdown(ctx)
	}
	httpSrv.ShutdownWithContext(ctx)
	svc.Close()
	if err := node.Shutdown(); err != nil {
		log.Warn("cluster shutdown", "err", err)
	}
	log.Info("stopped")
	return runErr
}

func registerDNSMetrics(reg prometheus.Registerer, dns *dnsfront.Server) {
	counter := func(name, help string, f func(dnsfront.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(dns.Stats())) }))
	}
	counter("ippool_dns_queries_total", "DNS queries received.", func(s dnsfront.Stats) uint64 { return s.Queries })
	counter("ippool_dns_answered_total", "DNS replies with NOERROR or NXDOMAIN.", func(s dnsfront.Stats) uint64 { return s.Answered })
	counter("ippool_dns_refused_total", "DNS replies with REFUSED.", func(s dnsfront.Stats) uint64 { return s.Refused })
	counter("ippool_dns_servfail_total", "DNS replies with SERVFAIL.", func(s dnsfront.Stats) uint64 { return s.ServFail })
	counter("ippool_dns_rate_limited_total", "DNS allocations refused by the per-client rate limit.", func(s dnsfront.Stats) uint64 { return s.RateLimited })
	counter("ippool_dns_upstream_errors_total", "Upstream lookups no upstream answered.", func(s dnsfront.Stats) uint64 { return s.UpstreamErrors })
	counter("ippool_dns_cache_hits_total", "Upstream lookups answered from the cache.", func(s dnsfront.Stats) uint64 { return s.CacheHits })
	counter("ippool_dns_upstream_lookups_total", "Upstream lookups sent upstream (cache misses).", func(s dnsfront.Stats) uint64 { return s.CacheMisses })
	counter("ippool_dns_not_allowed_total", "DNS queries refused because --dns-allow does not admit their source.", func(s dnsfront.Stats) uint64 { return s.NotAllowed })
	counter("ippool_dns_new_clients_limited_total", "DNS queries of new clients refused by --dns-new-clients-rate.", func(s dnsfront.Stats) uint64 { return s.NewClientLimited })
	counter("ippool_dns_dropped_total", "DNS queries dropped unanswered: a compressed or truncated question, or a UDP query that found the queue to the full path (past the fast path) full.", func(s dnsfront.Stats) uint64 { return s.Dropped })
	for reason, f := range map[string]func(dnsfront.Stats) uint64{
		connlimit.ReasonTotal:     func(s dnsfront.Stats) uint64 { return s.TCPRefusedTotal },
		connlimit.ReasonPerSource: func(s dnsfront.Stats) uint64 { return s.TCPRefusedPerSource },
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ippool_dns_tcp_refused_total", ConstLabels: prometheus.Labels{"reason": reason},
			Help: "DNS-over-TCP connections closed at accept, by the cap they were past: total (--dns-tcp-max-conns) or per_source (--dns-tcp-max-conns-per-source).",
		}, func() float64 { return float64(f(dns.Stats())) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ippool_dns_tcp_connections", Help: "DNS-over-TCP connections open."}, func() float64 { return float64(dns.Stats().TCPConns) }))
}

// registerConnMetrics exports a port's connection caps at work: the
// connections open and those closed at accept, by the cap that refused
// them.
func registerConnMetrics(reg prometheus.Registerer, port string, stats func() connlimit.Stats) {
	refused := func(reason string, f func(connlimit.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "ippool_connections_refused_total",
			Help:        "Connections closed at accept because a cap was reached, by port (http, cluster) and cap (total, per_source).",
			ConstLabels: prometheus.Labels{"port": port, "reason": reason},
		}, func() float64 { return float64(f(stats())) })
	}
	reg.MustRegister(
		refused(connlimit.ReasonTotal, func(s connlimit.Stats) uint64 { return s.RefusedTotal }),
		refused(connlimit.ReasonPerSource, func(s connlimit.Stats) uint64 { return s.RefusedPerSource }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ippool_connections_open", Help: "Connections open, by port (http, cluster).", ConstLabels: prometheus.Labels{"port": port},
		}, func() float64 { return float64(stats().Open) }))
}

// exportRaftMetrics publishes hashicorp/raft's own timings (commitTime,
// leader.dispatchLog for the leader's append and fsync,
// replication.appendEntries.rpc per follower, fsm.apply ...) under
// ippool_raft_ on /metrics, as Consul does: they tell where a slow write
// spends its time. Raft reports them through go-metrics' process-wide sink;
// series that stop being updated (a former leader's) expire after a minute.
func exportRaftMetrics(reg prometheus.Registerer) error {
	sink, err := gometricsprom.NewPrometheusSinkFrom(gometricsprom.PrometheusOpts{Registerer: reg, Expiration: time.Minute, Name: "ippool_raft_metrics"})
	if err != nil {
		return err
	}
	cfg := gometrics.DefaultConfig("ippool")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	_, err = gometrics.NewGlobal(cfg, sink)
	return err
}
