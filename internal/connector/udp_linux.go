package connector

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// UDP flows. The transparent listener receives every datagram sent to a pool
// address, with its original destination; a flow is (client address and
// port, destination), the way a client's socket sees it. Each flow has its
// own socket to the domain, so replies can be told apart, and one goroutine
// reading it. Replies go out through a socket bound (transparently) to the
// original destination, shared by every flow to that destination: a client's
// connected UDP socket drops datagrams from any other source. That socket is
// not connected, so TPROXY never picks it for incoming datagrams, which all
// stay with the listener.

// udpKey names a flow.
type udpKey struct {
	src, dst netip.AddrPort
}

// maxPending bounds the datagrams kept for a flow whose destination is being
// looked up; more are dropped, as a full queue would drop them.
const maxPending = 8

// udpBufSize holds any datagram: a flow's reader needs one buffer whatever
// the sizes it will see, and a truncated datagram would be a corrupt one.
const udpBufSize = 65535

type udpFlow struct {
	f   flowInfo
	key udpKey

	mu      sync.Mutex
	up      *net.UDPConn // nil while being set up
	reply   *replySock
	pending [][]byte
	failed  bool

	held *heldFlow // set and read by the flow's own goroutine

	last      atomic.Int64 // unix nanoseconds of the last datagram either way
	upBytes   atomic.Int64
	downBytes atomic.Int64
	start     time.Time
}

func (fl *udpFlow) touch() { fl.last.Store(time.Now().UnixNano()) }

// replySock is the socket replies to one original destination leave from.
type replySock struct {
	conn *net.UDPConn
	refs int
}

type udpState struct {
	mu      sync.Mutex
	flows   map[udpKey]*udpFlow
	replies map[netip.AddrPort]*replySock
}

// readUDP takes datagrams from a transparent listener until it is closed.
func (c *Connector) readUDP(pc *net.UDPConn) {
	defer c.plat.wg.Done()
	buf := make([]byte, udpBufSize)
	oob := make([]byte, 256)
	u := &c.plat.udp
	for {
		n, oobn, _, src, err := pc.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("connector UDP read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		dst, ok := origDst(oob[:oobn])
		if !ok {
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
		key := udpKey{src: src, dst: dst}
		u.mu.Lock()
		fl := u.flows[key]
		if fl == nil {
			f := flowInfo{proto: "udp", src: src, dst: dst}
			if !c.admit(&f) {
				u.mu.Unlock()
				c.done(&f)
				continue
			}
			fl = &udpFlow{f: f, key: key, start: time.Now()}
			fl.touch()
			fl.pending = append(fl.pending, append([]byte(nil), buf[:n]...))
			u.flows[key] = fl
			u.mu.Unlock()
			c.plat.wg.Add(1)
			go c.serveUDP(fl)
			continue
		}
		u.mu.Unlock()
		fl.mu.Lock()
		up := fl.up
		if up == nil && !fl.failed && len(fl.pending) < maxPending {
			fl.pending = append(fl.pending, append([]byte(nil), buf[:n]...))
		}
		fl.mu.Unlock()
		if up != nil {
			if _, err := up.Write(buf[:n]); err == nil {
				fl.upBytes.Add(int64(n))
				fl.touch()
			}
		}
	}
}

// serveUDP sets a new flow up, then relays the domain's replies until the
// flow has been idle for the timeout.
func (c *Connector) serveUDP(fl *udpFlow) {
	defer c.plat.wg.Done()
	c.m.open("udp", 1)
	defer c.m.open("udp", -1)
	f := &fl.f
	addrs := c.route(f)
	var up *net.UDPConn
	var reply *replySock
	if addrs != nil {
		var err error
		if up, err = c.dialUDP(addrs, f); err != nil {
			f.result, f.err = DialFailed, err
		} else if reply, err = c.replySocket(f.dst); err != nil {
			up.Close()
			up = nil
			f.result, f.err = DialFailed, err
		}
	}
	if up == nil {
		// Keep the failed flow a moment, so that the datagrams right behind
		// the first are dropped without a lookup each.
		fl.mu.Lock()
		fl.failed, fl.pending = true, nil
		fl.mu.Unlock()
		c.done(f)
		select {
		case <-time.After(min(2*time.Second, c.cfg.UDPIdleTimeout)):
		case <-c.ctx.Done():
		}
		c.endUDP(fl)
		return
	}
	f.result = Relayed
	stop := context.AfterFunc(c.ctx, func() { up.Close() })
	defer stop()
	fl.mu.Lock()
	fl.up, fl.reply = up, reply
	pending := fl.pending
	fl.pending = nil
	fl.mu.Unlock()
	for _, p := range pending {
		if _, err := up.Write(p); err == nil {
			fl.upBytes.Add(int64(len(p)))
		}
	}
	fl.touch()
	fl.held = c.limits.hold(f.client, func() time.Duration { return time.Since(time.Unix(0, fl.last.Load())) }, func() {
		c.m.reclaimed()
		up.Close()
	})

	buf := make([]byte, udpBufSize)
	idle := c.cfg.UDPIdleTimeout
	for {
		up.SetReadDeadline(time.Unix(0, fl.last.Load()).Add(idle))
		n, err := up.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, fl.last.Load())) < idle {
				continue // the client sent meanwhile
			}
			if errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
				break
			}
			// An ICMP error (port unreachable) surfaces here; the client's
			// next datagram may yet be answered.
			continue
		}
		if _, err := reply.conn.WriteToUDPAddrPort(buf[:n], f.src); err == nil {
			fl.downBytes.Add(int64(n))
		}
		fl.touch()
	}
	up.Close()
	c.endUDP(fl)
	upB, downB := fl.upBytes.Load(), fl.downBytes.Load()
	c.m.relayed("udp", upB, downB)
	c.done(f, "up_bytes", upB, "down_bytes", downB, "duration", time.Since(fl.start).Round(time.Millisecond))
}

// endUDP removes a flow from the table and gives back what it held.
func (c *Connector) endUDP(fl *udpFlow) {
	u := &c.plat.udp
	u.mu.Lock()
	if u.flows[fl.key] == fl {
		delete(u.flows, fl.key)
	}
	if r := fl.reply; r != nil {
		if r.refs--; r.refs == 0 {
			delete(u.replies, fl.f.dst)
			r.conn.Close()
		}
	}
	u.mu.Unlock()
	c.limits.release(fl.f.client, fl.held)
}

// dialUDP opens a socket to the flow's port on the first address that takes
// one. UDP has no handshake, so an address that does not answer is not
// noticed here; the flow then simply gets no reply.
func (c *Connector) dialUDP(addrs []netip.Addr, f *flowInfo) (*net.UDPConn, error) {
	start := time.Now()
	defer func() { c.m.dialed(time.Since(start)) }()
	var errs []error
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, f.dst.Port())
		var local *net.UDPAddr
		if f.egress.IsValid() {
			local = &net.UDPAddr{IP: f.egress.AsSlice()}
		}
		conn, err := net.DialUDP("udp", local, net.UDPAddrFromAddrPort(ap))
		if err == nil {
			f.target = ap
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// replySocket returns the socket bound to dst, shared by its flows, with a
// reference taken for the caller.
func (c *Connector) replySocket(dst netip.AddrPort) (*replySock, error) {
	u := &c.plat.udp
	u.mu.Lock()
	defer u.mu.Unlock()
	if r := u.replies[dst]; r != nil {
		r.refs++
		return r, nil
	}
	network := "udp4"
	if dst.Addr().Is6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: transparent}
	pc, err := lc.ListenPacket(c.ctx, network, dst.String())
	if err != nil {
		return nil, err
	}
	r := &replySock{conn: pc.(*net.UDPConn), refs: 1}
	u.replies[dst] = r
	return r, nil
}
