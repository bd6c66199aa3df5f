package dnsfront

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/clientid"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/internal/resolver"
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
	if !s.allowed(w.RemoteAddr()) {
		s.stats.notAllowed.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		s.write(w, r, s.refuse(reply{msg: m}, dns.ExtendedErrorCodeProhibited))
		return
	}
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

// errLimited stands for a query refused by a rate limit, already counted.
var errLimited = errors.New("rate limited")

// address answers A and AAAA within the domains. The client is named first
// because every upstream lookup and every new allocation is paid for from
// its bucket before it is done (see Config.RateLimit).
func (s *Server) address(rep reply, remote net.Addr, q dns.Question, norm, apex string) reply {
	client, err := s.namer.OfRemote(remote)
	if err != nil {
		s.log.Debug("query from an unusable client address", "remote", remote, "err", err)
		return s.refuse(rep, dns.ExtendedErrorCodeProhibited)
	}
	src, _ := clientid.Source(remote)
	return s.addressReply(rep, q, apex, s.allocate(client, src, norm, q.Qtype))
}

// allocation is what allocate decided for an A or AAAA query.
type allocation struct {
	kind   allocKind
	addr   netip.Addr       // allocOK: the pool address
	up     *resolver.Answer // allocNXDomain, allocPassthrough: the upstream answer
	err    error            // allocLookupFailed, allocPoolFailed
	client string
	domain string
}

type allocKind uint8

const (
	allocOK           allocKind = iota // answer with addr
	allocLookupFailed                  // the upstream lookup failed or a rate limit refused it
	allocNXDomain                      // the name does not exist upstream
	allocPassthrough                   // the name is in --ignore-destinations: pass up's records on
	allocNoData                        // AAAA without a v6 prefix, or a name whose every address is private
	allocRefused                       // a rate limit refused the allocation
	allocPoolFailed                    // the pool refused or could not allocate
	allocDenied                        // the policy denies the client the name
)

// allocate does an A or AAAA query's work, up to the pool address; both the
// DNS library's path (address) and the new names' own path (newname.go) run
// it, so that they decide alike and only write their replies differently.
func (s *Server) allocate(client string, src netip.Addr, norm string, qtype uint16) allocation {
	a := allocation{client: client, domain: norm}
	// Before the upstream lookup: a denied name costs no query upstream,
	// no token and no mapping.
	if s.policy != nil {
		if err := s.policy.CheckName(&policy.Client{ID: client, Addr: src.Unmap()}, norm); err != nil {
			a.kind, a.err = allocDenied, err
			if errors.Is(err, pool.ErrQuotaExceeded) {
				// A rule's max_mappings: answered as the cluster's
				// quotas are.
				a.kind = allocPoolFailed
			}
			return a
		}
	}
	paid := false
	up, err := s.paidLookup(client, norm, dns.TypeA, &paid)
	switch {
	case err != nil:
		a.kind, a.err = allocLookupFailed, err
		return a
	case up.Rcode == dns.RcodeNameError:
		a.kind, a.up = allocNXDomain, up
		return a
	case up.PrivateOnly:
		// Its every address was private: as far as clients go it has
		// none, and the connector would find none to dial.
		a.kind = allocNoData
		return a
	case up.Ignored:
		if qtype == dns.TypeAAAA {
			// A second lookup is a second token even when the first
			// was paid for, so that upstream lookups never outnumber
			// tokens.
			paid = false
			if up, err = s.paidLookup(client, norm, dns.TypeAAAA, &paid); err != nil {
				a.kind, a.err = allocLookupFailed, err
				return a
			}
		}
		a.kind, a.up = allocPassthrough, up
		return a
	}
	if qtype == dns.TypeAAAA && !s.cfg.V6Prefix.IsValid() {
		// No allocation: an address nobody can use would only consume
		// the pool and the client's rate limit.
		a.kind = allocNoData
		return a
	}
	if !paid && (s.limits != nil || s.newClients != nil) {
		if _, mapped := s.pool.Get(client, norm); !mapped && !s.spend(client) {
			a.kind = allocRefused
			return a
		}
	}
	addr, err := s.pool.IPForDomain(s.writeDeadline.get(), client, norm)
	if err != nil {
		a.kind, a.err = allocPoolFailed, err
		return a
	}
	s.names.add(norm)
	a.addr = addr
	return a
}

// addressReply writes what allocate decided into the reply to q.
func (s *Server) addressReply(rep reply, q dns.Question, apex string, a allocation) reply {
	m := rep.msg
	switch a.kind {
	case allocLookupFailed:
		return s.lookupError(rep, a.domain, a.err)
	case allocNXDomain:
		return s.negative(rep, apex, dns.RcodeNameError, s.remaining(a.up))
	case allocPassthrough:
		m.Answer = s.passthrough(a.up, q.Name)
		if len(m.Answer) == 0 {
			return s.negative(rep, apex, a.up.Rcode, s.remaining(a.up))
		}
		return rep
	}
	m.Authoritative = true
	switch a.kind {
	case allocNoData:
		return s.negative(rep, apex, dns.RcodeSuccess, s.ttl)
	case allocRefused:
		return s.refuse(rep, 0)
	case allocPoolFailed:
		return s.poolError(rep, a.client, a.domain, a.err)
	case allocDenied:
		s.stats.policyDenied.Add(1)
		s.log.Debug("denied by policy", "client", a.client, "domain", a.domain, "err", a.err)
		if s.cfg.PolicyDenyRcode == dns.RcodeRefused {
			// A REFUSED reply is cut to the query's size, which leaves no
			// room for the text.
			return s.refuse(rep, dns.ExtendedErrorCodeBlocked)
		}
		rep = s.negative(rep, apex, dns.RcodeNameError, s.ttl)
		rep.ede = &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeBlocked, ExtraText: a.err.Error()}
		return rep
	}
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: s.ttl}
	if q.Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.addr.AsSlice()})
		return rep
	}
	b := s.cfg.V6Prefix.Addr().As16()
	v4 := a.addr.Unmap().As4()
	copy(b[12:], v4[:])
	m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: b[:]})
	return rep
}

func (s *Server) poolError(rep reply, client, domain string, err error) reply {
	switch {
	case errors.Is(err, pool.ErrPoolExhausted):
		s.log.Warn("pool exhausted", "client", client, "domain", domain)
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, "pool exhausted for client "+client)
	case errors.Is(err, pool.ErrQuotaExceeded):
		// Not logged: a flood of new sources would flood the log; the
		// service counts these (ippool_quota_exceeded_total). The text
		// names the quota, not the numbers: those are the operator's.
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, "quota exceeded: "+pool.QuotaOf(err))
	case errors.Is(err, pool.ErrNoQuorum), errors.Is(err, pool.ErrNoLeader),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.log.Warn("pool not ready", "client", client, "domain", domain, "err", err)
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeNotReady, "address pool unavailable: "+string(pool.CodeOf(err)))
	case errors.Is(err, pool.ErrInvalidClient):
		return s.refuse(rep, dns.ExtendedErrorCodeProhibited)
	default:
		s.log.Error("pool error", "client", client, "domain", domain, "err", err)
		return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, "address pool error")
	}
}

// paidLookup is lookup with the client paying a token for a cache miss;
// *paid records that it did. A refusal is errLimited.
func (s *Server) paidLookup(client, name string, qtype uint16, paid *bool) (*resolver.Answer, error) {
	if a, ok := s.cached(name, qtype); ok {
		return a, nil
	}
	if !*paid {
		if !s.spend(client) {
			return nil, errLimited
		}
		*paid = true
	}
	return s.res.Lookup(name, qtype)
}

// cached returns the upstream answer for name and qtype if the cache holds
// a fresh one.
func (s *Server) cached(name string, qtype uint16) (*resolver.Answer, bool) {
	a, ok := s.res.Cached(name, qtype, s.now())
	if ok {
		s.res.CountHits(1)
	}
	return a, ok
}

func (s *Server) lookupError(rep reply, name string, err error) reply {
	if errors.Is(err, errLimited) {
		return s.refuse(rep, 0)
	}
	return s.fail(rep, dns.RcodeServerFailure, dns.ExtendedErrorCodeNoReachableAuthority, "upstream lookup failed for "+name)
}

// refuse answers REFUSED; write cuts the reply down to no more than the
// query. info is the Extended DNS Error code to add if there is room, 0 for
// none (0 is "Other", which says nothing without a text).
func (s *Server) refuse(rep reply, info uint16) reply {
	rep.msg.Rcode = dns.RcodeRefused
	rep.ede = nil
	if info != 0 {
		rep.ede = &dns.EDNS0_EDE{InfoCode: info}
	}
	return rep
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
func (s *Server) passthrough(a *resolver.Answer, qname string) []dns.RR {
	ttl := s.remaining(a)
	out := make([]dns.RR, 0, len(a.RRs))
	for _, rr := range a.RRs {
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

// queryFloor is a size the query had at least on the wire: its header,
// questions and OPT record written out. The guarded reader has dropped
// queries whose question was compressed, and an OPT record's owner, the
// root, takes no less than one byte however written.
func queryFloor(r *dns.Msg) int {
	q := &dns.Msg{Question: r.Question}
	if opt := r.IsEdns0(); opt != nil {
		q.Extra = []dns.RR{opt}
	}
	return q.Len()
}

func (s *Server) remaining(a *resolver.Answer) uint32 {
	d := a.Expires.Sub(s.now())
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
	if m.Rcode == dns.RcodeRefused {
		m.Answer, m.Ns, m.Extra = nil, nil, nil
	}
	if opt := r.IsEdns0(); opt != nil {
		size = min(max(int(opt.UDPSize()), dns.MinMsgSize), ednsUDPSize)
		m.SetEdns0(uint16(size), false)
		if rep.ede != nil {
			o := m.IsEdns0()
			o.Option = append(o.Option, rep.ede)
			if m.Rcode == dns.RcodeRefused && m.Len() > queryFloor(r) {
				o.Option = nil
			}
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
