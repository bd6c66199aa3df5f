package resolver

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// question is one query as sent: the name in the case it went out in, no
// trailing dot, the type and the ID.
type question struct {
	name  string
	qtype uint16
	id    uint16
}

// msg is the question as the DNS library's message, recursion desired, with
// an OPT record asking for ednsUDPSize-byte replies so that long answers
// rarely need TCP; for the paths that need one (TCP, a name packQuery
// declines).
func (q question) msg() *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(q.name), q.qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsUDPSize, false)
	m.Id = q.id
	return m
}

// errOtherQuestion is a reply over TCP for another question than asked.
var errOtherQuestion = errors.New("reply is for another question")

// exchange asks up once, over UDP and then over TCP if the reply was
// truncated.
//
// The name goes out in random case (0x20), and only a reply echoing that
// case is taken. A reply with the query's port and ID that differs only in
// the name's case means one of two things: the upstream writes names back
// in its own case (some do; unbound falls back for them), or an attacker
// who guessed port and ID did not guess the case. Only the upstream itself
// can tell, and over TCP nobody off the path can answer for it: the
// question is asked again there, in a fresh random case. If that reply
// echoes the case, the UDP one was forged and the TCP answer is taken; if
// not, the upstream does not echo case, and it is asked in plain case from
// then on (a warning says so once). Deciding on a timed-out UDP try alone,
// as before, let a flood of case-only forgeries turn 0x20 off and then
// poison the plain-case retry (TestResolverResistsSpoofedReplies, on a
// loaded machine).
func (r *Resolver) exchange(name string, qtype uint16, up *upstream) (*dns.Msg, error) {
	caps := !up.noCaps.Load() && up.kind == kindPlain
	m, caseOnly, err := r.exchangeOnce(name, qtype, up, caps)
	if err != nil && caps && caseOnly {
		var echoed bool
		if m, echoed, err = r.exchangeTCPCase(name, qtype, up); err == nil && !echoed && up.noCaps.CompareAndSwap(false, true) {
			r.log.Warn("upstream does not echo the case of a question's name (checked over TCP); asking it without random case (0x20) from now on",
				"upstream", up.addr)
		}
	}
	return m, err
}

// exchangeTCPCase asks q over TCP in a fresh random case and reports
// whether the reply echoed that case.
func (r *Resolver) exchangeTCPCase(name string, qtype uint16, up *upstream) (*dns.Msg, bool, error) {
	rng := rngs.Get().(*rand.ChaCha8)
	q := question{name: randomCase(strings.TrimSuffix(name, "."), rng), qtype: qtype, id: uint16(rng.Uint64())}
	rngs.Put(rng)
	ctx, cancel := context.WithDeadline(r.ctx, time.Now().Add(r.cfg.UpstreamTimeout))
	defer cancel()
	m, _, err := r.tcpClient.ExchangeContext(ctx, q.msg(), up.addr)
	if err != nil {
		return nil, false, err
	}
	if len(m.Question) != 1 || m.Question[0].Qtype != q.qtype || !strings.EqualFold(strings.TrimSuffix(m.Question[0].Name, "."), q.name) {
		return nil, false, errOtherQuestion
	}
	return m, strings.TrimSuffix(m.Question[0].Name, ".") == q.name, nil
}

// exchangeOnce is one try of exchange, with a fresh ID and socket. The
// timeout is a deadline, not a context: a context derived from the
// resolver's costs a timer and a registration with its parent per lookup,
// and the UDP read only ever took the context's deadline. It reports
// whether a reply matched in everything but the name's case.
func (r *Resolver) exchangeOnce(name string, qtype uint16, up *upstream, caps bool) (*dns.Msg, bool, error) {
	rng := rngs.Get().(*rand.ChaCha8)
	q := question{name: strings.TrimSuffix(name, "."), qtype: qtype, id: uint16(rng.Uint64())}
	if caps {
		q.name = randomCase(q.name, rng)
	}
	rngs.Put(rng)
	deadline := time.Now().Add(r.cfg.UpstreamTimeout)
	if up.kind != kindPlain {
		m, err := r.exchangeEncrypted(q, up, deadline)
		return m, false, err
	}
	m, caseOnly, err := r.exchangeUDP(q, up, deadline)
	if err == nil && m.Truncated {
		// Over TCP nobody off the path can answer for the upstream, so
		// the reply's question is held to the name, not its case.
		ctx, cancel := context.WithDeadline(r.ctx, deadline)
		m, _, err = r.tcpClient.ExchangeContext(ctx, q.msg(), up.addr)
		cancel()
		if err == nil && (len(m.Question) != 1 || m.Question[0].Qtype != q.qtype ||
			!strings.EqualFold(strings.TrimSuffix(m.Question[0].Name, "."), q.name)) {
			err = errOtherQuestion
		}
	}
	return m, caseOnly, err
}

// exchangeUDP sends q over a UDP socket connected to the upstream for this
// query alone: the kernel picks a random ephemeral port for it at connect
// and drops datagrams from any other source, and the port is released when
// the exchange ends (udpSockets), so an attacker off the path must guess
// the port as well as the ID and the name's case. (A port per query costs
// more than keeping one, BenchmarkExchange measures by how much; the kept
// sockets of before kept their ports for minutes, which made the ID all
// there was to guess.) Datagrams from another address or port never reach
// the socket, so they are not counted as unwanted.
//
// Replies are read until the awaited one or the deadline: one that is not
// it (short, another ID, another question or case) is counted as unwanted
// and skipped, never taken as the end of the wait, so a flood of forged
// replies cannot make a lookup fail early either.
func (r *Resolver) exchangeUDP(q question, up *upstream, deadline time.Time) (*dns.Msg, bool, error) {
	b, ok := packQuery(q)
	if !ok {
		var err error
		if b, err = q.msg().Pack(); err != nil {
			return nil, false, err
		}
	}
	qsec, ok := questionSection(b)
	if !ok {
		return nil, false, errors.New("query without a question")
	}
	var conn udpConn
	if up.udp.IsValid() {
		c, err := r.sockets.get(up.udp)
		if err != nil {
			return nil, false, err
		}
		conn = c
	} else {
		d := net.Dialer{Deadline: deadline}
		c, err := d.DialContext(r.ctx, "udp", up.addr)
		if err != nil {
			return nil, false, err
		}
		conn = c
	}
	ok = false // the exchange's outcome, for the socket's reuse
	defer func() {
		if up.udp.IsValid() {
			r.sockets.put(conn, ok)
		} else {
			conn.Close()
		}
	}()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, false, err
	}
	if _, err := conn.Write(b); err != nil {
		return nil, false, err
	}
	buf := replyBufs.Get().(*[ednsUDPSize]byte)
	defer replyBufs.Put(buf)
	caseOnly := false
	for {
		n, err := conn.Read(buf[:])
		if err == io.EOF {
			// An os.File's word for an empty datagram: unwanted.
			r.unwanted()
			continue
		}
		if err != nil {
			return nil, caseOnly, err
		}
		p := buf[:n]
		switch matchReply(p, q.id, qsec) {
		case replyMatches:
		case replyCaseDiffers:
			caseOnly = true
			r.unwanted()
			continue
		default:
			r.unwanted()
			continue
		}
		if m, read := readReply(p); read {
			ok = true
			return m, false, nil
		}
		m := new(dns.Msg)
		if err := m.Unpack(p); err != nil {
			r.unwanted()
			continue
		}
		ok = true
		return m, false, nil
	}
}

// udpConn is a connected UDP socket of one query.
type udpConn interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	SetDeadline(time.Time) error
	Close() error
}

// replyMatch is how a reply compares with the query it may answer.
type replyMatch uint8

const (
	replyOther       replyMatch = iota // not a reply to the query
	replyMatches                       // the reply to the query, as far as the header and question go
	replyCaseDiffers                   // ID and question right but for the name's case
)

// matchReply compares p, a datagram from the upstream, with the query of ID
// id and question section qsec (name, type, class as sent): a response with
// that ID, one question, and the question echoed byte for byte.
func matchReply(p []byte, id uint16, qsec []byte) replyMatch {
	if len(p) < 12+len(qsec) || binary.BigEndian.Uint16(p) != id || p[2]&0x80 == 0 ||
		binary.BigEndian.Uint16(p[4:]) != 1 {
		return replyOther
	}
	got := p[12 : 12+len(qsec)]
	if string(got) == string(qsec) {
		return replyMatches
	}
	if asciiEqualFold(got, qsec) {
		return replyCaseDiffers
	}
	return replyOther
}

// questionSection returns the question section of the packed query b: the
// name as written, type and class.
func questionSection(b []byte) ([]byte, bool) {
	off := 12
	for {
		if off >= len(b) {
			return nil, false
		}
		n := int(b[off])
		if n&0xC0 != 0 {
			return nil, false
		}
		off += 1 + n
		if n == 0 {
			break
		}
	}
	if off+4 > len(b) {
		return nil, false
	}
	return b[12 : off+4], true
}

// asciiEqualFold compares wire names (and the type and class after them)
// folding ASCII letters only, as DNS does.
func asciiEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// rngs hold ChaCha8 generators seeded from crypto/rand, for query IDs and
// 0x20 case: a generator per goroutine at a time, so the 64 random bits of
// a name's case cost no lock and no system call (BenchmarkQueryRandom: an
// ID and a name's case, 120 ns, of which the string is most; crypto/rand
// alone took 43 ns for an ID). A generator the pool drops is replaced by a
// newly seeded one.
var rngs = sync.Pool{New: func() any {
	var seed [32]byte
	crand.Read(seed[:])
	return rand.NewChaCha8(seed)
}}

// randomCase writes each letter of name in upper or lower case at random.
func randomCase(name string, rng *rand.ChaCha8) string {
	b := []byte(name)
	var bits uint64
	left := 0
	for i, c := range b {
		lower := c | 0x20
		if lower < 'a' || lower > 'z' {
			continue
		}
		if left == 0 {
			bits, left = rng.Uint64(), 64
		}
		if bits&1 == 0 {
			b[i] = lower
		} else {
			b[i] = lower &^ 0x20
		}
		bits >>= 1
		left--
	}
	return string(b)
}

// replyBufs holds buffers for upstream replies over UDP, of the size the
// queries advertise in their OPT record: an upstream sends nothing longer
// over UDP, but a reply with TC set, which exchange asks again over TCP.
var replyBufs = sync.Pool{New: func() any { return new([ednsUDPSize]byte) }}

// packQuery packs q as q.msg() would be packed when its name is in plain
// labels, as every normalized name is; otherwise it reports false.
func packQuery(q question) ([]byte, bool) {
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
