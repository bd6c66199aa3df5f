package connector

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// This file carries flows that reach the connector some other way than
// TPROXY: a userspace network stack, such as a tailnet node's, accepts the
// connection and hands it over with the client it already knows and the
// destination the client sent to. They take the same path as TPROXY's
// flows: the limits, the pool lookup and the resolve (route), the guard, the
// metrics and the log line (done). The differences are the ones a
// connection that is not a kernel socket forces: no reset (it is closed),
// no splice, and idleness measured by the reads themselves.

// Carries reports whether the connector takes flows to dst: an IPv4
// address of the pool, or an address in the v6 prefix. A network stack asks
// it before it accepts a flow, so that flows to anything else are left to
// it.
func (c *Connector) Carries(dst netip.Addr) bool {
	c.guard.maybeRefreshPool(time.Now())
	pa, ok := c.poolAddr(dst)
	if !ok {
		return false
	}
	s := c.guard.poolSet.Load()
	return s != nil && s.set.Contains(pa)
}

// ServeConn carries one TCP flow to the domain the client's pool address
// dst stands for, on dst's port, and returns when the flow has ended; it
// closes conn. client names the flow's client as the DNS front end named
// the client of the query that gave it the address (a tailnet node's stable
// ID, say). A flow without a mapping, past a limit, or to a domain that
// cannot be reached is closed at once and counted as TPROXY's are.
func (c *Connector) ServeConn(conn net.Conn, client string, dst netip.AddrPort) {
	if !c.flows.add() {
		conn.Close()
		return
	}
	defer c.flows.done()
	c.guard.maybeRefreshPool(time.Now())
	f := flowInfo{proto: "tcp", src: addrPort(conn.RemoteAddr()), dst: netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), client: client}
	if why := c.limits.admit(client, time.Now()); why != "" {
		f.result, f.err = Limited, errors.New(why)
		conn.Close()
		c.done(&f)
		return
	}
	var held *heldFlow
	defer func() { c.limits.release(client, held) }()
	c.m.open("tcp", 1)
	defer c.m.open("tcp", -1)
	start := time.Now()
	stopConn := context.AfterFunc(c.ctx, func() { conn.Close() })
	defer stopConn()

	addrs := c.route(&f)
	if addrs == nil {
		conn.Close()
		c.done(&f)
		return
	}
	up, err := c.dialUp(addrs, &f)
	if err != nil {
		f.result, f.err = DialFailed, err
		conn.Close()
		c.done(&f)
		return
	}
	stopUp := context.AfterFunc(c.ctx, func() { up.Close() })
	defer stopUp()
	f.result = Relayed
	var upBytes, downBytes int64
	upBytes, downBytes, held = c.relayConns(client, conn, up)
	c.m.relayed("tcp", upBytes, downBytes)
	c.done(&f, "up_bytes", upBytes, "down_bytes", downBytes, "duration", time.Since(start).Round(time.Millisecond))
}

// addrPort is a connection's address, unmapped, whatever its type.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch t := a.(type) {
	case nil:
		return ap
	case *net.TCPAddr:
		ap = t.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// keepAliveConfig is the TCP keepalive of both sides of a flow: the first
// probe after idle, then one every third of it (at least a second), four
// unanswered probes end it.
func keepAliveConfig(idle time.Duration) net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: idle, Interval: max(time.Second, idle/3), Count: 4}
}

// dialUp connects to the flow's port on the addresses, racing them as
// Happy Eyeballs does.
func (c *Connector) dialUp(addrs []netip.Addr, f *flowInfo) (net.Conn, error) {
	start := time.Now()
	conn, ap, err := c.dialRace(addrs, f.dst.Port(), f.egress)
	c.m.dialed(time.Since(start))
	if err != nil {
		return nil, err
	}
	f.target = ap
	return conn, nil
}

// relayConns copies both ways until both directions have ended, passing a
// FIN on as a half-close where the connection can, and closing both sides
// on an error or once neither has received a byte for the idle timeout.
// The flow is held for who while it relays, as relay's.
func (c *Connector) relayConns(who string, client, up net.Conn) (upBytes, downBytes int64, held *heldFlow) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	ca, ua := &activeReader{Conn: client, last: &last}, &activeReader{Conn: up, last: &last}
	idle := c.cfg.IdleTimeout
	var t *time.Timer
	var mu sync.Mutex
	t = time.AfterFunc(idle, func() {
		mu.Lock()
		defer mu.Unlock()
		if q := time.Since(time.Unix(0, last.Load())); q < idle {
			t.Reset(idle - q)
			return
		}
		c.m.timedOut("idle")
		c.log.Debug("flow idle", "src", client.RemoteAddr(), "dst", client.LocalAddr(), "idle", idle)
		client.Close()
		up.Close()
	})
	defer func() {
		mu.Lock()
		t.Stop()
		mu.Unlock()
	}()
	var half halfClose
	quiet := func() time.Duration { return time.Since(time.Unix(0, last.Load())) }
	held = c.limits.hold(who, quiet, func() {
		c.m.reclaimed()
		c.log.Debug("flow reclaimed for a client under its share", "src", client.RemoteAddr(), "dst", client.LocalAddr(), "client", who)
		client.Close()
		up.Close()
	})
	end := func() {
		c.m.timedOut("half_close")
		c.log.Debug("flow half-closed and quiet too long", "src", client.RemoteAddr(), "dst", client.LocalAddr(), "timeout", c.cfg.HalfCloseTimeout)
		client.Close()
		up.Close()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var finished bool
		if upBytes, finished = pipeConns(up, ca); finished {
			half.start(c.cfg.HalfCloseTimeout, quiet, end)
		}
	}()
	var finished bool
	if downBytes, finished = pipeConns(client, ua); finished {
		half.start(c.cfg.HalfCloseTimeout, quiet, end)
	}
	wg.Wait()
	half.stop()
	client.Close()
	up.Close()
	return upBytes, downBytes, held
}

// pipeConns copies src to dst; at src's EOF it half-closes dst where it
// can, and on an error it closes both, as a reset would. It reports
// whether src finished rather than failed.
func pipeConns(dst net.Conn, src *activeReader) (int64, bool) {
	// Through the reader, not the connection, so each read is seen, but
	// with the *net.TCPConn's own ReadFrom where dst has one.
	n, err := io.Copy(dst, src)
	if err != nil {
		src.Conn.Close()
		dst.Close()
		return n, false
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		dst.Close()
	}
	return n, true
}

// halfClose ends a flow once one direction has finished and then no byte
// moved either way for the half-close timeout, as HAProxy's client-fin and
// server-fin timeouts do: a client that half-closes after its request still
// gets a long download whole, while a peer that never finishes its side
// holds the flow for the timeout, not the idle timeout. The relay stops it
// when both directions have finished.
type halfClose struct {
	mu    sync.Mutex
	timer *time.Timer
	done  bool
}

// start arms the timer on the first direction to finish; quiet says how
// long since either side last sent data. The second direction finishing
// ends the relay, which stops it.
func (h *halfClose) start(d time.Duration, quiet func() time.Duration, end func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done || h.timer != nil {
		return
	}
	h.timer = time.AfterFunc(d, func() {
		h.mu.Lock()
		if h.done {
			h.mu.Unlock()
			return
		}
		if q := quiet(); q < d {
			h.timer.Reset(d - q)
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		end()
	})
}

func (h *halfClose) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = true
	if h.timer != nil {
		h.timer.Stop()
	}
}

// activeReader notes the time of every read that returns data.
type activeReader struct {
	net.Conn
	last *atomic.Int64
}

func (r *activeReader) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// flowSet counts the flows ServeConn carries, so that Close can wait for
// them to end; once closed it admits none.
type flowSet struct {
	mu     sync.Mutex
	n      int
	closed bool
	zero   chan struct{}
}

func (s *flowSet) add() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.n++
	return true
}

func (s *flowSet) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n--
	if s.n == 0 && s.zero != nil {
		close(s.zero)
		s.zero = nil
	}
}

// close admits no more flows and waits up to d for those open to end
// (the connector's context is cancelled first, which closes them).
func (s *flowSet) close(d time.Duration) error {
	s.mu.Lock()
	s.closed = true
	if s.n == 0 {
		s.mu.Unlock()
		return nil
	}
	zero := make(chan struct{})
	s.zero = zero
	s.mu.Unlock()
	select {
	case <-zero:
		return nil
	case <-time.After(d):
		return errors.New("connector: flows still ending after " + d.String())
	}
}
