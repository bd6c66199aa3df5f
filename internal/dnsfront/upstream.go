package dnsfront

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// upstreamAnswer is what the front end needs to know of an upstream reply:
// whether the name exists, which records to pass through when the name is
// exempt from the pool, and how long all of that may be believed.
type upstreamAnswer struct {
	rcode int // dns.RcodeSuccess or dns.RcodeNameError; other codes are errors
	// rrs is the upstream answer section restricted to the asked type and
	// CNAMEs, kept as received so that ignored names pass through unchanged.
	rrs []dns.RR
	// ignored is true when an A record lies in Config.IgnoreDestinations;
	// computed once at store time so cache hits cost nothing.
	ignored bool
	expires time.Time
}

type cacheKey struct {
	name  string // normalized, no trailing dot
	qtype uint16
}

// cache holds upstream answers. It is bounded because with Domains "." any
// client can make it hold one entry per name it invents.
type cache struct {
	mu      sync.RWMutex
	entries map[cacheKey]*upstreamAnswer
	max     int
}

func (c *cache) get(k cacheKey, now time.Time) (*upstreamAnswer, bool) {
	c.mu.RLock()
	a, ok := c.entries[k]
	c.mu.RUnlock()
	if !ok || !now.Before(a.expires) {
		return nil, false
	}
	return a, true
}

func (c *cache) put(k cacheKey, a *upstreamAnswer, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		for key, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, key)
			}
		}
		// Still full of live entries: drop arbitrary ones (map order is
		// random enough) rather than refuse to cache, so an attacker's
		// flood cannot pin the cache and slow every other lookup.
		for key := range c.entries {
			if len(c.entries) < c.max*7/8 {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[k] = a
}

// flight coalesces concurrent upstream lookups of one key, so that a burst of
// queries for a name that just expired costs one upstream round trip. It is a
// few lines, and golang.org/x/sync is not a dependency of this module.
type flight struct {
	mu    sync.Mutex
	calls map[cacheKey]*flightCall
}

type flightCall struct {
	done chan struct{}
	ans  *upstreamAnswer
	err  error
}

func (f *flight) do(k cacheKey, fn func() (*upstreamAnswer, error)) (*upstreamAnswer, error) {
	f.mu.Lock()
	if c, ok := f.calls[k]; ok {
		f.mu.Unlock()
		<-c.done
		return c.ans, c.err
	}
	c := &flightCall{done: make(chan struct{})}
	f.calls[k] = c
	f.mu.Unlock()

	c.ans, c.err = fn()

	f.mu.Lock()
	delete(f.calls, k)
	f.mu.Unlock()
	close(c.done)
	return c.ans, c.err
}

// errUpstream marks a lookup that no upstream answered usefully.
var errUpstream = errors.New("upstream lookup failed")

// cached returns the upstream answer for name and qtype if the cache holds
// a fresh one.
func (s *Server) cached(name string, qtype uint16) (*upstreamAnswer, bool) {
	a, ok := s.cache.get(cacheKey{name: name, qtype: qtype}, s.now())
	if ok {
		s.stats.cacheHits.Add(1)
	}
	return a, ok
}

// lookup returns the upstream answer for name and qtype, from the cache when
// it is fresh.
func (s *Server) lookup(name string, qtype uint16) (*upstreamAnswer, error) {
	if a, ok := s.cached(name, qtype); ok {
		return a, nil
	}
	k := cacheKey{name: name, qtype: qtype}
	return s.flight.do(k, func() (*upstreamAnswer, error) {
		// Another flight may have filled the cache between our miss and
		// our becoming the leader of this one.
		if a, ok := s.cache.get(k, s.now()); ok {
			s.stats.cacheHits.Add(1)
			return a, nil
		}
		s.stats.cacheMisses.Add(1)
		a, err := s.resolve(name, qtype)
		if err != nil {
			s.stats.upstreamErrors.Add(1)
			return nil, err
		}
		s.cache.put(k, a, s.now())
		return a, nil
	})
}

// resolve asks each upstream in turn. The lookup runs under the server's
// context, not the query's, because coalesced waiters share its result and
// one client giving up must not fail the others.
func (s *Server) resolve(name string, qtype uint16) (*upstreamAnswer, error) {
	var errs []error
	for _, up := range s.upstreams {
		r, err := s.exchange(upstreamQuestion{name: name, qtype: qtype}, up)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			continue
		}
		if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			errs = append(errs, fmt.Errorf("%s: rcode %s", up, dns.RcodeToString[r.Rcode]))
			continue
		}
		return s.digest(r, qtype), nil
	}
	err := fmt.Errorf("%w for %s %s: %w", errUpstream, name, dns.TypeToString[qtype], errors.Join(errs...))
	s.log.Warn("upstream lookup failed", "name", name, "type", dns.TypeToString[qtype], "err", err)
	return nil, err
}

// upstreamQuestion is what resolve asks: name (normalized, with or without
// the trailing dot) and type, recursion desired, with an OPT record asking
// for ednsUDPSize-byte replies so that long answers rarely need TCP.
type upstreamQuestion struct {
	name  string
	qtype uint16
	id    uint16
}

// msg is the question as the DNS library's message, for the paths that
// need one (TCP, a name packQuery declines).
func (q upstreamQuestion) msg() *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(q.name), q.qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsUDPSize, false)
	m.Id = q.id
	return m
}

// exchange asks up once, over UDP and then over TCP if the reply was
// truncated, and checks that the reply answers the question. The timeout is
// a deadline, not a context: a context derived from the server's costs a
// timer and a registration with its parent per lookup, which showed as a
// sixth of the new names' allocations, and the UDP read only ever took the
// context's deadline (cancelling it never cut a read short).
func (s *Server) exchange(q upstreamQuestion, up string) (*dns.Msg, error) {
	// A fresh ID per try, so a late reply to an earlier try is not taken
	// for this one.
	q.id = dns.Id()
	deadline := time.Now().Add(s.cfg.UpstreamTimeout)
	r, err := s.exchangeUDP(q, up, deadline)
	if err == nil && r.Truncated {
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		r, _, err = s.tcpClient.ExchangeContext(ctx, q.msg(), up)
		cancel()
	}
	if err != nil {
		return nil, err
	}
	if len(r.Question) != 1 || r.Question[0].Qtype != q.qtype ||
		!strings.EqualFold(strings.TrimSuffix(r.Question[0].Name, "."), strings.TrimSuffix(q.name, ".")) {
		return nil, errors.New("reply is for another question")
	}
	return r, nil
}

// exchangeUDP asks over a UDP socket kept from an earlier exchange when one
// is idle. Opening a socket per query cost a quarter of the CPU of answering
// new names. A socket whose exchange failed is closed, not kept: a late reply
// could still arrive on it (miekg/dns skips replies with another ID anyway).
func (s *Server) exchangeUDP(q upstreamQuestion, up string, deadline time.Time) (*dns.Msg, error) {
	conn := s.udpConns.get(up)
	if conn == nil {
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		var err error
		conn, err = s.udpClient.DialContext(ctx, up)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	r, err := s.exchangeOn(q, conn, deadline)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.udpConns.put(up, conn)
	return r, nil
}

// exchangeOn is the DNS library's ExchangeWithConnContext for q, with the
// query packed by packQuery and the reply read by readReply where it can: the
// library's packing (a compression map and its buffers), read and unpack are
// a large part of the CPU and allocations of answering new names. Replies
// with another ID are skipped, as the library does, and
// replies are read into a pooled buffer of the library's size.
func (s *Server) exchangeOn(q upstreamQuestion, co *dns.Conn, deadline time.Time) (*dns.Msg, error) {
	b, ok := packQuery(q)
	if !ok {
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		defer cancel()
		r, _, err := s.udpClient.ExchangeWithConnContext(ctx, q.msg(), co)
		return r, err
	}
	if err := co.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if _, err := co.Write(b); err != nil {
		return nil, err
	}
	buf := replyBufs.Get().(*[ednsUDPSize]byte)
	defer replyBufs.Put(buf)
	for {
		n, err := co.Conn.Read(buf[:])
		if err != nil {
			return nil, err
		}
		p := buf[:n]
		if n < 12 {
			return nil, dns.ErrShortRead
		}
		if binary.BigEndian.Uint16(p) != q.id {
			continue
		}
		if r, ok := readReply(p); ok {
			return r, nil
		}
		r := new(dns.Msg)
		if err := r.Unpack(p); err != nil {
			return nil, err
		}
		return r, nil
	}
}

// replyBufs holds buffers for upstream replies over UDP, of the size the
// queries advertise in their OPT record: an upstream sends nothing longer
// over UDP, but a reply with TC set, which exchange asks again over TCP.
var replyBufs = sync.Pool{New: func() any { return new([ednsUDPSize]byte) }}

// packQuery packs q as q.msg() would be packed when its name is in plain
// labels, as every normalized name is; otherwise it reports false.
func packQuery(q upstreamQuestion) ([]byte, bool) {
	name := strings.TrimSuffix(q.name, ".")
	if len(name) == 0 || len(name) > 253 {
		return nil, false
	}
	b := make([]byte, 0, 12+len(name)+2+4+11)
	b = append(b, byte(q.id>>8), byte(q.id), 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 1)
	for label := range strings.SplitSeq(name, ".") {
		if len(label) == 0 || len(label) > 63 {
			return nil, false
		}
		if !plainLabel(label) {
			return nil, false
		}
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	b = append(b, 0, byte(q.qtype>>8), byte(q.qtype), 0, byte(dns.ClassINET))
	b = append(b, 0, 0, byte(dns.TypeOPT), byte(ednsUDPSize>>8), byte(ednsUDPSize&0xFF), 0, 0, 0, 0, 0, 0)
	return b, true
}

// plainLabel reports whether a label is written in letters, digits, '-' and
// '_' only: one whose text and wire forms are the same bytes, no escapes.
func plainLabel[T string | []byte](label T) bool {
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// connPool keeps idle upstream sockets, a bounded number per upstream.
type connPool struct {
	mu   sync.Mutex
	idle map[string][]*dns.Conn
	max  int
}

func (p *connPool) get(up string) *dns.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := p.idle[up]
	if len(conns) == 0 {
		return nil
	}
	c := conns[len(conns)-1]
	p.idle[up] = conns[:len(conns)-1]
	return c
}

func (p *connPool) put(up string, c *dns.Conn) {
	p.mu.Lock()
	if p.idle == nil {
		p.idle = make(map[string][]*dns.Conn)
	}
	if len(p.idle[up]) < p.max {
		p.idle[up] = append(p.idle[up], c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// closeAll closes every idle socket.
func (p *connPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for up, conns := range p.idle {
		for _, c := range conns {
			c.Close()
		}
		delete(p.idle, up)
	}
}

// digest turns an upstream reply into a cache entry. Negative answers live
// for the SOA minimum (RFC 2308) so that a name that does not exist is not
// asked for again on every query.
func (s *Server) digest(r *dns.Msg, qtype uint16) *upstreamAnswer {
	a := &upstreamAnswer{rcode: r.Rcode}
	var ttl uint32
	first := true
	for _, rr := range r.Answer {
		h := rr.Header()
		if h.Rrtype != qtype && h.Rrtype != dns.TypeCNAME {
			continue
		}
		a.rrs = append(a.rrs, rr)
		if first || h.Ttl < ttl {
			ttl, first = h.Ttl, false
		}
		if v, ok := rr.(*dns.A); ok && len(s.cfg.IgnoreDestinations) > 0 {
			if ip, ok := netip.AddrFromSlice(v.A); ok && s.isIgnored(ip.Unmap()) {
				a.ignored = true
			}
		}
	}
	hasAddr := false
	for _, rr := range a.rrs {
		if rr.Header().Rrtype == qtype {
			hasAddr = true
			break
		}
	}
	d := s.cfg.CacheMinTTL
	switch {
	case a.rcode == dns.RcodeSuccess && hasAddr:
		d = time.Duration(ttl) * time.Second
	default:
		for _, rr := range r.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				d = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
				break
			}
		}
	}
	d = max(s.cfg.CacheMinTTL, min(d, s.cfg.CacheMaxTTL))
	a.expires = s.now().Add(d)
	return a
}

func (s *Server) isIgnored(ip netip.Addr) bool {
	for _, p := range s.cfg.IgnoreDestinations {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// maxIdleUpstreamConns bounds the sockets kept per upstream. It is sized for
// a burst of new names (every query of it a lookup at once), so that such a
// burst reuses sockets instead of dialling and closing one per lookup.
const maxIdleUpstreamConns = 256
