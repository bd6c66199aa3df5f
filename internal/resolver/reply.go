package resolver

import (
	"encoding/binary"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// readReply reads the upstream reply every new name gets (one question;
// answers of the asked type A or AAAA owned by the question's name; nothing
// in the authority section; at most an OPT record without options in the
// additional one) into the message the DNS library's Unpack would give, less
// the OPT record, which nothing after it reads. Any other reply, however
// valid, reports false and goes to the library. It exists because the
// library's read and unpack are a large part of a new name's allocations
// (BenchmarkReadReply compares the two); the answers' records and
// addresses share one backing array each.
//
// The question's name must be written in plain labels (letters, digits, '-',
// '_'), so that its text form needs no escapes; an answer's owner must be a
// pointer to the question's name or that name written out again.
func readReply(p []byte) (*dns.Msg, bool) {
	const header = 12
	if len(p) < header {
		return nil, false
	}
	bits := binary.BigEndian.Uint16(p[2:])
	qd, an, ns, ar := binary.BigEndian.Uint16(p[4:]), int(binary.BigEndian.Uint16(p[6:])), p[8]|p[9], binary.BigEndian.Uint16(p[10:])
	if qd != 1 || ns != 0 || ar > 1 {
		return nil, false
	}
	nameEnd, ok := plainName(p, header)
	if !ok || nameEnd+4 > len(p) {
		return nil, false
	}
	qname := p[header:nameEnd]
	qtype := binary.BigEndian.Uint16(p[nameEnd:])
	if qtype != dns.TypeA && qtype != dns.TypeAAAA {
		return nil, false
	}
	size := net.IPv4len
	if qtype == dns.TypeAAAA {
		size = net.IPv6len
	}
	m := &dns.Msg{Question: []dns.Question{{Qtype: qtype, Qclass: binary.BigEndian.Uint16(p[nameEnd+2:])}}}
	m.Id = binary.BigEndian.Uint16(p)
	m.Response = bits&(1<<15) != 0
	m.Opcode = int(bits>>11) & 0xF
	m.Authoritative = bits&(1<<10) != 0
	m.Truncated = bits&(1<<9) != 0
	m.RecursionDesired = bits&(1<<8) != 0
	m.RecursionAvailable = bits&(1<<7) != 0
	m.Zero = bits&(1<<6) != 0
	m.AuthenticatedData = bits&(1<<5) != 0
	m.CheckingDisabled = bits&(1<<4) != 0
	m.Rcode = int(bits & 0xF)

	off := nameEnd + 4
	// Each answer: the owner (2 bytes as a pointer), type, class, TTL,
	// length, address; checked in full before anything is allocated.
	start := off
	for range an {
		o, ok := ownerEnd(p, off, qname)
		if !ok || o+10+size > len(p) ||
			binary.BigEndian.Uint16(p[o:]) != qtype || int(binary.BigEndian.Uint16(p[o+8:])) != size {
			return nil, false
		}
		off = o + 10 + size
	}
	if ar == 1 {
		// OPT: root owner, type 41, no options; its TTL's top byte is the
		// extended RCODE, which the library would fold into Rcode.
		if off+11 != len(p) || p[off] != 0 || binary.BigEndian.Uint16(p[off+1:]) != dns.TypeOPT ||
			p[off+5] != 0 || binary.BigEndian.Uint16(p[off+9:]) != 0 {
			return nil, false
		}
	} else if off != len(p) {
		return nil, false
	}

	name := qnameText(qname)
	m.Question[0].Name = name
	if an == 0 {
		return m, true
	}
	addrs := make([]byte, an*size)
	m.Answer = make([]dns.RR, an)
	var recs []dns.A
	var recs6 []dns.AAAA
	if qtype == dns.TypeA {
		recs = make([]dns.A, an)
	} else {
		recs6 = make([]dns.AAAA, an)
	}
	off = start
	for i := range an {
		o, _ := ownerEnd(p, off, qname)
		h := dns.RR_Header{Name: name, Rrtype: qtype, Class: binary.BigEndian.Uint16(p[o+2:]),
			Ttl: binary.BigEndian.Uint32(p[o+4:]), Rdlength: uint16(size)}
		ip := net.IP(addrs[i*size : (i+1)*size : (i+1)*size])
		copy(ip, p[o+10:])
		if recs != nil {
			recs[i] = dns.A{Hdr: h, A: ip}
			m.Answer[i] = &recs[i]
		} else {
			recs6[i] = dns.AAAA{Hdr: h, AAAA: ip}
			m.Answer[i] = &recs6[i]
		}
		off = o + 10 + size
	}
	return m, true
}

// plainName returns the end of the name at off when it is written out in
// plain labels, not compressed, and not the root.
func plainName(p []byte, off int) (int, bool) {
	start := off
	for {
		if off >= len(p) {
			return 0, false
		}
		n := int(p[off])
		off++
		if n == 0 {
			return off, off-start > 1
		}
		if n > 63 || off+n > len(p) {
			return 0, false
		}
		if !plainLabel(p[off : off+n]) {
			return 0, false
		}
		off += n
	}
}

// ownerEnd returns the end of an answer's owner at off when it is the
// question's name: a pointer to offset 12, or the same bytes again.
func ownerEnd(p []byte, off int, qname []byte) (int, bool) {
	if off+2 <= len(p) && p[off] == 0xC0 && p[off+1] == 12 {
		return off + 2, true
	}
	if off+len(qname) <= len(p) && string(p[off:off+len(qname)]) == string(qname) {
		return off + len(qname), true
	}
	return 0, false
}

// qnameText is the text form of a name in plain labels: "a.b.", as the
// library writes it.
func qnameText(wire []byte) string {
	var b strings.Builder
	b.Grow(len(wire) - 1)
	for off := 0; wire[off] != 0; {
		n := int(wire[off])
		b.Write(wire[off+1 : off+1+n])
		b.WriteByte('.')
		off += 1 + n
	}
	return b.String()
}
