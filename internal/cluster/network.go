package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Network carries the cluster port over something other than the host's
// TCP, such as a tailnet, where the network itself says who a peer is: a
// connection is admitted by asking it (Authorize), not by a certificate from
// the cluster CA. Raft, RPCs and forwarding all run over it, so a peer it
// refuses can neither connect, vote, replicate nor forward.
type Network struct {
	// Name says in logs and status what stands in for TLS ("tailnet").
	Name string
	// Listener accepts the cluster port's connections. The cluster closes
	// it when it stops.
	Listener net.Listener
	// Dial opens a connection to another server's cluster address.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Authorize is asked about every accepted connection before a byte of
	// it is read; an error refuses it (the connection is closed and the
	// error logged). Nil admits every connection the network delivers.
	Authorize func(net.Conn) error
	// Peers, when set, lists more cluster addresses to join or bootstrap
	// with, asked again on every try, so servers that come up later are
	// found (a tailnet's nodes carrying the cluster's tag).
	Peers func() []string
}

// checkNetwork refuses a Network that cannot work.
func (c *Config) checkNetwork() error {
	nw := c.Network
	if nw == nil {
		return nil
	}
	if nw.Listener == nil || nw.Dial == nil {
		return errors.New("cluster: a custom network needs a listener and a dialer")
	}
	if c.TLS != nil {
		return fmt.Errorf("cluster: the %s's identity replaces TLS on the cluster port; give no TLS files with it", nw.Name)
	}
	// Raft advertises the address as it is, so it must be one that every
	// peer reaches this server at, port included.
	ap, err := netip.ParseAddrPort(c.ClusterAddr)
	if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
		return fmt.Errorf("cluster: on the %s the cluster address must be this server's address there with a port, like 100.64.0.1:7481; got %q", nw.Name, c.ClusterAddr)
	}
	return nil
}

// listen opens the cluster port: the Network's listener, or TCP on the
// cluster address.
func (n *Node) listen() (net.Listener, error) {
	if n.cfg.Network != nil {
		return n.cfg.Network.Listener, nil
	}
	return net.Listen("tcp", n.cfg.ClusterAddr)
}

// joinAddrs is Join with the Network's peers added, without this server.
func (n *Node) joinAddrs() []string {
	addrs := slices.Clone(n.cfg.Join)
	if nw := n.cfg.Network; nw != nil && nw.Peers != nil {
		for _, a := range nw.Peers() {
			if a != n.cfg.ClusterAddr && !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
	}
	return addrs
}

// joinsByDiscovery reports whether the server finds the servers to join
// through the Network as well as through Join.
func (c *Config) joinsByDiscovery() bool {
	return c.Network != nil && c.Network.Peers != nil
}

// RefusedPeers counts cluster connections Network.Authorize refused.
func (n *Node) RefusedPeers() uint64 { return n.mux.refused.Load() }
