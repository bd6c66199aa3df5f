package resolver

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/testdns"
)

// TestPackQuery: packQuery packs what the DNS library packs of the same
// question, with or without the trailing dot, or declines.
func TestPackQuery(t *testing.T) {
	for _, name := range []string{"a.example.test", "x_y-z.B.example.test", "example", "a.example.test."} {
		q := question{name: name, qtype: dns.TypeAAAA, id: 0xBEEF}
		got, ok := packQuery(q)
		if !ok {
			t.Fatalf("%s: declined", name)
		}
		want, err := q.msg().Pack()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("%s: packed\n%x\nlibrary\n%x", name, got, want)
		}
	}
	for _, name := range []string{`a\.b.example.test`, "a..b", "", ".", strings.Repeat("a", 64) + ".test"} {
		if _, ok := packQuery(question{name: name, qtype: dns.TypeA}); ok {
			t.Fatalf("%q was packed", name)
		}
	}
}

// seenQuery is a query as a scripted upstream saw it.
type seenQuery struct {
	from *net.UDPAddr
	id   uint16
	name string // as sent, case included
	raw  []byte
}

// scriptedUpstream is a UDP upstream whose replies a test writes: reply
// gets each query and the socket to answer on.
type scriptedUpstream struct {
	pc   *net.UDPConn
	addr string
	mu   sync.Mutex
	seen []seenQuery
}

func startScripted(t testing.TB, reply func(pc *net.UDPConn, q seenQuery)) *scriptedUpstream {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &scriptedUpstream{pc: pc, addr: pc.LocalAddr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) != nil || len(m.Question) != 1 {
				continue
			}
			q := seenQuery{from: from, id: m.Id, name: m.Question[0].Name, raw: append([]byte(nil), buf[:n]...)}
			u.mu.Lock()
			u.seen = append(u.seen, q)
			u.mu.Unlock()
			reply(pc, q)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return u
}

func (u *scriptedUpstream) queries() []seenQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenQuery(nil), u.seen...)
}

// answer packs a reply to the query raw with one A record, the question as
// given (name with its case), and ID id.
func answer(t testing.TB, raw []byte, id uint16, name string, a string) []byte {
	q := new(dns.Msg)
	if err := q.Unpack(raw); err != nil {
		t.Error(err)
		return nil
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.Id = id
	m.Question[0].Name = name
	rr, err := dns.NewRR(q.Question[0].Name + " 300 IN A " + a)
	if err != nil {
		t.Error(err)
		return nil
	}
	m.Answer = []dns.RR{rr}
	b, err := m.Pack()
	if err != nil {
		t.Error(err)
	}
	return b
}

func newScriptedResolver(t testing.TB, addr string, mod func(*Config)) *Resolver {
	t.Helper()
	cfg := Config{Upstreams: []string{addr}, UpstreamTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	r.ownNetwork = notOwn
	return r
}

// TestQueriesUseFreshPortsIDsAndCase: every query comes from a port of its
// own and carries an ID and name case of its own, as the upstream sees them.
func TestQueriesUseFreshPortsIDsAndCase(t *testing.T) {
	up := startScripted(t, func(pc *net.UDPConn, q seenQuery) {
		pc.WriteToUDP(answer(t, q.raw, q.id, q.name, "192.0.2.1"), q.from)
	})
	r := newScriptedResolver(t, up.addr, nil)
	const n = 32
	name := "abcdefghijklmnopqrstuvwxyz"
	for i := range n {
		// Another name each time, so nothing is answered from the cache.
		if _, _, err := r.LookupA(fmt.Sprintf("%s%d.example.test", name[i%26:], i)); err != nil {
			t.Fatal(err)
		}
	}
	qs := up.queries()
	if len(qs) != n {
		t.Fatalf("%d queries seen, want %d", len(qs), n)
	}
	ports, ids, cases := map[int]bool{}, map[uint16]bool{}, map[string]bool{}
	for i, q := range qs {
		if i > 0 && q.from.Port == qs[i-1].from.Port {
			t.Errorf("queries %d and %d came from one port, %d", i-1, i, q.from.Port)
		}
		ports[q.from.Port] = true
		ids[q.id] = true
		cases[q.name] = true
	}
	// 32 draws from 28,000 ephemeral ports or 65,536 IDs collide with
	// probability under 2%; allow a few.
	if len(ports) < n-3 || len(ids) < n-3 {
		t.Fatalf("%d ports and %d IDs over %d queries", len(ports), len(ids), n)
	}
	lower := 0
	for name := range cases {
		if name == strings.ToLower(name) {
			lower++
		}
	}
	// A name of 20 or more letters in all lower case by chance: 2^-20.
	if lower > 0 || len(cases) != n {
		t.Fatalf("%d names in lower case, %d distinct, of %d: %v", lower, len(cases), n, cases)
	}
}

// TestUnwantedRepliesDoNotEndTheWait: replies with another ID, another
// name, another type or another case of the name are skipped and counted;
// the right reply after them is taken.
func TestUnwantedRepliesDoNotEndTheWait(t *testing.T) {
	up := startScripted(t, func(pc *net.UDPConn, q seenQuery) {
		other := strings.ToUpper(q.name)
		if other == q.name {
			other = strings.ToLower(q.name)
		}
		send := func(b []byte) { pc.WriteToUDP(b, q.from) }
		send(answer(t, q.raw, q.id+1, q.name, "203.0.113.66"))             // another ID
		send(answer(t, q.raw, q.id, "evil.example.test.", "203.0.113.66")) // another name
		send(answer(t, q.raw, q.id, other, "203.0.113.66"))                // another case
		wrongType := answer(t, q.raw, q.id, q.name, "203.0.113.66")
		binary.BigEndian.PutUint16(wrongType[12+len(q.name)+1:], dns.TypeAAAA)
		send(wrongType)
		send([]byte{byte(q.id >> 8), byte(q.id), 0x80}) // short
		send(answer(t, q.raw, q.id, q.name, "192.0.2.1"))
	})
	r := newScriptedResolver(t, up.addr, nil)
	addrs, _, err := r.LookupA("poison.example.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("%v %v", addrs, err)
	}
	if n := r.Stats().UnwantedReplies; n != 5 {
		t.Fatalf("%d unwanted replies counted, want 5", n)
	}
}

// TestOnlyUnwantedRepliesTimeOut: a flood of wrong replies and no right one
// ends in the timeout, not in an answer.
func TestOnlyUnwantedRepliesTimeOut(t *testing.T) {
	up := startScripted(t, func(pc *net.UDPConn, q seenQuery) {
		for id := range 512 {
			if uint16(id) != q.id {
				pc.WriteToUDP(answer(t, q.raw, uint16(id), q.name, "203.0.113.66"), q.from)
			}
		}
	})
	r := newScriptedResolver(t, up.addr, func(c *Config) { c.UpstreamTimeout = 300 * time.Millisecond })
	if addrs, _, err := r.LookupA("poison.example.test"); err == nil {
		t.Fatalf("took a forged reply: %v", addrs)
	}
	if n := r.Stats().UnwantedReplies; n < 100 {
		t.Fatalf("%d unwanted replies counted", n)
	}
}

// TestUnwantedThresholdClearsCache: past the threshold the cache is
// emptied and the count starts again.
func TestUnwantedThresholdClearsCache(t *testing.T) {
	forge := 0
	var mu sync.Mutex
	up := startScripted(t, func(pc *net.UDPConn, q seenQuery) {
		mu.Lock()
		n := forge
		mu.Unlock()
		for range n {
			pc.WriteToUDP(answer(t, q.raw, q.id+1, q.name, "203.0.113.66"), q.from)
		}
		pc.WriteToUDP(answer(t, q.raw, q.id, q.name, "192.0.2.1"), q.from)
	})
	r := newScriptedResolver(t, up.addr, func(c *Config) { c.UnwantedReplyThreshold = 10 })
	if _, _, err := r.LookupA("cached.example.test"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Cached("cached.example.test", dns.TypeA, time.Now()); !ok {
		t.Fatal("not cached")
	}
	mu.Lock()
	forge = 6
	mu.Unlock()
	if _, _, err := r.LookupA("a.example.test"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Cached("cached.example.test", dns.TypeA, time.Now()); !ok || r.Stats().CacheCleared != 0 {
		t.Fatal("cleared below the threshold")
	}
	if _, _, err := r.LookupA("b.example.test"); err != nil {
		t.Fatal(err)
	}
	s := r.Stats()
	if _, ok := r.Cached("cached.example.test", dns.TypeA, time.Now()); ok || s.CacheCleared != 1 || s.UnwantedReplies != 12 {
		t.Fatalf("after 12 unwanted replies, threshold 10: %+v", s)
	}
	if n := r.sinceClear.Load(); n != 2 {
		t.Fatalf("count after the clearing is %d, want 2", n)
	}
}

// TestCaseFallback: an upstream that answers in lower case whatever it was
// asked is asked again over TCP, where its reply (also in lower case) is
// taken and shows that it does not echo case; from then on it is asked in
// plain case over UDP.
func TestCaseFallback(t *testing.T) {
	up := testdns.Start(t, func(name string, q dns.Question, m *dns.Msg, udp bool) {
		m.Question[0].Name = strings.ToLower(m.Question[0].Name)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: m.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
	})
	r := newScriptedResolver(t, up.Addr, func(c *Config) { c.UpstreamTimeout = 300 * time.Millisecond })
	for _, name := range []string{"first.example.test", "second.example.test"} {
		if addrs, _, err := r.LookupA(name); err != nil || len(addrs) != 1 {
			t.Fatalf("%s: %v %v", name, addrs, err)
		}
	}
	if !r.upstreams[0].noCaps.Load() {
		t.Fatal("the upstream is still asked in random case")
	}
	// first: UDP (not echoed) and TCP; second: UDP in plain case at once.
	if got := up.Count("first.example.test.", dns.TypeA); got != 2 {
		t.Fatalf("first.example.test asked %d times, want 2 (UDP, then TCP)", got)
	}
	if got := up.Count("second.example.test.", dns.TypeA); got != 1 {
		t.Fatalf("second.example.test asked %d times, want 1", got)
	}
}

// TestForgedCaseOnlyReplyKeepsCase: a reply with the query's port and ID
// but not its case, from a forger, while the upstream does echo case: the
// question is asked over TCP, the upstream's answer there is taken, and
// random case stays on.
func TestForgedCaseOnlyReplyKeepsCase(t *testing.T) {
	up := testdns.Start(t, func(name string, q dns.Question, m *dns.Msg, udp bool) {
		if udp {
			// The forger's reply, in place of the upstream's own: the
			// right ID and port, the name in lower case, its address.
			m.Question[0].Name = strings.ToLower(m.Question[0].Name)
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: m.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(203, 0, 113, 66)})
			return
		}
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
	})
	r := newScriptedResolver(t, up.Addr, func(c *Config) { c.UpstreamTimeout = 300 * time.Millisecond })
	addrs, _, err := r.LookupA("victim.example.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("got %v %v, want the upstream's 192.0.2.1 from TCP", addrs, err)
	}
	if r.upstreams[0].noCaps.Load() {
		t.Fatal("a forged case-only reply turned random case off")
	}
}

// TestMatchReply: the checks in their own terms.
func TestMatchReply(t *testing.T) {
	b, _ := packQuery(question{name: "AbC.example.TEST", qtype: dns.TypeA, id: 7})
	qsec, ok := questionSection(b)
	if !ok {
		t.Fatal("no question section")
	}
	reply := append([]byte(nil), b...)
	reply[2] |= 0x80
	if got := matchReply(reply, 7, qsec); got != replyMatches {
		t.Fatalf("the reply: %v", got)
	}
	if got := matchReply(reply, 8, qsec); got != replyOther {
		t.Fatalf("another ID: %v", got)
	}
	q := append([]byte(nil), b...)
	if got := matchReply(q, 7, qsec); got != replyOther {
		t.Fatalf("a query (QR clear): %v", got)
	}
	lower := append([]byte(nil), reply...)
	for i := 12; i < 12+len(qsec); i++ {
		if 'A' <= lower[i] && lower[i] <= 'Z' {
			lower[i] += 'a' - 'A'
		}
	}
	if got := matchReply(lower, 7, qsec); got != replyCaseDiffers {
		t.Fatalf("lower case: %v", got)
	}
}

// FuzzMatchReply: any bytes as the reply to a fixed question never panic,
// and are taken only with the ID, one question, and that question exactly.
func FuzzMatchReply(f *testing.F) {
	b, _ := packQuery(question{name: "AbC.example.TEST", qtype: dns.TypeA, id: 0x4242})
	qsec, _ := questionSection(b)
	reply := append([]byte(nil), b...)
	reply[2] |= 0x80
	f.Add(reply)
	f.Add(b)
	f.Add([]byte{0x42, 0x42})
	f.Fuzz(func(t *testing.T, p []byte) {
		got := matchReply(p, 0x4242, qsec)
		if got == replyOther {
			return
		}
		if len(p) < 12+len(qsec) || binary.BigEndian.Uint16(p) != 0x4242 || p[2]&0x80 == 0 ||
			binary.BigEndian.Uint16(p[4:]) != 1 {
			t.Fatalf("took %x: %v", p, got)
		}
		same := string(p[12:12+len(qsec)]) == string(qsec)
		if same != (got == replyMatches) {
			t.Fatalf("%x: %v, question echoed exactly: %v", p, got, same)
		}
		if !strings.EqualFold(string(p[12:12+len(qsec)]), string(qsec)) {
			t.Fatalf("%x: %v for another question", p, got)
		}
	})
}

// BenchmarkExchange is one upstream exchange over UDP against a loopback
// upstream: as the resolver does it (fresh-port: a random port per query,
// on a reused socket), against the socket kept with its port of before
// (kept-port) and a socket opened and closed per query (socket-per-query),
// the first way this package gave each query its own port
// (docs/performance.md).
func BenchmarkExchange(b *testing.B) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			// The query with QR set is an answerless reply echoing the
			// question; its OPT record stays, as an upstream's would.
			buf[2] |= 0x80
			pc.WriteToUDP(buf[:n], from)
		}
	}()
	defer func() {
		pc.Close()
		<-done
	}()
	r, err := New(Config{Upstreams: []string{pc.LocalAddr().String()}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.Run("fresh-port", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.exchange("www.example.test", dns.TypeA, r.upstreams[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same write and read on one kept socket, as before: the
	// difference is the price of a random port per query.
	b.Run("kept-port", func(b *testing.B) {
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.upstreams[0].udp))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		buf := make([]byte, ednsUDPSize)
		b.ReportAllocs()
		for b.Loop() {
			q, _ := packQuery(question{name: "www.example.test", qtype: dns.TypeA, id: 1})
			conn.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := conn.Write(q); err != nil {
				b.Fatal(err)
			}
			n, err := conn.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := readReply(buf[:n]); !ok {
				b.Fatal("reply not read")
			}
		}
	})
	b.Run("socket-per-query", func(b *testing.B) {
		buf := make([]byte, ednsUDPSize)
		b.ReportAllocs()
		for b.Loop() {
			conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.upstreams[0].udp))
			if err != nil {
				b.Fatal(err)
			}
			q, _ := packQuery(question{name: "www.example.test", qtype: dns.TypeA, id: 1})
			conn.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := conn.Write(q); err != nil {
				b.Fatal(err)
			}
			n, err := conn.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			conn.Close()
			if _, ok := readReply(buf[:n]); !ok {
				b.Fatal("reply not read")
			}
		}
	})
}

// BenchmarkQueryRandom: an ID and a name's random case from a pooled
// ChaCha8, and the ID alone from crypto/rand, the choice not taken.
func BenchmarkQueryRandom(b *testing.B) {
	b.Run("chacha8", func(b *testing.B) {
		for b.Loop() {
			rng := rngs.Get().(*rand.ChaCha8)
			_ = uint16(rng.Uint64())
			_ = randomCase("www.example.test", rng)
			rngs.Put(rng)
		}
	})
	b.Run("crypto-rand-id", func(b *testing.B) {
		var id [2]byte
		for b.Loop() {
			crand.Read(id[:])
		}
	})
}

// TestFinishedQueryPortIsDead: a reply right in every byte (ID, question,
// case) but sent to the port of the query before is not taken: that port
// was released when its exchange ended, even though sockets are reused.
func TestFinishedQueryPortIsDead(t *testing.T) {
	var mu sync.Mutex
	var prev *net.UDPAddr
	up := startScripted(t, func(pc *net.UDPConn, q seenQuery) {
		mu.Lock()
		last := prev
		prev = q.from
		mu.Unlock()
		if last == nil {
			pc.WriteToUDP(answer(t, q.raw, q.id, q.name, "192.0.2.1"), q.from)
			return
		}
		pc.WriteToUDP(answer(t, q.raw, q.id, q.name, "203.0.113.66"), last)
	})
	r := newScriptedResolver(t, up.addr, func(c *Config) { c.UpstreamTimeout = 300 * time.Millisecond })
	if _, _, err := r.LookupA("first.example.test"); err != nil {
		t.Fatal(err)
	}
	if addrs, _, err := r.LookupA("second.example.test"); err == nil {
		t.Fatalf("took a reply sent to the previous query's port: %v", addrs)
	}
	qs := up.queries()
	if len(qs) != 2 || qs[0].from.Port == qs[1].from.Port {
		t.Fatalf("queries %v", qs)
	}
}

// TestReplyFromAnotherSourceIsNotTaken: a reply right in every byte but
// sent from another port of the upstream's address never reaches the
// query's socket.
func TestReplyFromAnotherSourceIsNotTaken(t *testing.T) {
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	up := startScripted(t, func(_ *net.UDPConn, q seenQuery) {
		other.WriteToUDP(answer(t, q.raw, q.id, q.name, "203.0.113.66"), q.from)
	})
	r := newScriptedResolver(t, up.addr, func(c *Config) { c.UpstreamTimeout = 300 * time.Millisecond })
	if addrs, _, err := r.LookupA("spoofed.example.test"); err == nil {
		t.Fatalf("took a reply from another port: %v", addrs)
	}
}
