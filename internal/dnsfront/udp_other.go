//go:build !linux

package dnsfront

import (
	"errors"
	"net"
)

// fastUDP reports whether this system has the fast read loops; elsewhere the
// DNS library reads the UDP socket itself.
const fastUDP = false

type udpLoops struct{ slow *slowConn }

func listenUDPs(string, int) ([]*net.UDPConn, error) {
	return nil, errors.New("dnsfront: no fast UDP loops on this system")
}

func loopsFor() int { return 1 }

func startUDPLoops(*Server, []*net.UDPConn) (*udpLoops, error) {
	return nil, errors.New("dnsfront: no fast UDP loops on this system")
}

func (u *udpLoops) close() {}
