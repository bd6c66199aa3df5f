// Package connlimit caps the connections a listener keeps open, in all and
// per source address. A connection past a cap is closed as soon as it is
// accepted, before TLS or any byte is read, so a flood from one address
// (or many) costs the server a socket for an instant, not a goroutine and
// buffers for as long as the peer likes.
package connlimit

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Refusal reasons, as Stats and the metrics name them.
const (
	ReasonTotal     = "total"
	ReasonPerSource = "per_source"
)

// Stats are a listener's counters.
type Stats struct {
	// Open is how many accepted connections are not closed yet.
	Open int
	// RefusedTotal and RefusedPerSource count connections closed at
	// accept because of each cap.
	RefusedTotal     uint64
	RefusedPerSource uint64
}

// Listener is a net.Listener whose Accept returns only connections within
// its caps.
type Listener struct {
	net.Listener
	max, perSource int

	mu       sync.Mutex
	open     int
	bySource map[netip.Addr]int

	refusedTotal, refusedPerSource atomic.Uint64
}

// New wraps ln. max caps the open connections, perSource those from one IP
// address; 0 means no cap. Wrap the TCP listener, under any TLS one, so a
// refusal costs no handshake.
func New(ln net.Listener, max, perSource int) *Listener {
	return &Listener{Listener: ln, max: max, perSource: perSource, bySource: map[netip.Addr]int{}}
}

// Accept waits for a connection within the caps, closing those past them.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c)
		if reason := l.admit(src); reason != "" {
			c.Close()
			continue
		}
		return &conn{Conn: c, l: l, src: src}, nil
	}
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open := l.open
	l.mu.Unlock()
	return Stats{Open: open, RefusedTotal: l.refusedTotal.Load(), RefusedPerSource: l.refusedPerSource.Load()}
}

func (l *Listener) admit(src netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.open >= l.max:
		l.refusedTotal.Add(1)
		return ReasonTotal
	case l.perSource > 0 && src.IsValid() && l.bySource[src] >= l.perSource:
		l.refusedPerSource.Add(1)
		return ReasonPerSource
	}
	l.open++
	if src.IsValid() {
		l.bySource[src]++
	}
	return ""
}

func (l *Listener) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if !src.IsValid() {
		return
	}
	if l.bySource[src] <= 1 {
		delete(l.bySource, src)
	} else {
		l.bySource[src]--
	}
}

// sourceOf is the connection's remote IP; an IPv4-mapped IPv6 address
// counts as the IPv4 one. Invalid for a non-IP connection (no per-source
// cap then).
func sourceOf(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// conn gives its place back when closed, once.
type conn struct {
	net.Conn
	l    *Listener
	src  netip.Addr
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}

// CloseWrite half closes a TCP connection: servers that answer a request
// they will not read whole (httpapi's lingerClose) need it to reach the
// socket through this wrapper.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
