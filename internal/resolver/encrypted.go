package resolver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Upstream kinds: plain DNS over UDP (TCP for truncated replies), DNS over
// TLS (RFC 7858) and DNS over HTTPS (RFC 8484).
const (
	kindPlain = iota
	kindTLS
	kindHTTPS
)

// maxIdleTLSConns bounds the idle DNS-over-TLS connections kept per
// upstream. Each carries one query at a time (no pipelining, which some
// servers mishandle), so a burst opens more and the surplus is closed.
const maxIdleTLSConns = 8

// maxStreamReply bounds a reply over TLS or HTTPS: a DNS message's largest.
const maxStreamReply = 65535

// parseUpstream reads one Config.Upstreams entry: host:port or an address
// (port 53), tls://host[:port][@server-name] (port 853; the name the
// certificate must carry, default the host), or an https:// URL.
func parseUpstream(s string, roots *x509.CertPool) (*upstream, error) {
	switch {
	case strings.HasPrefix(s, "tls://"):
		rest := strings.TrimPrefix(s, "tls://")
		hostPort, name, _ := strings.Cut(rest, "@")
		host, port, err := net.SplitHostPort(hostPort)
		if err != nil {
			host, port = hostPort, "853"
		}
		if host == "" {
			return nil, fmt.Errorf("resolver: upstream %q has no host", s)
		}
		if name == "" {
			name = host
		}
		return &upstream{addr: net.JoinHostPort(host, port), kind: kindTLS,
			tls:  &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12},
			idle: make(chan *tls.Conn, maxIdleTLSConns)}, nil
	case strings.HasPrefix(s, "https://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("resolver: upstream %q is not a URL", s)
		}
		tr := &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: maxIdleTLSConns,
			IdleConnTimeout:     90 * time.Second,
		}
		return &upstream{addr: s, kind: kindHTTPS, http: &http.Client{Transport: tr}}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		s = netip.AddrPortFrom(a, 53).String()
	}
	if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
		return nil, fmt.Errorf("resolver: upstream %q is not host:port, tls://host or https://URL", s)
	}
	return &upstream{addr: s}, nil
}

// loadRoots is the system's roots plus the PEM certificates in file, if any.
func loadRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil // crypto/tls then uses the system's roots
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("resolver: upstream CA: %w", err)
	}
	if !roots.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("resolver: upstream CA %s holds no PEM certificate", file)
	}
	return roots, nil
}

// exchangeEncrypted asks an upstream over TLS or HTTPS. The name goes in
// the case it came in: the channel is authenticated, so there is nothing
// for 0x20 to add, and the reply's question must still be the one asked.
func (r *Resolver) exchangeEncrypted(q question, up *upstream, deadline time.Time) (*dns.Msg, error) {
	b, ok := packQuery(q)
	if !ok {
		var err error
		if b, err = q.msg().Pack(); err != nil {
			return nil, err
		}
	}
	qsec, ok := questionSection(b)
	if !ok {
		return nil, errors.New("query without a question")
	}
	var p []byte
	var err error
	if up.kind == kindTLS {
		p, err = r.exchangeTLS(b, up, deadline)
	} else {
		p, err = r.exchangeHTTPS(b, up, deadline)
	}
	if err != nil {
		return nil, err
	}
	if matchReply(p, q.id, qsec) != replyMatches {
		return nil, errOtherQuestion
	}
	if m, ok := readReply(p); ok {
		return m, nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(p); err != nil {
		return nil, err
	}
	return m, nil
}

// exchangeTLS sends the query b on an idle connection to up, or a new one,
// and reads one reply. A kept connection the server has closed meanwhile
// fails at once; the query is then sent again on a new one.
func (r *Resolver) exchangeTLS(b []byte, up *upstream, deadline time.Time) ([]byte, error) {
	msg := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(msg, uint16(len(b)))
	copy(msg[2:], b)
	for {
		var c *tls.Conn
		reused := false
		select {
		case c = <-up.idle:
			reused = true
		default:
			d := &tls.Dialer{NetDialer: &net.Dialer{Deadline: deadline}, Config: up.tls}
			conn, err := d.DialContext(r.ctx, "tcp", up.addr)
			if err != nil {
				return nil, err
			}
			c = conn.(*tls.Conn)
		}
		p, err := roundTripTLS(c, msg, deadline)
		if err != nil {
			c.Close()
			if reused && time.Now().Before(deadline) {
				continue
			}
			return nil, err
		}
		select {
		case up.idle <- c:
		default:
			c.Close()
		}
		return p, nil
	}
}

func roundTripTLS(c *tls.Conn, msg []byte, deadline time.Time) ([]byte, error) {
	if err := c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return nil, err
	}
	p := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(c, p); err != nil {
		return nil, err
	}
	return p, nil
}

// exchangeHTTPS posts the query b to up's URL (RFC 8484), on one of the
// client's kept-alive connections.
func (r *Resolver) exchangeHTTPS(b []byte, up *upstream, deadline time.Time) ([]byte, error) {
	ctx, cancel := context.WithDeadline(r.ctx, deadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, up.addr, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/dns-message")
	req.Header.Set("Accept", "application/dns-message")
	resp, err := up.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p, err := io.ReadAll(io.LimitReader(resp.Body, maxStreamReply+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	if len(p) > maxStreamReply {
		return nil, errors.New("reply longer than a DNS message")
	}
	return p, nil
}

// closeIdle closes the upstream's idle connections.
func (u *upstream) closeIdle() {
	switch u.kind {
	case kindTLS:
		for {
			select {
			case c := <-u.idle:
				c.Close()
			default:
				return
			}
		}
	case kindHTTPS:
		u.http.CloseIdleConnections()
	}
}
