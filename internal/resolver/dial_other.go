//go:build !linux

package resolver

import (
	"net"
	"net/netip"
)

// udpSockets opens a socket per query and closes it after, so that each
// query has a random ephemeral port (Linux reuses sockets: dial_linux.go).
type udpSockets struct{}

func (*udpSockets) get(ap netip.AddrPort) (udpConn, error) {
	return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
}

func (*udpSockets) put(c udpConn, _ bool) { c.Close() }

func (*udpSockets) closeAll() {}
