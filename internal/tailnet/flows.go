package tailnet

import (
	"context"
	"net"
	"net/netip"
)

// Flows is what carries the clients' flows (connector.Connector).
type Flows interface {
	// Carries reports whether flows to dst are its.
	Carries(dst netip.Addr) bool
	// ServeConn carries one flow of client to dst and closes conn.
	ServeConn(conn net.Conn, client string, dst netip.AddrPort)
}

// HandleTCP hands f every TCP flow that reaches the node for a destination
// f carries (an address of a subnet route it advertises), named by the
// node that sent it. It returns a function that stops it.
//
// The node that sent a flow is named before the flow is accepted: a source
// no node holds is reset. The pool's answer is f's to get, after the
// handshake, as for flows that arrive by TPROXY.
func (n *Node) HandleTCP(f Flows) (stop func()) {
	return n.srv.RegisterFallbackTCPHandler(func(src, dst netip.AddrPort) (func(net.Conn), bool) {
		if !f.Carries(dst.Addr()) {
			return nil, false
		}
		p, err := n.WhoIs(context.Background(), src.Addr())
		if err != nil || p.StableID == "" {
			n.log.Debug("flow from no known node", "src", src, "dst", dst, "err", err)
			return nil, true // intercepted, no handler: a reset
		}
		return func(c net.Conn) { f.ServeConn(c, p.StableID, dst) }, true
	})
}
