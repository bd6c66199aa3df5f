package dnsfront

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/pool"
)

// reply is a response under construction plus the Extended DNS Error that
// goes into its OPT record if the query allows one.
type reply struct {
	msg *dns.Msg
	ede *dns.EDNS0_EDE
}

// ServeDNS answers one query. It writes at most one reply, and none to a
// message that is itself a response, so that two servers cannot bounce a
// packet between them.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if r == nil || r.Response {
		return
	}
	s.stats.queries.Add(1)
	rep := s.answer(w.RemoteAddr(), r)
	s.write(w, r, rep)
}

func (s *Server) answer(remote net.Addr, r *dns.Msg) reply {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	rep := reply{msg: m}
	switch {
	case r.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return rep
	case len(r.Question) != 1:
		m.Question = nil
		m.Rcode = dns.RcodeFormatError
		return rep
	}
	if opt := r.IsEdns0(); opt != nil && opt.Version() != 0 {
		m.Rcode = dns.RcodeBadVers
		return rep
	}
	q := r.Question[0]
	if q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeRefused
		return rep
	}

	norm, nerr := pool.NormalizeDomain(q.Name)
	if nerr != nil {
		// The root, escaped names and other names the pool refuses.
		if q.Name == "." {
			if s.matchRoot() {
				return rep
			}
			m.Rcode = dns.RcodeRefused
			return rep
		}
		apex, ok := s.matchEscaped(q.Name)
		if !ok {
			m.Rcode = dns.RcodeRefused
			return rep
		}
		m.Authoritative = true
		return s.negative(rep, apex, dns.RcodeNameError, s.ttl)
	}
	apex, ok := s.match(norm)
	if !ok {
		m.Rcode = dns.RcodeRefused
		return rep
	}

	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		return s.address(rep, remote, q, norm, apex)
	case dns.TypeSOA, dns.TypeNS:
		m.Authoritative = true
		if apex != "" && norm == apex {
			if q.Qtype == dns.TypeSOA {
				m.Answer = append(m.Answer, s.soa(apex, q.Name))
			} else {
				m.Answer = append(m.Answer, &dns.NS{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: s.ttl},
					Ns:  "ns." + dns.Fqdn(apex),
				})
			}
			return rep
		}
		return s.negative(rep, apex, dns.RcodeSuccess, s.ttl)
	default:
		m.Authoritative = true
		return s.negative(rep, apex, dns.RcodeSuccess, s.ttl)
	}
}

// address answers A and AAAA within the domains.
func (s *Server) address(rep reply, remote net.Addr, q dns.Question, norm, apex string) reply {
	m := rep.msg
	up, err := s.lookup(norm, dns.TypeA)
	if err != nil {
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeNoReachableAuthority, "upstream lookup failed for "+norm)
	}
	if up.rcode == dns.RcodeNameError {
		return s.negative(rep, apex, dns.RcodeNameError, s.remaining(up))
	}
	if up.ignored {
		src := up
		if q.Qtype == dns.TypeAAAA {
			src, err = s.lookup(norm, dns.TypeAAAA)
			if err != nil {
				return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeNoReachableAuthority, "upstream lookup failed for "+norm)
			}
		}
		m.Answer = s.passthrough(src, q.Name)
		if len(m.Answer) == 0 {
			return s.negative(rep, apex, src.rcode, s.remaining(src))
		}
		return rep
	}
	m.Authoritative = true
	if q.Qtype == dns.TypeAAAA && !s.cfg.V6Prefix.IsValid() {
		// No allocation: an address nobody can use would only consume
		// the pool and the client's rate limit.
		return s.negative(rep, apex, dns.RcodeSuccess, s.ttl)
	}

	client, err := s.clients.OfRemote(remote)
	if err != nil {
		s.log.Debug("query from an unusable client address", "remote", remote, "err", err)
		return s.fail(rep, dns.RcodeRefused, dns.ExtendedErrorCodeProhibited, "no usable client identity for this source")
	}
	if s.limits != nil {
		if _, mapped := s.pool.Get(client, norm); !mapped && !s.limits.allow(client, s.now()) {
			s.stats.rateLimited.Add(1)
			return s.fail(rep, dns.RcodeRefused, dns.ExtendedErrorCodeOther, "rate limit of new addresses exceeded for client "+client)
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.WriteTimeout)
	addr, err := s.pool.IPForDomain(ctx, client, norm)
	cancel()
	if err != nil {
		return s.poolError(rep, client, norm, err)
	}
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: s.ttl}
	if q.Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: addr.AsSlice()})
		return rep
	}
	b := s.cfg.V6Prefix.Addr().As16()
	v4 := addr.Unmap().As4()
	copy(b[12:], v4[:])
	m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: b[:]})
	return rep
}

func (s *Server) poolError(rep reply, client, domain string, err error) reply {
	switch {
	case errors.Is(err, pool.ErrPoolExhausted):
		s.log.Warn("pool exhausted", "client", client, "domain", domain)
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, "pool exhausted for client "+client)
	case errors.Is(err, pool.ErrNoQuorum), errors.Is(err, pool.ErrNoLeader),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.log.Warn("pool not ready", "client", client, "domain", domain, "err", err)
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeNotReady, "address pool unavailable: "+string(pool.CodeOf(err)))
	case errors.Is(err, pool.ErrInvalidClient):
		return s.fail(rep, dns.RcodeRefused, dns.ExtendedErrorCodeProhibited, "invalid client "+client)
	default:
		s.log.Error("pool error", "client", client, "domain", domain, "err", err)
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, "address pool error")
	}
}

func (s *Server) fail(rep reply, rcode int, info uint16, text string) reply {
	rep.msg.Rcode = rcode
	rep.msg.Answer = nil
	rep.ede = &dns.EDNS0_EDE{InfoCode: info, ExtraText: text}
	return rep
}

// negative answers NXDOMAIN or NODATA with the apex's SOA in the authority
// section, which is what lets resolvers cache the negative answer (RFC 2308).
func (s *Server) negative(rep reply, apex string, rcode int, ttl uint32) reply {
	rep.msg.Rcode = rcode
	rep.msg.Answer = nil
	if apex != "" {
		soa := s.soa(apex, dns.Fqdn(apex))
		soa.Hdr.Ttl = min(soa.Hdr.Ttl, ttl)
		soa.Minttl = soa.Hdr.Ttl
		rep.msg.Ns = append(rep.msg.Ns, soa)
	}
	return rep
}

func (s *Server) soa(apex, owner string) *dns.SOA {
	z := dns.Fqdn(apex)
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: owner, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.ttl},
		Ns:      "ns." + z,
		Mbox:    "hostmaster." + z,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.ttl,
	}
}

// passthrough copies upstream records, giving the owner name the case the
// client asked in (resolvers compare the answer to their question) and a TTL
// that counts down with the cache entry, so a client never holds a record
// longer than the upstream allowed plus the cache floor.
func (s *Server) passthrough(a *upstreamAnswer, qname string) []dns.RR {
	ttl := s.remaining(a)
	out := make([]dns.RR, 0, len(a.rrs))
	for _, rr := range a.rrs {
		c := dns.Copy(rr)
		h := c.Header()
		if strings.EqualFold(h.Name, qname) {
			h.Name = qname
		}
		h.Ttl = min(h.Ttl, ttl)
		out = append(out, c)
	}
	return out
}

func (s *Server) remaining(a *upstreamAnswer) uint32 {
	d := a.expires.Sub(s.now())
	if d <= 0 {
		return 0
	}
	return uint32((d + time.Second - 1) / time.Second)
}

// write finishes the reply for its transport and sends it. UDP replies are
// cut to the client's advertised size (at most ednsUDPSize) with TC set, so
// the client retries over TCP rather than lose records silently.
func (s *Server) write(w dns.ResponseWriter, r *dns.Msg, rep reply) {
	m := rep.msg
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = min(max(int(opt.UDPSize()), dns.MinMsgSize), ednsUDPSize)
		m.SetEdns0(uint16(size), false)
		if rep.ede != nil {
			o := m.IsEdns0()
			o.Option = append(o.Option, rep.ede)
		}
	}
	if _, isTCP := w.RemoteAddr().(*net.TCPAddr); isTCP {
		size = dns.MaxMsgSize
	}
	m.Truncate(size)

	switch m.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		s.stats.answered.Add(1)
	case dns.RcodeRefused:
		s.stats.refused.Add(1)
	case dns.RcodeServerFailure:
		s.stats.servfail.Add(1)
	default:
		s.stats.other.Add(1)
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("writing reply failed", "remote", w.RemoteAddr(), "err", err)
	}
}
