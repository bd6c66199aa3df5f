//go:build !linux

package resolver

import (
	"net"
	"net/netip"
)

// dialUDP opens a UDP socket connected to ap, on a random ephemeral port.
func dialUDP(ap netip.AddrPort) (udpConn, error) {
	return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
}
