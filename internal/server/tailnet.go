package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ippool/ippool/internal/cluster"
	"github.com/ippool/ippool/internal/connector"
	"github.com/ippool/ippool/internal/dnsfront"
	"github.com/ippool/ippool/internal/tailnet"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// tailnetMode is a server's life on the tailnet.
type tailnetMode struct {
	node    *tailnet.Node
	log     *slog.Logger
	stopTCP func()
	conn    *connector.Connector
	http    *fasthttp.Server
	done    chan struct{}
}

// Tailnet is the server's life as a node of a tailnet (serve --tailnet).
type Tailnet struct {
	Node tailnet.Config
	// ClusterPort is the port of the cluster address on the node's tailnet
	// IPv4.
	ClusterPort uint16
	// HTTPAllow, when not empty, serves the HTTP API on the node's tailnet
	// addresses, at the HTTP address's port, to these nodes only.
	HTTPAllow []string
	// Connector carries the flows the tailnet hands over.
	Connector connector.Config
}

// startTailnet brings the node up and points the cluster at it: the
// cluster address is the node's tailnet IPv4 at ClusterPort.
func startTailnet(ctx context.Context, cfg Tailnet, log *slog.Logger, ccfg *cluster.Config) (*tailnetMode, error) {
	node, err := tailnet.Start(ctx, cfg.Node)
	if err != nil {
		return nil, err
	}
	port := cfg.ClusterPort
	ln, err := node.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("tailnet: listening on the cluster port: %w", err)
	}
	ccfg.ClusterAddr = netip.AddrPortFrom(node.IPv4(), port).String()
	nw := &cluster.Network{
		Name: "tailnet", Listener: ln,
		Dial:      func(ctx context.Context, addr string) (net.Conn, error) { return node.Dial(ctx, "tcp", addr) },
		Authorize: node.AuthorizeClusterPeer,
	}
	if len(ccfg.Join) == 0 {
		nw.Peers = func() []string { return node.ClusterPeers(port) }
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
	var routes []netip.Prefix
	if set, err := cfg.Addresses(); err == nil {
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
