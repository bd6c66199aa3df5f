package dnsfront

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// connLimiter caps open DNS-over-TCP connections in all and per source.
// miekg/dns serves every accepted connection with a goroutine and a buffer
// and caps neither, so without this a few hosts holding idle connections
// could take the server's memory and file descriptors.
type connLimiter struct {
	max, perSource int
	refused        *atomic.Uint64

	mu       sync.Mutex
	total    int
	bySource map[netip.Addr]int
}

func newConnLimiter(max, perSource int, refused *atomic.Uint64) *connLimiter {
	return &connLimiter{max: max, perSource: perSource, refused: refused, bySource: make(map[netip.Addr]int)}
}

func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func (l *connLimiter) acquire(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.bySource[src] >= l.perSource {
		return false
	}
	l.total++
	l.bySource[src]++
	return true
}

func (l *connLimiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
}

// listener hands the DNS server only the connections within the caps. A
// connection past a cap is reset at once rather than left to queue: a
// client that gets no service should learn it now, and a reset leaves no
// TIME_WAIT socket behind on this side.
func (l *connLimiter) listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, l: l}
}

type limitedListener struct {
	net.Listener
	l *connLimiter
}

func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src, _ := sourceOf(c.RemoteAddr())
		if ln.l.acquire(src) {
			return &limitedConn{Conn: c, l: ln.l, src: src}, nil
		}
		ln.l.refused.Add(1)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

type limitedConn struct {
	net.Conn
	l    *connLimiter
	src  netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}
