package dnsfront

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fastUDP reports whether this system has the fast read loops.
const fastUDP = true

// listenUDPs binds n UDP sockets to addr with SO_REUSEPORT, the first one
// choosing the port when addr's is 0, so that the kernel spreads queries
// over them by source and each loop reads its own socket without a lock.
// The TCP listener bound next to them has no SO_REUSEPORT, so a second
// server on the same address still fails to start.
func listenUDPs(addr string, n int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	var conns []*net.UDPConn
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, pc.(*net.UDPConn))
		addr = pc.LocalAddr().String()
	}
	return conns, nil
}

// loopsFor is how many sockets and read loops to run: one per CPU Go runs
// on, since each loop does its queries' work itself.
func loopsFor() int { return min(max(runtime.GOMAXPROCS(0), 1), 16) }

// udpLoops reads the UDP sockets in batches (recvmmsg), answers the queries
// fastAnswer can answer in place, sends those replies in one batch
// (sendmmsg), and hands every other query to the DNS library through slow.
type udpLoops struct {
	conns []*net.UDPConn
	slow  *slowConn
	news  *newNames
	wg    sync.WaitGroup
}

func startUDPLoops(s *Server, conns []*net.UDPConn) (*udpLoops, error) {
	u := &udpLoops{conns: conns, slow: newSlowConn(conns[0])}
	u.news = newNewNames(s, u.slow)
	var loops []*udpLoop
	for _, c := range conns {
		rc, err := c.SyscallConn()
		if err != nil {
			return nil, err
		}
		l := newUDPLoop(s, rc, u.slow)
		l.conn, l.news = c, u.news
		loops = append(loops, l)
	}
	for _, l := range loops {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			l.run()
		}()
	}
	return u, nil
}

// close closes the sockets and waits for the loops and for the new names'
// workers, which end with the server's context.
func (u *udpLoops) close() {
	for _, c := range u.conns {
		c.Close()
	}
	u.wg.Wait()
	u.news.wait()
}

const (
	batch    = 32   // messages per recvmmsg and sendmmsg
	maxQuery = 4096 // as the library reads (dns.Server.UDPSize)
	maxReply = 512  // a fast reply: header, question (<= 259), record, OPT
)

// mmsghdr is struct mmsghdr: a msghdr and the length of its message.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

type udpLoop struct {
	s    *Server
	fast *fastState
	rc   syscall.RawConn
	conn *net.UDPConn
	slow *slowConn
	news *newNames

	in      [batch]mmsghdr
	inIov   [batch]unix.Iovec
	inAddr  [batch]unix.RawSockaddrInet6
	inBuf   [batch][maxQuery]byte
	out     [batch]mmsghdr
	outIov  [batch]unix.Iovec
	outBuf  [batch][]byte
	got     int // messages the last recvmmsg returned
	nOut    int // replies in out
	sent    int // replies of out sent so far
	recvErr syscall.Errno

	// Made once: a method value handed to RawConn each time would be
	// allocated each time.
	recvFn, sendFn func(fd uintptr) bool
}

func newUDPLoop(s *Server, rc syscall.RawConn, slow *slowConn) *udpLoop {
	l := &udpLoop{s: s, fast: s.newFastState(), rc: rc, slow: slow}
	for i := range l.in {
		l.inIov[i].Base = &l.inBuf[i][0]
		l.inIov[i].SetLen(maxQuery)
		l.in[i].hdr.Iov = &l.inIov[i]
		l.in[i].hdr.SetIovlen(1)
		l.in[i].hdr.Name = (*byte)(unsafe.Pointer(&l.inAddr[i]))
		l.outBuf[i] = make([]byte, 0, maxReply)
		l.out[i].hdr.Iov = &l.outIov[i]
		l.out[i].hdr.SetIovlen(1)
	}
	l.recvFn, l.sendFn = l.recv, l.send
	return l
}

// recv and send use RawSyscall6, which does not tell the scheduler about the
// call: both are non-blocking (MSG_DONTWAIT), and a call the scheduler knows
// of lets sysmon hand the loop's P to another thread once it outlasts a
// sysmon tick, which a sendmmsg running the loopback delivery of a batch of
// replies often does; the loop would then wait for a P to come back.
func (l *udpLoop) recv(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&l.in[0])), batch, unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EWOULDBLOCK {
		return false
	}
	l.got, l.recvErr = int(r), e
	if e != 0 {
		l.got = 0
	}
	return true
}

func (l *udpLoop) send(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&l.out[l.sent])), uintptr(l.nOut-l.sent), unix.MSG_DONTWAIT, 0, 0)
	switch {
	case e == unix.EAGAIN || e == unix.EWOULDBLOCK:
		return false
	case e == unix.EINTR:
		return true // a signal (Go's preemption): send the same batch again
	case e != 0:
		// The first message failed (an unreachable source, say): it is
		// dropped, as a failed write was before.
		l.sent++
	default:
		l.sent += int(r)
	}
	return true
}

func (l *udpLoop) run() {
	for {
		for i := range l.in {
			l.in[i].hdr.Namelen = unix.SizeofSockaddrInet6
			l.in[i].hdr.Flags = 0
		}
		if err := l.rc.Read(l.recvFn); err != nil {
			return // closed
		}
		l.nOut = 0
		l.fast.now = l.s.now()
		for i := 0; i < l.got; i++ {
			l.handle(i)
		}
		l.fast.flush(l.s)
		for l.sent = 0; l.sent < l.nOut; {
			if err := l.rc.Write(l.sendFn); err != nil {
				return
			}
		}
	}
}

func (l *udpLoop) handle(i int) {
	m := &l.in[i]
	src, zone, ok := sockaddrAddr(&l.inAddr[i])
	if !ok {
		return
	}
	pkt := l.inBuf[i][:min(int(m.n), maxQuery)]
	if l.fast.lp != nil && m.hdr.Flags&unix.MSG_TRUNC == 0 {
		out, ok := l.s.fastAnswer(l.fast, pkt, src.Addr(), l.outBuf[l.nOut])
		if ok {
			o := &l.out[l.nOut]
			l.outBuf[l.nOut] = out
			l.outIov[l.nOut].Base = &out[0]
			l.outIov[l.nOut].SetLen(len(out))
			o.hdr.Name = m.hdr.Name
			o.hdr.Namelen = m.hdr.Namelen
			l.nOut++
			return
		}
		if l.fast.asked && zone == 0 && l.news.take(pkt, src, l.conn) {
			return
		}
	}
	if !l.slow.push(pkt, src, zone) {
		l.s.stats.dropped.Add(1)
	}
}

// sockaddrAddr reads a source address; IPv4-mapped sources come out as
// IPv4, and the scope of a link-local IPv6 source separately, so that the
// fast path's address needs no zone string.
func sockaddrAddr(sa *unix.RawSockaddrInet6) (netip.AddrPort, uint32, bool) {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1])), 0, true
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1])), sa.Scope_id, true
	}
	return netip.AddrPort{}, 0, false
}
