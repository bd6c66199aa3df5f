package dnsfront

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/internal/resolver"
	"github.com/ippool/ippool/pool"
)

// LocalPool is what a Pool may add so that a query for a name the client
// already has is answered straight from the UDP read loop, with no
// goroutine, no allocation and no parse by the DNS library (see fastAnswer).
type LocalPool interface {
	// LocalIPForDomain returns what IPForDomain would return for a domain
	// the client already has, when that needs no wait (no read barrier,
	// no log entry, no lock held for long); otherwise false, and the query
	// takes the full path. client is a valid client ID, domain normalized.
	LocalIPForDomain(client, domain string) (netip.Addr, bool)
}

// query is what fastAnswer needs of a query, read from its bytes.
type query struct {
	qend   int    // offset just past the question
	qtype  uint16 // A or AAAA
	opt    bool   // the query has an OPT record
	udpLen int    // the OPT's UDP payload size
}

// parseQuery reads a query that fastAnswer can answer without the DNS
// library: one question of class IN and type A or AAAA whose name is
// written out in labels of letters, digits, '-' and '_' (so that it is in
// pool.NormalizeDomain's form once lower-cased into name), nothing else but
// an optional OPT record of version 0, and nothing after it. Every other
// query, however valid, reports false and goes to the DNS library, so the
// replies to anything unusual stay the library's and ServeDNS's. name is
// filled with the lower-cased name, dots between labels, no trailing dot.
func parseQuery(b []byte, name []byte) (query, []byte, bool) {
	var q query
	const header = 12
	if len(b) < header+1+4 {
		return q, name, false
	}
	// QR, opcode, TC; RD and AD/CD may be anything. An, Ns counts 0, Ar 0 or 1.
	if b[2]&0xFA != 0 || b[4] != 0 || b[5] != 1 || b[6]|b[7]|b[8]|b[9]|b[10] != 0 || b[11] > 1 {
		return q, name, false
	}
	name = name[:0]
	off := header
	for {
		if off >= len(b) {
			return q, name, false
		}
		n := int(b[off])
		off++
		if n == 0 {
			break
		}
		if n > 63 || off+n > len(b) {
			return q, name, false
		}
		if len(name) > 0 {
			name = append(name, '.')
		}
		for _, c := range b[off : off+n] {
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			case c == '-':
				if len(name) == 0 || name[len(name)-1] == '.' {
					return q, name, false
				}
			default:
				return q, name, false
			}
			name = append(name, c)
		}
		if name[len(name)-1] == '-' {
			return q, name, false
		}
		off += n
	}
	if len(name) == 0 || len(name) > 253 || off+4 > len(b) {
		return q, name, false
	}
	q.qtype = binary.BigEndian.Uint16(b[off:])
	if q.qtype != dns.TypeA && q.qtype != dns.TypeAAAA || binary.BigEndian.Uint16(b[off+2:]) != dns.ClassINET {
		return q, name, false
	}
	off += 4
	q.qend = off
	if b[11] == 0 {
		return q, name, off == len(b)
	}
	// OPT: root owner, type 41, class = UDP size, TTL = extended RCODE,
	// version, flags; RDATA of options.
	if off+11 > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT ||
		b[off+5] != 0 || b[off+6] != 0 {
		return q, name, false
	}
	q.opt = true
	q.udpLen = int(binary.BigEndian.Uint16(b[off+3:]))
	rdlen := int(binary.BigEndian.Uint16(b[off+9:]))
	off += 11
	if off+rdlen != len(b) {
		return q, name, false
	}
	// Only options the library takes without a check that could fail, so
	// that a query it would answer FORMERR never gets an answer here.
	for off < len(b) {
		if off+4 > len(b) {
			return q, name, false
		}
		code := binary.BigEndian.Uint16(b[off:])
		n := int(binary.BigEndian.Uint16(b[off+2:]))
		off += 4
		if off+n > len(b) {
			return q, name, false
		}
		switch {
		case code == dns.EDNS0COOKIE && (n == 8 || n >= 16 && n <= 40):
		case code == dns.EDNS0PADDING:
		default:
			return q, name, false
		}
		off += n
	}
	return q, name, true
}

// fastState is what one read loop keeps between queries: its own copies of
// the shared tables' entries it has used, read without a lock (a lock or a
// shared counter taken per query costs more than the rest of the answer),
// its counters, added to the server's once per batch, and the
// time, read once per batch.
type fastState struct {
	lp    LocalPool
	now   time.Time
	name  []byte
	names map[string]fastName
	srcs  map[netip.Addr]string
	fast  uint64 // answered since the last flush
	// asked: the last query fastAnswer did not answer was an A or AAAA
	// query in the form it reads, from an allowed source.
	asked bool
	// client is the policy's view of the query's client, reused so that
	// a check allocates nothing.
	client policy.Client
}

// fastName is a domain ServeDNS has answered and its upstream A answer,
// which is good until it expires, as in the shared cache.
type fastName struct {
	domain string
	up     *resolver.Answer
}

func (s *Server) newFastState() *fastState {
	return &fastState{lp: s.local, now: s.now(), name: make([]byte, 0, 256),
		names: make(map[string]fastName), srcs: make(map[netip.Addr]string)}
}

// flush adds the loop's counts to the server's: each fast answer is a query,
// an answer and an upstream cache hit, as ServeDNS would count it.
func (f *fastState) flush(s *Server) {
	if f.fast == 0 {
		return
	}
	s.stats.queries.Add(f.fast)
	s.res.CountHits(f.fast)
	s.stats.answered.Add(f.fast)
	s.stats.fast.Add(f.fast)
	f.fast = 0
}

// fastAnswer answers into out, and reports true, a query for a name the
// client already has, whose upstream answer is cached, from a source
// Config.Allow admits: the reply ServeDNS would give (the question as asked,
// one A or AAAA record, a bare OPT sized as write sizes it if the query had
// one), counted in f as ServeDNS would count it. It allocates nothing once
// the loop has seen the source and the name. Anything else reports false
// and is left to ServeDNS, which therefore keeps every rule for every other
// query; this path keeps the rate limits too, since a mapped name with a
// cached lookup takes no token there either.
func (s *Server) fastAnswer(f *fastState, b []byte, src netip.Addr, out []byte) ([]byte, bool) {
	q, name, ok := parseQuery(b, f.name)
	f.name = name
	f.asked = ok && s.allowedAddr(src)
	if !f.asked {
		return out, false
	}
	if q.qtype == dns.TypeAAAA && !s.cfg.V6Prefix.IsValid() {
		return out, false
	}
	e, ok := f.names[string(name)]
	if !ok || !f.now.Before(e.up.Expires) {
		if e.domain, ok = s.names.get(name); !ok {
			return out, false
		}
		if e.up, ok = s.res.Cached(e.domain, dns.TypeA, f.now); !ok {
			return out, false
		}
		if len(f.names) >= maxFastEntries {
			clear(f.names)
		}
		f.names[e.domain] = e
	}
	if e.up.Rcode != dns.RcodeSuccess || e.up.Ignored || e.up.PrivateOnly {
		return out, false
	}
	client, ok := f.srcs[src]
	if !ok {
		if client, ok = s.clientsBySrc.get(s, src); !ok {
			return out, false
		}
		if len(f.srcs) >= maxFastEntries {
			clear(f.srcs)
		}
		f.srcs[src] = client
	}
	f.client = policy.Client{ID: client, Addr: src.Unmap()}
	if s.policy != nil && s.policy.CheckName(&f.client, e.domain) != nil {
		// ServeDNS writes the denial.
		return out, false
	}
	addr, ok := f.lp.LocalIPForDomain(client, e.domain)
	if !ok || !addr.Is4() && !addr.Is4In6() {
		return out, false
	}
	f.fast++
	return s.packAddress(out, b, q, addr), true
}

// packAddress writes into out the reply ServeDNS gives to the query b (read
// by parseQuery into q) when the answer is the pool address addr: the
// question as asked, one A or AAAA record, a bare OPT sized as write sizes
// it if the query had one.
func (s *Server) packAddress(out, b []byte, q query, addr netip.Addr) []byte {
	out = append(out[:0], b[0], b[1],
		0x80|0x04|b[2]&0x01, // QR, AA, RD as asked; opcode 0
		0x80|b[3]&0x10,      // RA, CD as asked; NOERROR
		0, 1, 0, 1, 0, 0, 0, 0)
	if q.opt {
		out[11] = 1
	}
	out = append(out, b[12:q.qend]...)
	// The owner is the question's name, by a pointer to it (offset 12).
	out = append(out, 0xC0, 12, byte(q.qtype>>8), byte(q.qtype), 0, byte(dns.ClassINET))
	out = binary.BigEndian.AppendUint32(out, s.ttl)
	v4 := addr.Unmap().As4()
	if q.qtype == dns.TypeA {
		out = append(out, 0, 4)
		out = append(out, v4[:]...)
	} else {
		b6 := s.cfg.V6Prefix.Addr().As16()
		copy(b6[12:], v4[:])
		out = append(out, 0, 16)
		out = append(out, b6[:]...)
	}
	if q.opt {
		size := min(max(q.udpLen, dns.MinMsgSize), ednsUDPSize)
		out = append(out, 0, 0, byte(dns.TypeOPT), byte(size>>8), byte(size), 0, 0, 0, 0, 0, 0)
	}
	return out
}

// allowedAddr is allowed for an address already unmapped.
func (s *Server) allowedAddr(ip netip.Addr) bool {
	for _, p := range s.cfg.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// maxFastEntries bounds each of the fast path's tables. Past it a table is
// emptied and refilled by the next queries, each of which pays one slow
// answer; a flood of invented names or sources costs memory no more than
// this.
const maxFastEntries = 1 << 16

// nameTable holds the normalized domains ServeDNS has given a pool address
// to, keyed by themselves: indexing by string(b) does not allocate, and the
// string handed to the pool is always the same one. A name gets in only
// once answered, so a flood of new or invented names, which the fast path
// could not answer anyway, costs it no lookup, copy or entry.
type nameTable struct {
	mu sync.RWMutex
	m  map[string]string
}

func (t *nameTable) get(name []byte) (string, bool) {
	t.mu.RLock()
	d, ok := t.m[string(name)]
	t.mu.RUnlock()
	return d, ok
}

// add records a domain that was answered with a pool address.
func (t *nameTable) add(domain string) {
	t.mu.RLock()
	_, ok := t.m[domain]
	t.mu.RUnlock()
	if ok {
		return
	}
	t.mu.Lock()
	if t.m == nil || len(t.m) >= maxFastEntries {
		t.m = make(map[string]string)
	}
	t.m[domain] = domain
	t.mu.Unlock()
}

// srcTable maps a source address to its client ID (clientid.Map.Of, which
// never changes for a server's life), so that a client named by its
// address is not formatted again for every query.
type srcTable struct {
	mu sync.RWMutex
	m  map[netip.Addr]string
}

func (t *srcTable) get(s *Server, src netip.Addr) (string, bool) {
	t.mu.RLock()
	c, ok := t.m[src]
	t.mu.RUnlock()
	if ok {
		return c, true
	}
	c, err := s.clients.Of(src)
	if err != nil || pool.ValidateClientID(c) != nil {
		return "", false
	}
	t.mu.Lock()
	if t.m == nil || len(t.m) >= maxFastEntries {
		t.m = make(map[netip.Addr]string)
	}
	t.m[src] = c
	t.mu.Unlock()
	return c, true
}
