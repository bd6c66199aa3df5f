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
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"go4.org/netipx"

	"github.com/ippool/ippool/internal/cluster"
	"github.com/ippool/ippool/internal/connector"
	"github.com/ippool/ippool/internal/dnsfront"
	"github.com/ippool/ippool/internal/tailnet"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// TailnetFlags are serve's tailnet settings, embedded in ServeCmd.
type TailnetFlags struct {
	Tailnet           bool     `help:"Run as a node of a tailnet (Tailscale's tsnet), the NAT connector of the tailnet: the cluster port, DNS (on the node's tailnet IPv4, port 53) and the clients' TCP flows (to the pool and --v6-prefix, advertised as subnet routes) run over the tailnet; clients are the nodes that ask, by stable node ID; cluster peers are the nodes carrying --cluster-tag. The auth key comes from TS_AUTHKEY." env:"IPPOOL_TAILNET"`
	ClusterTag        string   `help:"With --tailnet: the ACL tag every server carries (like tag:ippool); cluster connections from nodes without it are refused, and with --bootstrap-expect and no --join the servers find each other by it." env:"IPPOOL_CLUSTER_TAG"`
	ControlURL        string   `name:"control-url" help:"With --tailnet: the coordination server (default: Tailscale's), e.g. a Headscale URL." env:"IPPOOL_CONTROL_URL"`
	TailnetHostname   string   `name:"tailnet-hostname" help:"With --tailnet: the node's name on the tailnet (default: --id)." env:"IPPOOL_TAILNET_HOSTNAME"`
	TailnetStateDir   string   `name:"tailnet-state-dir" help:"With --tailnet: where the node keeps its keys, so it stays the same node across restarts (default: DATA-DIR/tailnet)." env:"IPPOOL_TAILNET_STATE_DIR"`
	TailnetHTTPAllow  []string `name:"tailnet-http-allow" help:"With --tailnet: serve the HTTP API and console on the node's tailnet address too, at --http-addr's port, to these nodes only: tags (tag:ops), host names or stable node IDs; others get 403. ACL tokens apply on top." env:"IPPOOL_TAILNET_HTTP_ALLOW" sep:","`
	TailnetUploadLogs bool     `name:"tailnet-upload-logs" help:"With --tailnet: send the tailnet node's logs to Tailscale's log service, as tailscaled does (off: nothing is sent)." env:"IPPOOL_TAILNET_UPLOAD_LOGS"`
	TestDialAllow     []string `hidden:"" help:"For tests only: prefixes the connector may dial although they are loopback or this host's." env:"IPPOOL_TEST_DIAL_ALLOW" sep:","`
}

// checkTailnet refuses flags that do not go with --tailnet, and tailnet
// flags without it.
func (c *ServeCmd) checkTailnet() error {
	if !c.Tailnet {
		if c.ClusterTag != "" || c.ControlURL != "" || len(c.TailnetHTTPAllow) > 0 {
			return errors.New("--cluster-tag, --control-url and --tailnet-http-allow are tailnet settings: give --tailnet with them")
		}
		return nil
	}
	if c.ClusterTag == "" {
		return errors.New("--tailnet needs --cluster-tag, the ACL tag every server of the cluster carries (like tag:ippool)")
	}
	if err := tailnet.CheckTag(c.ClusterTag); err != nil {
		return fmt.Errorf("--cluster-tag: %w", err)
	}
	switch {
	case c.Connector:
		return errors.New("--tailnet carries the clients' flows itself, through the tailnet; --connector (TPROXY on this host) does not go with it")
	case c.DNSAddr != "":
		return errors.New("--tailnet answers DNS on the node's tailnet address (port 53); --dns-addr does not go with it")
	case c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "":
		return errors.New("--tailnet: the tailnet's identity (the cluster tag) replaces the cluster's TLS; give no --tls-ca, --tls-cert or --tls-key")
	case c.DNSClientMap != "":
		return errors.New("--tailnet names clients by their node; --dns-client-map does not go with it")
	}
	for _, e := range c.TailnetHTTPAllow {
		if strings.TrimSpace(e) == "" {
			return errors.New("--tailnet-http-allow: an empty entry; give tags (tag:ops), host names or stable node IDs")
		}
	}
	if _, err := c.testDialAllow(); err != nil {
		return err
	}
	return nil
}

func (c *ServeCmd) testDialAllow() ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, s := range c.TestDialAllow {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--test-dial-allow: %q is not a prefix", s)
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}

// tailnetMode is a server's life on the tailnet.
type tailnetMode struct {
	node    *tailnet.Node
	log     *slog.Logger
	stopTCP func()
	conn    *connector.Connector
	http    *fasthttp.Server
	done    chan struct{}
}

// startTailnet brings the node up and points the cluster at it: the
// cluster address is the node's tailnet IPv4 with --cluster-addr's port.
func (c *ServeCmd) startTailnet(ctx context.Context, log *slog.Logger, ccfg *cluster.Config) (*tailnetMode, error) {
	_, portStr, err := net.SplitHostPort(c.ClusterAddr)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || port == 0 {
		return nil, fmt.Errorf("--cluster-addr %q: with --tailnet only its port is used, and it must be a port number", c.ClusterAddr)
	}
	hostname := c.TailnetHostname
	if hostname == "" {
		hostname = ccfg.ID
	}
	dir := c.TailnetStateDir
	if dir == "" {
		dir = filepath.Join(c.DataDir, "tailnet")
	}
	node, err := tailnet.Start(ctx, tailnet.Config{
		Hostname: hostname, Dir: dir, AuthKey: os.Getenv("TS_AUTHKEY"), ControlURL: c.ControlURL,
		ClusterTag: c.ClusterTag, UploadLogs: c.TailnetUploadLogs, Logger: log.With("component", "tailnet"),
	})
	if err != nil {
		return nil, err
	}
	ln, err := node.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("tailnet: listening on the cluster port: %w", err)
	}
	ccfg.ClusterAddr = netip.AddrPortFrom(node.IPv4(), uint16(port)).String()
	nw := &cluster.Network{
		Name: "tailnet", Listener: ln,
		Dial:      func(ctx context.Context, addr string) (net.Conn, error) { return node.Dial(ctx, "tcp", addr) },
		Authorize: node.AuthorizeClusterPeer,
	}
	if len(c.Join) == 0 {
		nw.Peers = func() []string { return node.ClusterPeers(uint16(port)) }
	}
	ccfg.Network = nw
	return &tailnetMode{node: node, log: log.With("component", "tailnet"), done: make(chan struct{})}, nil
}

// serveDNS answers DNS on the node's tailnet IPv4, port 53, UDP and TCP.
func (t *tailnetMode) serveDNS(dns *dnsfront.Server) error {
	addr := netip.AddrPortFrom(t.node.IPv4(), 53).String()
	pc, err := t.node.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("tailnet DNS on %s: %w", addr, err)
	}
	ln, err := t.node.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("tailnet DNS on %s: %w", addr, err)
	}
	if err := dns.Serve(pc, ln); err != nil {
		pc.Close()
		ln.Close()
		return err
	}
	t.log.Info("DNS on the tailnet", "addr", addr)
	return nil
}

// serveFlows hands the connector the flows to the pool and the v6 prefix
// and keeps them advertised as subnet routes, following pool changes.
func (t *tailnetMode) serveFlows(conn *connector.Connector, pools func() (pool.Config, bool), v6 netip.Prefix) {
	t.conn = conn
	t.stopTCP = t.node.HandleTCP(conn)
	go t.advertise(pools, v6)
}

// advertiseEvery is how often the pool configuration is compared with the
// routes advertised: as often as the connector reads it.
const advertiseEvery = 2 * time.Second

func (t *tailnetMode) advertise(pools func() (pool.Config, bool), v6 netip.Prefix) {
	var current []netip.Prefix
	tick := time.NewTicker(advertiseEvery / 10)
	defer tick.Stop()
	for {
		if cfg, ok := pools(); ok {
			routes := poolRoutes(cfg, v6)
			if !slices.Equal(routes, current) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := t.node.AdvertiseRoutes(ctx, routes)
				cancel()
				if err != nil {
					t.log.Error("advertising the pool as subnet routes", "err", err)
				} else {
					current = routes
					t.log.Info("advertising the pool as subnet routes (the control server must approve them)", "routes", routes)
					tick.Reset(advertiseEvery)
				}
			}
		}
		select {
		case <-t.done:
			return
		case <-tick.C:
		}
	}
}

// poolRoutes are the subnet routes that bring the pool's flows here: the
// pool without its excluded addresses (which may be in use elsewhere on the
// tailnet), and the v6 prefix.
func poolRoutes(cfg pool.Config, v6 netip.Prefix) []netip.Prefix {
	var b netipx.IPSetBuilder
	for _, r := range cfg.Pool {
		b.AddRange(r)
	}
	for _, r := range cfg.Exclude {
		b.RemoveRange(r)
	}
	var routes []netip.Prefix
	if set, err := b.IPSet(); err == nil {
		routes = set.Prefixes()
	}
	if v6.IsValid() {
		routes = append(routes, v6)
	}
	return routes
}

// serveHTTP serves the HTTP API on the node's tailnet addresses at port, to
// the nodes allow names only.
func (t *tailnetMode) serveHTTP(srv *fasthttp.Server, port string, allow []string) error {
	ln, err := t.node.Listen("tcp", ":"+port)
	if err != nil {
		return fmt.Errorf("tailnet HTTP on port %s: %w", port, err)
	}
	inner := srv.Handler
	forbidden, _ := json.Marshal(wire.Error{Message: "this tailnet node may not use the API: --tailnet-http-allow does not name it or its tags", Code: "forbidden"})
	srv.Handler = func(ctx *fasthttp.RequestCtx) {
		if !t.node.AllowedRemote(ctx.RemoteAddr(), allow) {
			ctx.SetStatusCode(fasthttp.StatusForbidden)
			ctx.SetContentType("application/json")
			ctx.SetBody(forbidden)
			return
		}
		inner(ctx)
	}
	t.http = srv
	go func() {
		if err := srv.Serve(ln); err != nil {
			t.log.Error("tailnet HTTP server stopped", "err", err)
		}
	}()
	t.log.Info("HTTP API on the tailnet", "port", port, "allow", allow)
	return nil
}

// stop ends the tailnet's own servers; the node itself is closed by close,
// after the cluster, whose leadership transfer runs over it.
func (t *tailnetMode) stop(ctx context.Context) {
	close(t.done)
	if t.stopTCP != nil {
		t.stopTCP()
	}
	if t.conn != nil {
		if err := t.conn.Close(); err != nil {
			t.log.Warn("connector shutdown", "err", err)
		}
	}
	if t.http != nil {
		t.http.ShutdownWithContext(ctx)
	}
}

func (t *tailnetMode) close() {
	if err := t.node.Close(); err != nil {
		t.log.Warn("leaving the tailnet", "err", err)
	}
}
