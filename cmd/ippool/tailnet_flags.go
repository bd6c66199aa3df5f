package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ippool/ippool/internal/server"
	"github.com/ippool/ippool/internal/tailnet"
)

// TailnetFlags are serve's tailnet settings, embedded in ServeCmd.
type TailnetFlags struct {
	Tailnet           bool     `help:"Run as a node of a tailnet (Tailscale's tsnet), the NAT connector of the tailnet: the cluster port, DNS (on the node's tailnet IPv4, port 53) and the clients' TCP flows (to the pool and --v6-prefix, advertised as subnet routes) run over the tailnet; clients are the nodes that ask, by stable node ID; cluster peers are the nodes carrying --cluster-tag. The auth key comes from TS_AUTHKEY."`
	ClusterTag        string   `help:"With --tailnet: the ACL tag every server carries (like tag:ippool); cluster connections from nodes without it are refused, and with --bootstrap-expect and no --join the servers find each other by it."`
	ControlURL        string   `name:"control-url" help:"With --tailnet: the coordination server (default: Tailscale's), e.g. a Headscale URL."`
	TailnetHostname   string   `name:"tailnet-hostname" help:"With --tailnet: the node's name on the tailnet (default: --id)."`
	TailnetStateDir   string   `name:"tailnet-state-dir" help:"With --tailnet: where the node keeps its keys, so it stays the same node across restarts (default: DATA-DIR/tailnet)."`
	TailnetHTTPAllow  []string `name:"tailnet-http-allow" help:"With --tailnet: serve the HTTP API and console on the node's tailnet address too, at --http-addr's port, to these nodes only: tags (tag:ops), host names or stable node IDs; others get 403. ACL tokens apply on top." sep:","`
	TailnetUploadLogs bool     `name:"tailnet-upload-logs" help:"With --tailnet: send the tailnet node's logs to Tailscale's log service, as tailscaled does (off: nothing is sent)."`
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
	if p, err := netip.ParsePrefix(c.V6Prefix); err == nil && p.Overlaps(tailscaleViaRange) {
		return fmt.Errorf("--v6-prefix %s lies in Tailscale's 4via6 range %s: the tailnet turns addresses there back into IPv4 site routes and resets flows to them before ippool sees them, so every AAAA answer would be unreachable. Use a /96 outside it, like %s (under natc's range)", p, tailscaleViaRange, suggestedTailnetV6)
	}
	for _, e := range c.TailnetHTTPAllow {
		if strings.TrimSpace(e) == "" {
			return errors.New("--tailnet-http-allow: an empty entry; give tags (tag:ops), host names or stable node IDs")
		}
	}
	return nil
}

// tailnetConfig is the tailnet node's configuration from the flags; the
// cluster address's port is the node's cluster port.
func (c *ServeCmd) tailnetConfig(log *slog.Logger, id string) (server.Tailnet, error) {
	var cfg server.Tailnet
	_, portStr, err := net.SplitHostPort(c.ClusterAddr)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || port == 0 {
		return cfg, fmt.Errorf("--cluster-addr %q: with --tailnet only its port is used, and it must be a port number", c.ClusterAddr)
	}
	hostname := c.TailnetHostname
	if hostname == "" {
		hostname = id
	}
	dir := c.TailnetStateDir
	if dir == "" {
		dir = filepath.Join(c.DataDir, "tailnet")
	}
	cfg.Node = tailnet.Config{
		Hostname: hostname, Dir: dir, AuthKey: os.Getenv("TS_AUTHKEY"), ControlURL: c.ControlURL,
		ClusterTag: c.ClusterTag, UploadLogs: c.TailnetUploadLogs, Logger: log.With("component", "tailnet"),
	}
	cfg.ClusterPort, cfg.HTTPAllow = uint16(port), c.TailnetHTTPAllow
	if cfg.Connector, err = c.connectorConfig(log.With("component", "connector")); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// tailscaleViaRange is Tailscale's 4via6 prefix: tsnet's netstack takes an
// address in it for an IPv4 address behind a site ID, not for the address
// itself. suggestedTailnetV6 is a /96 outside it, under the prefix natc
// uses for its own IPv6 answers.
var (
	tailscaleViaRange  = netip.MustParsePrefix("fd7a:115c:a1e0:b1a::/64")
	suggestedTailnetV6 = "fd7a:115c:a1e0:a99c::/96"
)
