package connector

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// transparent sets IP_TRANSPARENT (or its IPv6 twin) before bind: it lets a
// listener receive what TPROXY hands it, and a UDP socket bind to a pool
// address, which is no address of this host, to answer from it. With it, the
// UDP listener also asks for each datagram's original destination. The
// kernel allows it with CAP_NET_ADMIN (or CAP_NET_RAW) only.
func transparent(network, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		s := int(fd)
		v6 := network == "tcp6" || network == "udp6"
		if v6 {
			serr = unix.SetsockoptInt(s, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		} else {
			serr = unix.SetsockoptInt(s, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}
		if serr != nil {
			if errors.Is(serr, unix.EPERM) {
				serr = errors.New("setting IP_TRANSPARENT needs CAP_NET_ADMIN: run as root or give the capability (the systemd unit does)")
			}
			return
		}
		if network == "udp4" || network == "udp6" {
			// Many flows' reply sockets share a pool address and port, each
			// connected to another client.
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if v6 {
				serr = unix.SetsockoptInt(s, unix.SOL_IPV6, unix.IPV6_RECVORIGDSTADDR, 1)
			} else {
				serr = unix.SetsockoptInt(s, unix.SOL_IP, unix.IP_RECVORIGDSTADDR, 1)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// origDst reads a datagram's original destination from its control
// message (IP_ORIGDSTADDR or IPV6_ORIGDSTADDR).
func origDst(oob []byte) (netip.AddrPort, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.AddrPort{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_ORIGDSTADDR && len(m.Data) >= unix.SizeofSockaddrInet4:
			// struct sockaddr_in: family, port (network order), address.
			port := binary.BigEndian.Uint16(m.Data[2:4])
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Data[4:8])), port), true
		case m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_ORIGDSTADDR && len(m.Data) >= unix.SizeofSockaddrInet6:
			// struct sockaddr_in6: family, port, flowinfo, address, scope.
			port := binary.BigEndian.Uint16(m.Data[2:4])
			return netip.AddrPortFrom(netip.AddrFrom16([16]byte(m.Data[8:24])), port), true
		}
	}
	return netip.AddrPort{}, false
}

// quietFor is how long the socket has received no data, from the kernel's
// TCP_INFO: the idle timeout reads it instead of timing each read, so the
// copy can stay one splice loop that never returns to Go per chunk.
func quietFor(c *net.TCPConn) (time.Duration, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, err
	}
	if ierr != nil {
		return 0, ierr
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond, nil
}

// listenConfig makes transparent listeners. The TCP keepalive settings go
// on the listener, whose accepted sockets inherit them, rather than on each
// accepted socket: four system calls fewer per flow.
func listenConfig(keepAlive time.Duration) net.ListenConfig {
	ka := keepAliveConfig(keepAlive)
	return net.ListenConfig{KeepAlive: -1, Control: func(network, address string, rc syscall.RawConn) error {
		if err := transparent(network, address, rc); err != nil {
			return err
		}
		if network != "tcp4" && network != "tcp6" {
			return nil
		}
		var serr error
		err := rc.Control(func(fd uintptr) {
			s := int(fd)
			for _, o := range []struct{ level, opt, v int }{
				{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
				{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(ka.Idle / time.Second)},
				{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(ka.Interval / time.Second)},
				{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, ka.Count},
			} {
				if serr = unix.SetsockoptInt(s, o.level, o.opt, o.v); serr != nil {
					return
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
}
