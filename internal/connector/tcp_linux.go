package connector

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// acceptTCP takes flows from a transparent listener until it is closed.
// Admission runs here, before any goroutine is started for the flow, so a
// flood past the limits costs an accept and a reset each, nothing more.
func (c *Connector) acceptTCP(ln *net.TCPListener) {
	defer c.plat.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		conn, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, most likely: wait for flows to end
			// rather than spin.
			c.log.Warn("connector accept", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		f := flowInfo{proto: "tcp", src: addrPort(conn.RemoteAddr()), dst: addrPort(conn.LocalAddr())}
		if !c.admit(&f) {
			reset(conn)
			c.done(&f)
			continue
		}
		c.plat.wg.Add(1)
		go c.serveTCP(conn, f)
	}
}

// reset closes conn with an RST rather than a FIN, so the client's connect
// or first read fails at once instead of looking like an empty answer.
func reset(conn *net.TCPConn) {
	_ = conn.SetLinger(0)
	_ = conn.Close()
}

func (c *Connector) serveTCP(conn *net.TCPConn, f flowInfo) {
	defer c.plat.wg.Done()
	var held *heldFlow
	defer func() { c.limits.release(f.client, held) }()
	c.m.open("tcp", 1)
	defer c.m.open("tcp", -1)
	start := time.Now()
	// Shutdown ends every flow; AfterFunc costs no goroutine per flow.
	stopConn := context.AfterFunc(c.ctx, func() { reset(conn) })
	defer stopConn()

	addrs := c.route(&f)
	if addrs == nil {
		reset(conn)
		c.done(&f)
		return
	}
	up, err := c.dialTCP(addrs, &f)
	if err != nil {
		f.result, f.err = DialFailed, err
		reset(conn)
		c.done(&f)
		return
	}
	stopUp := context.AfterFunc(c.ctx, func() { reset(up) })
	defer stopUp()
	f.result = Relayed
	var upBytes, downBytes int64
	upBytes, downBytes, held = c.relay(f.client, conn, up)
	c.m.relayed("tcp", upBytes, downBytes)
	c.done(&f, "up_bytes", upBytes, "down_bytes", downBytes, "duration", time.Since(start).Round(time.Millisecond))
}

// dialTCP is dialUp for the relay's splice, which needs both ends to be
// *net.TCPConn.
func (c *Connector) dialTCP(addrs []netip.Addr, f *flowInfo) (*net.TCPConn, error) {
	conn, err := c.dialUp(addrs, f)
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// relay copies both ways until both directions have ended, and returns the
// bytes sent upstream (client to domain) and downstream. Each direction
// passes its end on as it came: a FIN as a half-close, so a client that
// shuts its write side after a request still reads the whole answer; a reset
// or an error as a reset of both sides. io.Copy between two *net.TCPConn
// splices on Linux. The flow is held for who (limits.hold) while it
// relays; the hold is returned for the caller's release.
func (c *Connector) relay(who string, client, up *net.TCPConn) (upBytes, downBytes int64, held *heldFlow) {
	stopIdle := c.watchIdle(client, up)
	defer stopIdle()
	var half halfClose
	quiet := func() time.Duration {
		qc, errC := quietFor(client)
		qu, errU := quietFor(up)
		if errC != nil || errU != nil {
			// Closed under us: nothing more will move.
			return c.cfg.HalfCloseTimeout
		}
		return min(qc, qu)
	}
	held = c.limits.hold(who, quiet, func() {
		c.m.reclaimed()
		c.log.Debug("flow reclaimed for a client under its share", "src", client.RemoteAddr(), "dst", client.LocalAddr(), "client", who)
		reset(client)
		reset(up)
	})
	end := func() {
		c.m.timedOut("half_close")
		c.log.Debug("flow half-closed and quiet too long", "src", client.RemoteAddr(), "dst", client.LocalAddr(), "timeout", c.cfg.HalfCloseTimeout)
		reset(client)
		reset(up)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var finished bool
		if upBytes, finished = pipe(up, client); finished {
			half.start(c.cfg.HalfCloseTimeout, quiet, end)
		}
	}()
	var finished bool
	if downBytes, finished = pipe(client, up); finished {
		half.start(c.cfg.HalfCloseTimeout, quiet, end)
	}
	wg.Wait()
	half.stop()
	client.Close()
	up.Close()
	return upBytes, downBytes, held
}

// pipe copies src to dst and reports whether src finished (a FIN, passed
// on as a half-close) rather than failed (both reset).
func pipe(dst, src *net.TCPConn) (int64, bool) {
	n, err := io.Copy(dst, src)
	if err != nil {
		reset(src)
		reset(dst)
		return n, false
	}
	_ = dst.CloseWrite()
	return n, true
}

// watchIdle resets both sides once neither has received data for the idle
// timeout. It asks the kernel when each socket last received data, at most
// once per timeout, rather than timing every read.
func (c *Connector) watchIdle(a, b *net.TCPConn) (stop func()) {
	idle := c.cfg.IdleTimeout
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	check := func() {
		qa, errA := quietFor(a)
		qb, errB := quietFor(b)
		mu.Lock()
		defer mu.Unlock()
		if stopped || errA != nil || errB != nil {
			return
		}
		if q := min(qa, qb); q < idle {
			t.Reset(idle - q)
			return
		}
		c.m.timedOut("idle")
		c.log.Debug("flow idle", "src", a.RemoteAddr(), "dst", a.LocalAddr(), "idle", idle)
		reset(a)
		reset(b)
	}
	mu.Lock()
	t = time.AfterFunc(idle, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}
