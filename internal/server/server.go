// Package server is ippool's composition root: it builds one server from
// its parts (the cluster node, the service, the HTTP API, the DNS front end,
// the connector, the tailnet node), wires their metrics into one registry,
// runs them until its context ends, and stops them in order. It holds no
// logic of its own beyond that order; cmd/ippool turns flags into Config.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ippool/ippool/internal/buildinfo"
	"github.com/ippool/ippool/internal/cluster"
	"github.com/ippool/ippool/internal/connector"
	"github.com/ippool/ippool/internal/connlimit"
	"github.com/ippool/ippool/internal/dnsfront"
	"github.com/ippool/ippool/internal/httpapi"
	"github.com/ippool/ippool/internal/resolver"
	"github.com/ippool/ippool/internal/service"
)

// The cluster node is what the service runs on, and the service's metrics
// are what the cluster reports its events to. Checked here, where both meet,
// so that neither package imports the other.
var (
	_ service.Node    = (*cluster.Node)(nil)
	_ cluster.Metrics = (*service.Metrics)(nil)
)

// Config is one server, every setting already checked.
type Config struct {
	Logger  *slog.Logger
	Cluster cluster.Config
	// Service is the service's options; Run sets its Logger, Metrics and
	// clock.
	Service service.Options
	HTTP    HTTP
	// DNS configures the resolver and the DNS front end; the front end
	// listens only when DNS.Addr is set. Nil: neither (then Connector and
	// Tailnet must be nil too, since they resolve through it).
	DNS *dnsfront.Config
	// Connector, when set, carries flows steered to this host by TPROXY.
	Connector *connector.Config
	// Tailnet, when set, runs the server as a node of a tailnet.
	Tailnet *Tailnet
	// ShutdownTimeout bounds the graceful stop; DefaultShutdownTimeout
	// when 0.
	ShutdownTimeout time.Duration
}

// HTTP is the HTTP address's listener and API.
type HTTP struct {
	Addr string
	// TLS serves HTTPS; nil serves plain HTTP.
	TLS *httpapi.TLS
	// Loopback says Addr was judged loopback: the listener must then be
	// bound there.
	Loopback bool
	// MaxConns and PerIP cap the open connections, in all and from one
	// address.
	MaxConns, PerIP int
	API             httpapi.Options
	// ReloadOnSIGHUP reloads TLS's files on SIGHUP (and takes the signal
	// even without TLS, so `systemctl reload` never stops the server).
	ReloadOnSIGHUP bool
	// StartMessage prints a line to try the API on stderr once serving.
	StartMessage bool
}

// DefaultShutdownTimeout bounds a graceful stop: long enough for the HTTP
// and DNS servers to drain and a leader to hand over.
const DefaultShutdownTimeout = 10 * time.Second

// Run starts the server and blocks until ctx ends, then stops it gracefully:
// the connector's rules go first, the HTTP and DNS servers drain, buffered
// marks are written and a leader hands over leadership. It returns early
// with an error when a part fails to start, the HTTP server stops, or the
// cluster node meets a fatal error (a damaged log entry).
func Run(ctx context.Context, cfg Config) error {
	if cfg.DNS == nil && (cfg.Connector != nil || cfg.Tailnet != nil) {
		return errors.New("server: the connector and the tailnet mode resolve domains through the DNS front end's resolver: give Config.DNS (its Addr may be empty)")
	}
	// Everything the server creates (Raft log segments, the meta DB,
	// snapshots, its record) is owner-only: the libraries make some of it
	// 0644 or 0755, and the data dir holds every client's mappings and the
	// cluster CA's key. The cluster package fixes what already exists.
	syscall.Umask(0o077)
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.HTTP.ReloadOnSIGHUP {
		stopReload := reloadOnSIGHUP(log, cfg.HTTP.TLS)
		defer stopReload()
	}
	if cfg.Connector != nil {
		if err := connector.Supported(); err != nil {
			return err
		}
	}
	httpLn, httpConns, err := listenHTTP(cfg.HTTP.Addr, cfg.HTTP.Loopback, cfg.HTTP.TLS, cfg.HTTP.MaxConns, cfg.HTTP.PerIP)
	if err != nil {
		return err
	}
	defer httpLn.Close()

	ccfg := cfg.Cluster
	var tn *tailnetMode
	if cfg.Tailnet != nil {
		// Up may wait for an interactive login: ctx ends the wait.
		if tn, err = startTailnet(ctx, *cfg.Tailnet, log, &ccfg); err != nil {
			return err
		}
		// Deferred before the cluster's shutdown, so it runs after it:
		// the leadership transfer runs over the tailnet.
		defer tn.close()
		cfg.DNS.Clients = tn.node
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(gcCost)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildinfo.RegisterMetrics(reg)
	metrics := service.NewMetrics(reg)
	ccfg.Metrics = metrics
	if err := cluster.ExportRaftMetrics(reg); err != nil {
		return err
	}
	node, err := cluster.Start(ccfg)
	if err != nil {
		return err
	}
	defer node.Shutdown()
	service.RegisterClusterGauges(reg, node)
	connlimit.RegisterMetrics(reg, "http", httpConns.Stats)
	if t := cfg.HTTP.TLS; t != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ippool_tls_certificate_expiry_seconds", ConstLabels: prometheus.Labels{"port": "http"},
			Help: "When this server's certificate expires, Unix seconds, by port (cluster, http): alert well before (nothing renews them; docs/security.md says how to rotate).",
		}, func() float64 { return float64(t.Certificate().NotAfter.Unix()) }))
	}
	node.RegisterMetrics(reg)
	// The service judges mappings by the cluster's time, as the leader
	// stamps them (docs/design.md#clocks).
	sopts := cfg.Service
	sopts.Logger, sopts.Metrics, sopts.Now = log, metrics, node.Now
	if tn != nil {
		sopts.Identities = tn.node.Identity
	}
	svc := service.New(node, sopts)
	service.RegisterBoundGauges(reg, svc, node.QuotaLimits())
	service.RegisterPolicyMetrics(reg, svc)
	defer svc.Close()

	// DNS listens before HTTP serves, so /readyz never says ready while the
	// DNS port is still closed.
	var dns *dnsfront.Server
	var res *resolver.Resolver
	if cfg.DNS != nil {
		// One resolver, one cache, for the DNS front end and the
		// connector, so that a flow goes where its name pointed when the
		// client asked; the connector needs it even when DNS is off, and
		// then the front end never listens.
		rcfg := cfg.DNS.ResolverConfig()
		if rcfg.Logger == nil {
			rcfg.Logger = log
		}
		// What the connector may dial, a name may point at.
		for _, c := range []*connector.Config{cfg.Connector, tailnetConnector(cfg.Tailnet)} {
			if c != nil {
				rcfg.AllowPrivate = append(rcfg.AllowPrivate, c.Allow...)
			}
		}
		if res, err = resolver.New(rcfg); err != nil {
			return fmt.Errorf("starting DNS: %w", err)
		}
		defer res.Close()
		res.RegisterMetrics(reg)
		dcfg := *cfg.DNS
		dcfg.Resolver = res
		if dns, err = dnsfront.New(dcfg, svc); err != nil {
			return fmt.Errorf("starting DNS: %w", err)
		}
		defer dns.Shutdown(context.Background())
	}
	if cfg.DNS != nil && cfg.DNS.Addr != "" {
		if err := dns.Start(); err != nil {
			return fmt.Errorf("starting DNS: %w", err)
		}
		dns.RegisterMetrics(reg)
	}
	if tn != nil {
		if err := tn.serveDNS(dns); err != nil {
			return err
		}
		dns.RegisterMetrics(reg)
		tcfg := cfg.Tailnet.Connector
		tcfg.Metrics = connector.NewMetrics(reg)
		tcfg.Policy = svc
		conn, err := connector.New(tcfg, svc, res)
		if err != nil {
			return fmt.Errorf("starting the tailnet's connector: %w", err)
		}
		defer conn.Close()
		svc.ReportMissingEgress(conn.MissingEgress)
		tn.serveFlows(conn, svc.PoolConfig, cfg.DNS.V6Prefix)
		if len(cfg.Tailnet.HTTPAllow) > 0 {
			_, port, _ := net.SplitHostPort(cfg.HTTP.Addr)
			topts := cfg.HTTP.API
			topts.LoopbackHostsOnly = false
			tsrv := httpapi.NewServer(svc, reg, log, topts)
			if err := tn.serveHTTP(tsrv, port, cfg.Tailnet.HTTPAllow); err != nil {
				return err
			}
		}
	}
	var conn *connector.Connector
	if cfg.Connector != nil {
		ccfg := *cfg.Connector
		ccfg.Metrics = connector.NewMetrics(reg)
		ccfg.Policy = svc
		conn, err = connector.New(ccfg, svc, res)
		if err == nil {
			err = conn.Start()
		}
		if err != nil {
			return fmt.Errorf("starting the connector: %w", err)
		}
		defer conn.Close()
		svc.ReportMissingEgress(conn.MissingEgress)
	}

	hopts := cfg.HTTP.API
	hopts.LoopbackHostsOnly = cfg.HTTP.Loopback
	httpSrv := httpapi.NewServer(svc, reg, log, hopts)
	httpErr := make(chan error, 1)
	go func() { httpErr <- httpSrv.Serve(httpLn) }()

	httpURL := "http://" + httpLn.Addr().String()
	if cfg.HTTP.TLS != nil {
		httpURL = "https://" + httpLn.Addr().String()
	}
	dnsAddr := ""
	if cfg.DNS != nil {
		dnsAddr = cfg.DNS.Addr
	}
	log.Info("ippool is serving", "id", node.ID(), "http", httpURL, "cluster", node.ClusterAddr(), "dns", dnsAddr, "data_dir", ccfg.DataDir)
	if cfg.HTTP.StartMessage {
		try := fmt.Sprintf("  %s -X POST %s/v1/clients/node1/domains/example.com\n", curlHint(cfg.HTTP.TLS), httpURL)
		if cfg.Service.RequireACL || node.ACL() != nil {
			// Without a token that line would only get 401.
			try = fmt.Sprintf("  export IPPOOL_TOKEN=$(ippool --addr %s acl bootstrap)   # once per cluster; or a token you have\n"+
				"  %s -H \"Authorization: Bearer $IPPOOL_TOKEN\" -X POST %s/v1/clients/node1/domains/example.com\n", httpURL, curlHint(cfg.HTTP.TLS), httpURL)
		}
		fmt.Fprintf(os.Stderr, "\nippool %s is up. Try:\n%s\n", node.ID(), try)
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping", "reason", context.Cause(ctx).Error())
	case err := <-node.Fatal():
		runErr = err
	case err := <-httpErr:
		runErr = fmt.Errorf("HTTP server: %w", err)
	}
	timeout := cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if conn != nil {
		// Rules first: no flow may arrive at a port about to close.
		if err := conn.Close(); err != nil {
			log.Warn("connector shutdown", "err", err)
		}
	}
	if tn != nil {
		tn.stop(sctx)
	}
	if dns != nil {
		dns.Shutdown(sctx)
	}
	httpSrv.ShutdownWithContext(sctx)
	svc.Close()
	if err := node.Shutdown(); err != nil {
		log.Warn("cluster shutdown", "err", err)
	}
	log.Info("stopped")
	return runErr
}

// tailnetConnector is the tailnet's connector configuration, nil without a
// tailnet.
func tailnetConnector(t *Tailnet) *connector.Config {
	if t == nil {
		return nil
	}
	return &t.Connector
}

// gcCost adds the collector's share of CPU and its stop-the-world pauses
// (runtime/metrics) to the default Go metrics: at tens of millions of
// mappings the heap is gigabytes, and these say what marking it costs
// (docs/scale.md): go_cpu_classes_gc_total_cpu_seconds_total against
// go_cpu_classes_total_cpu_seconds_total less go_cpu_classes_idle_cpu_seconds_total, and the histogram
// go_sched_pauses_total_gc_seconds.
var gcCost = collectors.GoRuntimeMetricsRule{
	Matcher: regexp.MustCompile(`^(/cpu/classes/gc/total:cpu-seconds|/cpu/classes/idle:cpu-seconds|/cpu/classes/total:cpu-seconds|/sched/pauses/total/gc:seconds)$`),
}
