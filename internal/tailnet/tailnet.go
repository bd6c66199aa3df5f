// Package tailnet runs an ippool server as a node of a tailnet, embedded with
// Tailscale's tsnet: the node's own userspace network stack carries the
// cluster port, DNS, the HTTP API and the clients' flows, and the tailnet's
// identity of a peer stands where ippool elsewhere uses an address or a
// certificate:
//
//   - a cluster connection is admitted only from a node carrying the
//     cluster's tag (the tailnet's identity replaces the cluster CA);
//   - a client is the node that sent a query or a flow, named by its stable
//     node ID, which survives the node's address changing;
//   - the HTTP API answers only the nodes and tags an operator names.
//
// Nothing here runs unless `ippool serve --tailnet` asks for it.
package tailnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/envknob"
	"tailscale.com/ipn"
	"tailscale.com/tsnet"
)

// Config configures the tailnet node.
type Config struct {
	// Hostname is the node's name on the tailnet.
	Hostname string
	// Dir keeps the node's state (its keys), so it stays the same node,
	// with the same addresses, across restarts.
	Dir string
	// AuthKey logs a new node in; a node with state in Dir needs none.
	AuthKey string
	// ControlURL is the coordination server; empty: Tailscale's.
	ControlURL string
	// ClusterTag is the ACL tag every server of the cluster carries, like
	// "tag:ippool"; the node asks for it, and admits cluster connections
	// only from nodes that have it.
	ClusterTag string
	// UploadLogs sends tsnet's logs to Tailscale's log service, as
	// tailscaled does. Off by default: a self-hosted control server's
	// tailnet should not report to Tailscale.
	UploadLogs bool
	// Logger gets the node's messages for the operator (a login URL);
	// tsnet's own verbose logs at debug level.
	Logger *slog.Logger
}

// CheckTag refuses a tag the control server would never grant.
func CheckTag(tag string) error {
	name, ok := strings.CutPrefix(tag, "tag:")
	if !ok || name == "" || strings.ContainsAny(name, " ,:") {
		return fmt.Errorf("cluster tag %q is not an ACL tag: want tag:NAME, like tag:ippool", tag)
	}
	return nil
}

// Node is a running tailnet node.
type Node struct {
	srv      *tsnet.Server
	lc       *local.Client
	tag      string
	ip4, ip6 netip.Addr
	log      *slog.Logger
	// identities are the tags and login of the nodes WhoIs named, by
	// stable ID, for the policy's tag: and user: selectors.
	identities identityCache
}

// Start brings the node up and returns once it is logged in and has its
// addresses. Without an auth key and state, it waits for an interactive
// login, whose URL it logs; ctx ends the wait.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := CheckTag(cfg.ClusterTag); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if !cfg.UploadLogs {
		// tsnet uploads its logs to log.tailscale.com unless told this.
		envknob.SetNoLogsNoSupport()
	}
	log := cfg.Logger
	srv := &tsnet.Server{
		Hostname:      cfg.Hostname,
		Dir:           cfg.Dir,
		AuthKey:       cfg.AuthKey,
		ControlURL:    cfg.ControlURL,
		AdvertiseTags: []string{cfg.ClusterTag},
		UserLogf:      func(format string, args ...any) { log.Info(fmt.Sprintf(format, args...)) },
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		srv.Logf = func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) }
	}
	st, err := srv.Up(ctx)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("tailnet: bringing the node up: %w", err)
	}
	lc, err := srv.LocalClient()
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("tailnet: %w", err)
	}
	n := &Node{srv: srv, lc: lc, tag: cfg.ClusterTag, log: log}
	for _, a := range st.TailscaleIPs {
		switch {
		case a.Is4() && !n.ip4.IsValid():
			n.ip4 = a
		case a.Is6() && !n.ip6.IsValid():
			n.ip6 = a
		}
	}
	if !n.ip4.IsValid() {
		srv.Close()
		return nil, errors.New("tailnet: the node has no IPv4 address on the tailnet")
	}
	hasTag := st.Self != nil && st.Self.Tags != nil && slices.Contains(st.Self.Tags.AsSlice(), cfg.ClusterTag)
	if !hasTag {
		// The other servers will refuse this one until it has it; say so
		// now rather than leave an operator to read refusals on theirs.
		log.Warn("this node does not carry the cluster tag (yet): the other servers refuse its cluster connections until the control server grants it (ACL tagOwners, or an auth key made with the tag)", "tag", cfg.ClusterTag)
	}
	log.Info("on the tailnet", "hostname", cfg.Hostname, "ipv4", n.ip4, "ipv6", n.ip6, "tag", cfg.ClusterTag)
	return n, nil
}

// IPv4 is the node's IPv4 address on the tailnet.
func (n *Node) IPv4() netip.Addr { return n.ip4 }

// IPv6 is the node's IPv6 address on the tailnet (invalid if none).
func (n *Node) IPv6() netip.Addr { return n.ip6 }

// Listen listens on the node's tailnet addresses ("tcp", ":PORT") or one
// of them.
func (n *Node) Listen(network, addr string) (net.Listener, error) {
	return n.srv.Listen(network, addr)
}

// ListenPacket listens for datagrams on one of the node's tailnet addresses.
func (n *Node) ListenPacket(network, addr string) (net.PacketConn, error) {
	return n.srv.ListenPacket(network, addr)
}

// Dial connects through the tailnet; addr may name a node by its name.
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.srv.Dial(ctx, network, addr)
}

// Close leaves the tailnet.
func (n *Node) Close() error { return n.srv.Close() }

// AdvertiseRoutes makes the node a subnet router for prefixes (replacing
// what it advertised before). The control server must approve them.
func (n *Node) AdvertiseRoutes(ctx context.Context, prefixes []netip.Prefix) error {
	_, err := n.lc.EditPrefs(ctx, &ipn.MaskedPrefs{
		Prefs:              ipn.Prefs{AdvertiseRoutes: prefixes},
		AdvertiseRoutesSet: true,
	})
	if err != nil {
		return fmt.Errorf("tailnet: advertising routes %v: %w", prefixes, err)
	}
	return nil
}

// ClusterPeers lists the cluster addresses (tailnet IPv4 and port) of the
// other nodes that carry the cluster tag, online or not: every server of
// the cluster listens on the same port.
func (n *Node) ClusterPeers(port uint16) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := n.lc.Status(ctx)
	if err != nil {
		n.log.Warn("tailnet status", "err", err)
		return nil
	}
	var addrs []string
	for _, p := range st.Peer {
		if p.Tags == nil || !slices.Contains(p.Tags.AsSlice(), n.tag) {
			continue
		}
		for _, a := range p.TailscaleIPs {
			if a.Is4() {
				addrs = append(addrs, netip.AddrPortFrom(a, port).String())
				break
			}
		}
	}
	slices.Sort(addrs)
	return addrs
}
