package dnsfront

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// slowConn is the net.PacketConn the DNS library serves when the fast read
// loops (udpLoops) own the UDP sockets: the loops hand it every query they
// do not answer themselves, and the library reads them from it, parses them
// and runs ServeDNS on a goroutine each, exactly as it does on a socket of
// its own. Its replies go out of one of the loops' sockets, all of which are
// bound to the same address and port.
type slowConn struct {
	out   *net.UDPConn
	queue chan slowPacket
	done  chan struct{}
	once  sync.Once
	bufs  sync.Pool
}

type slowPacket struct {
	buf  *[]byte
	addr *net.UDPAddr
}

// slowQueue bounds the queries waiting for the library. A loop never
// waits for room: past it a query is dropped, as the kernel drops what
// overflows a socket's buffer, so that slow queries cannot hold up the
// answers the loops give themselves.
const slowQueue = 4096

func newSlowConn(out *net.UDPConn) *slowConn {
	return &slowConn{
		out:   out,
		queue: make(chan slowPacket, slowQueue),
		done:  make(chan struct{}),
		bufs:  sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }},
	}
}

// push queues a copy of the packet b from src; it reports false when the
// queue is full or closed.
func (c *slowConn) push(b []byte, src netip.AddrPort, zone uint32) bool {
	bp := c.bufs.Get().(*[]byte)
	*bp = append((*bp)[:0], b...)
	a := &net.UDPAddr{IP: src.Addr().AsSlice(), Port: int(src.Port())}
	if zone != 0 {
		a.Zone = strconv.FormatUint(uint64(zone), 10)
	}
	select {
	case <-c.done:
	case c.queue <- slowPacket{buf: bp, addr: a}:
		return true
	default:
	}
	c.bufs.Put(bp)
	return false
}

func (c *slowConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.queue:
		n := copy(b, *p.buf)
		c.bufs.Put(p.buf)
		return n, p.addr, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

func (c *slowConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	a, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, net.InvalidAddrError("not a UDP address")
	}
	return c.out.WriteToUDP(b, a)
}

// Close stops the library's reads; the sockets belong to the loops.
func (c *slowConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

func (c *slowConn) LocalAddr() net.Addr { return c.out.LocalAddr() }

// SetReadDeadline: the library sets one in the future before each read,
// only so as to look for a shutdown now and then, and one in the past to
// stop reading at shutdown, which is all this honours.
func (c *slowConn) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && !t.After(time.Now()) {
		c.Close()
	}
	return nil
}

func (c *slowConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *slowConn) SetWriteDeadline(time.Time) error { return nil }
