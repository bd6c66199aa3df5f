package dnsfront

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/connlimit"
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
	pc, ln, err := listenBoth(s.cfg.Addr)
	if err != nil {
		return err
	}
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
			if srv == tcp {
				_ = udp.Shutdown()
			}
			return fmt.Errorf("dnsfront: serve: %w", err)
		}
	}
	s.udp, s.tcp, s.tcpConns, s.addr = udp, tcp, tcpConns, pc.LocalAddr().String()
	return nil
}

// listenBoth binds UDP first and then TCP on the same port. With port 0 the
// kernel picks the UDP port, which may be taken for TCP; a few tries find
// one free for both.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dnsfront: listen address %q: %w", addr, err)
	}
	tries := 1
	if port == "0" || port == "" {
		tries = 16
	}
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dnsfront: %w", err)
		}
		_, bound, _ := net.SplitHostPort(pc.LocalAddr().String())
		ln, err := net.Listen("tcp", net.JoinHostPort(host, bound))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if i+1 >= tries {
			return nil, nil, fmt.Errorf("dnsfront: %w", err)
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
	udp, tcp := s.udp, s.tcp
	s.udp, s.tcp = nil, nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range []*dns.Server{udp, tcp} {
		if srv != nil {
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.udpConns.closeAll()
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
