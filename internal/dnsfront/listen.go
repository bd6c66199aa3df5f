package dnsfront

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/connlimit"
)

// Start listens on UDP and TCP and returns once both accept queries, so a
// caller (or a test) may send a query as soon as it returns.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp != nil {
		return errors.New("dnsfront: already started")
	}
	if s.ctx.Err() != nil {
		return errors.New("dnsfront: server was shut down")
	}
	nLoops := 0
	if s.fastLoopsFit() {
		nLoops = loopsFor()
	}
	pc, conns, ln, err := listenSockets(s.cfg.Addr, nLoops)
	if err != nil {
		return err
	}
	var loops *udpLoops
	if conns != nil {
		if loops, err = startUDPLoops(s, conns); err != nil {
			for _, c := range conns {
				c.Close()
			}
			ln.Close()
			return fmt.Errorf("dnsfront: %w", err)
		}
		pc = loops.slow
	}
	return s.serveLocked(pc, ln, loops)
}

// Serve answers queries on the sockets given instead of ones Start opens:
// UDP on pc and TCP on ln, both the same address. A network of its own (a
// tailnet node's) hands them over. The UDP fast path, which needs kernel
// sockets, stays off; Shutdown closes both.
func (s *Server) Serve(pc net.PacketConn, ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp != nil {
		return errors.New("dnsfront: already started")
	}
	if s.ctx.Err() != nil {
		return errors.New("dnsfront: server was shut down")
	}
	return s.serveLocked(pc, ln, nil)
}

// serveLocked starts the DNS library's servers on pc and ln and returns
// once both accept queries.
func (s *Server) serveLocked(pc net.PacketConn, ln net.Listener, loops *udpLoops) error {
	guard := func(r dns.Reader) dns.Reader { return guardedReader{Reader: r, s: s} }
	udp := &dns.Server{PacketConn: pc, Handler: s, UDPSize: 4096, DecorateReader: guard}
	// One deadline for the first query, the next ones and the reply: a
	// connection that holds a slot must keep delivering queries.
	tcpTimeout := s.cfg.TCPTimeout
	// miekg/dns gives every accepted connection a goroutine and a buffer
	// and caps neither; past a cap a connection is closed at accept.
	tcpConns := connlimit.New(ln, s.cfg.TCPMaxConns, s.cfg.TCPMaxConnsPerSource)
	tcp := &dns.Server{
		Listener: tcpConns, Handler: s, DecorateReader: guard,
		ReadTimeout: tcpTimeout, WriteTimeout: tcpTimeout, IdleTimeout: func() time.Duration { return tcpTimeout },
	}
	for _, srv := range []*dns.Server{udp, tcp} {
		up := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(up) }
		go func() {
			err := srv.ActivateAndServe()
			if err != nil {
				s.log.Error("dns server stopped", "addr", s.cfg.Addr, "err", err)
			}
			failed <- err
		}()
		select {
		case <-up:
		case err := <-failed:
			pc.Close()
			ln.Close()
			if loops != nil {
				loops.close()
			}
			if srv == tcp {
				_ = udp.Shutdown()
			}
			return fmt.Errorf("dnsfront: serve: %w", err)
		}
	}
	s.udp, s.tcp, s.tcpConns, s.fast, s.addr = udp, tcp, tcpConns, loops, pc.LocalAddr().String()
	return nil
}

// fastLoopsFit reports whether the fast UDP loops (udpLoops) may own the UDP
// sockets: on Linux, with a pool that answers without waiting, and on a
// specific address. A wildcard address is left to the DNS library, which
// replies from the address each query was sent to; the loops reply from
// the socket's address, which is that one only when it is specific.
func (s *Server) fastLoopsFit() bool {
	if !fastUDP || s.local == nil || s.cfg.Clients != nil {
		return false
	}
	host, _, err := net.SplitHostPort(s.cfg.Addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && !ip.IsUnspecified()
}

// listenBoth binds UDP first and then TCP on the same port. With port 0 the
// kernel picks the UDP port, which may be taken for TCP; a few tries find
// one free for both.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	pc, _, ln, err := listenSockets(addr, 0)
	return pc, ln, err
}

// listenSockets is listenBoth with, for loops > 0, that many UDP sockets for
// the fast loops (conns) instead of one for the DNS library (pc).
func listenSockets(addr string, loops int) (pc net.PacketConn, conns []*net.UDPConn, ln net.Listener, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dnsfront: listen address %q: %w", addr, err)
	}
	tries := 1
	if port == "0" || port == "" {
		tries = 16
	}
	for i := 0; ; i++ {
		var local net.Addr
		if loops > 0 {
			conns, err = listenUDPs(addr, loops)
			if err == nil {
				local = conns[0].LocalAddr()
			}
		} else if pc, err = net.ListenPacket("udp", addr); err == nil {
			local = pc.LocalAddr()
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("dnsfront: %w", err)
		}
		_, bound, _ := net.SplitHostPort(local.String())
		ln, err := net.Listen("tcp", net.JoinHostPort(host, bound))
		if err == nil {
			return pc, conns, ln, nil
		}
		if pc != nil {
			pc.Close()
		}
		for _, c := range conns {
			c.Close()
		}
		if i+1 >= tries {
			return nil, nil, nil, fmt.Errorf("dnsfront: %w", err)
		}
	}
}

// Addr is the bound address, the same port for UDP and TCP; empty before
// Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Shutdown stops listening and waits, until ctx ends, for queries in
// flight. Lookups in flight are cancelled first, so they end promptly.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	s.mu.Lock()
	udp, tcp, fast := s.udp, s.tcp, s.fast
	s.udp, s.tcp, s.fast = nil, nil, nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range []*dns.Server{udp, tcp} {
		if srv != nil {
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// After the library's shutdown, which waits for the queries it holds:
	// their replies go out of these sockets.
	if fast != nil {
		fast.close()
	}
	if s.ownsResolver {
		s.res.Close()
	}
	return errors.Join(errs...)
}

// errBadQuestion closes a TCP connection that sent a query whose question
// is compressed or cut short.
var errBadQuestion = errors.New("dnsfront: compressed or truncated question")

// guardedReader drops queries whose first question name holds a
// compression pointer, or that end inside their first question, before the
// DNS library parses them. Nothing precedes that name for a pointer to refer
// to but the header, so no client sends one. What such a pointer buys is a
// name whose bytes are counted twice: read out of the header (or out of a
// record) for the question, and spelled out again in the reply, which would
// then be larger than the query.
type guardedReader struct {
	dns.Reader
	s *Server
}

func (g guardedReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		m, sess, err := g.Reader.ReadUDP(conn, timeout)
		if err != nil || plainQuestion(m) {
			return m, sess, err
		}
		g.s.stats.dropped.Add(1)
	}
}

// ReadPacketConn guards what the fast UDP loops hand on (slowConn).
func (g guardedReader) ReadPacketConn(conn net.PacketConn, timeout time.Duration) ([]byte, net.Addr, error) {
	pr, ok := g.Reader.(dns.PacketConnReader)
	if !ok {
		return nil, nil, errors.New("dnsfront: the DNS library's reader cannot read a PacketConn")
	}
	for {
		m, addr, err := pr.ReadPacketConn(conn, timeout)
		if err != nil || plainQuestion(m) {
			return m, addr, err
		}
		g.s.stats.dropped.Add(1)
	}
}

func (g guardedReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	m, err := g.Reader.ReadTCP(conn, timeout)
	if err == nil && !plainQuestion(m) {
		g.s.stats.dropped.Add(1)
		return nil, errBadQuestion
	}
	return m, err
}

// plainQuestion reports whether the first question of the message m is
// written out in full: its name in labels, then its type and class. The DNS
// library takes a question cut short as one of type and class 0, which a
// reply would then spell out in bytes the query never had. A message too
// short to hold a question, or holding none, is left to the library, which
// refuses it without echoing one.
func plainQuestion(m []byte) bool {
	const header = 12
	if len(m) < header || m[4] == 0 && m[5] == 0 {
		return true
	}
	for off := header; off < len(m); {
		c := m[off]
		switch {
		case c == 0:
			return off+1+4 <= len(m)
		case c&0xC0 != 0:
			return false
		}
		off += 1 + int(c)
	}
	return false
}
