package dnsfront

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
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
	udp := &dns.Server{PacketConn: pc, Handler: s, UDPSize: 4096}
	tcp := &dns.Server{Listener: ln, Handler: s, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
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
	s.udp, s.tcp, s.addr = udp, tcp, pc.LocalAddr().String()
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
