package resolver

import (
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpSockets keeps UDP sockets between queries, each without a port: a
// query connects one to its upstream, which binds it to a random ephemeral
// port the kernel picks, and when the exchange ends it is disconnected
// (connect to AF_UNSPEC), which on Linux releases a port the socket did not
// bind explicitly (__udp_disconnect). So every query still has a fresh
// random source port, and a datagram sent to a finished query's port meets
// no socket, as if the socket had been closed; but the socket(2), close(2)
// and the poller's registration and removal of a socket per query, a
// quarter of the CPU of answering new names, are saved.
type udpSockets struct {
	mu     sync.Mutex
	free   map[int][]*pooledUDP // by address family
	closed bool                 // closeAll has run: put closes
}

// maxIdleUDPSockets bounds the idle sockets kept: a burst of new names
// (every query of it a lookup at once) reuses sockets instead of opening
// and closing one per lookup.
const maxIdleUDPSockets = 256

// pooledUDP is a UDP socket waiting in the runtime's poller, as a net.Conn
// does, deadlines included.
type pooledUDP struct {
	*os.File
	rc     syscall.RawConn
	family int
}

// get returns a socket connected to ap.
func (p *udpSockets) get(ap netip.AddrPort) (udpConn, error) {
	var sa unix.Sockaddr
	family := unix.AF_INET
	if a := ap.Addr(); a.Is4() || a.Is4In6() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	}
	var c *pooledUDP
	p.mu.Lock()
	if free := p.free[family]; len(free) > 0 {
		c = free[len(free)-1]
		p.free[family] = free[:len(free)-1]
	}
	p.mu.Unlock()
	if c == nil {
		fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, os.NewSyscallError("socket", err)
		}
		f := os.NewFile(uintptr(fd), "udp")
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			return nil, err
		}
		c = &pooledUDP{File: f, rc: rc, family: family}
	}
	var cerr error
	if err := c.rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil || cerr != nil {
		c.Close()
		if err == nil {
			err = os.NewSyscallError("connect", cerr)
		}
		return nil, err
	}
	return c, nil
}

// put takes back a socket get returned. One whose exchange failed is
// closed: it may hold an error or a reply still on its way.
func (p *udpSockets) put(conn udpConn, ok bool) {
	c, pooled := conn.(*pooledUDP)
	if !pooled || !ok || !c.disconnect() {
		conn.Close()
		return
	}
	p.mu.Lock()
	if p.free == nil {
		p.free = make(map[int][]*pooledUDP)
	}
	if !p.closed && len(p.free[c.family]) < maxIdleUDPSockets {
		p.free[c.family] = append(p.free[c.family], c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// disconnect releases the socket's port and drops what arrived on it
// before, so the next query reads only what is sent to its own port.
func (c *pooledUDP) disconnect() bool {
	ok := false
	c.rc.Control(func(fd uintptr) {
		unspec := unix.RawSockaddr{Family: unix.AF_UNSPEC}
		if _, _, e := unix.Syscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&unspec)), unsafe.Sizeof(unspec)); e != 0 {
			return
		}
		var buf [512]byte
		for range 64 {
			if _, err := unix.Read(int(fd), buf[:]); err == unix.EAGAIN {
				ok = true
				return
			} else if err != nil && err != unix.EINTR {
				return
			}
		}
	})
	return ok
}

// closeAll closes the idle sockets.
func (p *udpSockets) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for family, free := range p.free {
		for _, c := range free {
			c.Close()
		}
		delete(p.free, family)
	}
}
