package dnsfront

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// fakeSrc is fakeWriter's remote address, so that fastAnswer and ServeDNS
// through a fakeWriter answer the same client.
var fakeSrc = netip.MustParseAddr("127.0.0.9")

// sameAsServeDNS answers the packed query b with fastAnswer and, if it did,
// checks that ServeDNS gives the same reply to the same query.
func sameAsServeDNS(t *testing.T, s *Server, b []byte) bool {
	t.Helper()
	f := s.newFastState()
	out, ok := s.fastAnswer(f, b, fakeSrc, make([]byte, 0, maxReply))
	f.flush(s)
	if !ok {
		return false
	}
	if !plainQuestion(b) {
		t.Fatalf("fast answer to a query the guard drops: %x", b)
	}
	q := new(dns.Msg)
	if err := q.Unpack(b); err != nil {
		t.Fatalf("fast answer to a query the library cannot parse (%v): %x", err, b)
	}
	got := new(dns.Msg)
	if err := got.Unpack(out); err != nil {
		t.Fatalf("fast answer does not parse: %v", err)
	}
	if len(out) > maxReply {
		t.Fatalf("fast answer of %d bytes", len(out))
	}
	w := &fakeWriter{}
	s.ServeDNS(w, q)
	if len(w.msgs) != 1 {
		t.Fatalf("ServeDNS wrote %d replies", len(w.msgs))
	}
	if g, want := got.String(), w.msgs[0].String(); g != want {
		t.Fatalf("fast answer\n%s\nServeDNS\n%s", g, want)
	}
	return true
}

func pack(t testing.TB, m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFastAnswerSameAsServeDNS(t *testing.T) {
	s, _ := fuzzServer(t, "example.test", "other.test")
	// Map the names for fakeSrc the slow way first.
	for _, n := range []string{"a.example.test.", "b-c.other.test.", "x_y.a.example.test."} {
		if sameAsServeDNS(t, s, pack(t, queryMsg(n, dns.TypeA, false))) {
			t.Fatalf("%s answered fast before it was mapped", n)
		}
		s.ServeDNS(&fakeWriter{}, queryMsg(n, dns.TypeA, false))
	}
	cookie := queryMsg("a.example.test.", dns.TypeA, true)
	cookie.IsEdns0().Option = append(cookie.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
	small := queryMsg("A.Example.Test.", dns.TypeAAAA, false)
	small.SetEdns0(100, false)
	noRD := queryMsg("b-c.other.test.", dns.TypeA, false)
	noRD.RecursionDesired = false
	noRD.CheckingDisabled = true
	for i, m := range []*dns.Msg{
		queryMsg("a.example.test.", dns.TypeA, false),
		queryMsg("a.example.test.", dns.TypeA, true),
		queryMsg("A.EXAMPLE.test.", dns.TypeAAAA, true),
		queryMsg("x_y.a.example.test.", dns.TypeA, true),
		cookie, small, noRD,
	} {
		before := s.stats.fast.Load()
		if !sameAsServeDNS(t, s, pack(t, m)) {
			t.Fatalf("query %d (%v) not answered fast", i, m.Question[0])
		}
		if s.stats.fast.Load() != before+1 {
			t.Fatalf("query %d: fast answers not counted", i)
		}
	}
	// What the fast path leaves to ServeDNS.
	bad := queryMsg("a.example.test.", dns.TypeA, true)
	bad.IsEdns0().SetVersion(1)
	ecs := queryMsg("a.example.test.", dns.TypeA, true)
	ecs.IsEdns0().Option = append(ecs.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: []byte{192, 0, 2, 0}})
	for i, m := range []*dns.Msg{
		queryMsg("unmapped.example.test.", dns.TypeA, false), // not mapped
		queryMsg("direct.example.test.", dns.TypeA, false),   // ignored destination
		queryMsg("nx.example.test.", dns.TypeA, false),       // NXDOMAIN upstream
		queryMsg("a.elsewhere.test.", dns.TypeA, false),      // outside the domains
		queryMsg("a.example.test.", dns.TypeMX, false),
		queryMsg("example.test.", dns.TypeSOA, false),
		bad, ecs,
	} {
		if sameAsServeDNS(t, s, pack(t, m)) {
			t.Fatalf("query %d (%v) answered fast", i, m.Question[0])
		}
	}
	// A compressed question, a response, a second question, trailing bytes.
	plain := pack(t, queryMsg("a.example.test.", dns.TypeA, false))
	resp := append([]byte(nil), plain...)
	resp[2] |= 0x80
	two := queryMsg("a.example.test.", dns.TypeA, false)
	two.Question = append(two.Question, two.Question[0])
	for i, b := range [][]byte{
		append(append([]byte(nil), plain[:12]...), 0xC0, 12, 0, 1, 0, 1),
		resp,
		pack(t, two),
		append(append([]byte(nil), plain...), 0),
		plain[:len(plain)-1],
	} {
		if sameAsServeDNS(t, s, b) {
			t.Fatalf("odd query %d answered fast", i)
		}
	}
}

// TestFastPathFollowsPool: a release takes the name off the fast path at
// once, and its next answer is whatever the pool gives it then.
func TestFastPathFollowsPool(t *testing.T) {
	e := start(t, "100.64.0.0/28", nil)
	first := answerA(t, e.query(t, "a.example.test.", dns.TypeA, qopts{}))
	fast := e.srv.stats.fast.Load()
	if got := answerA(t, e.query(t, "a.example.test.", dns.TypeA, qopts{})); got != first {
		t.Fatalf("second answer %v, first %v", got, first)
	}
	if e.srv.stats.fast.Load() != fast+1 {
		t.Fatal("a mapped name was not answered by the fast path over UDP")
	}
	if ok, err := e.pool.Release("127.0.0.1", "a.example.test"); err != nil || !ok {
		t.Fatalf("Release: %v %v", ok, err)
	}
	answerA(t, e.query(t, "b.example.test.", dns.TypeA, qopts{})) // takes another address
	got := answerA(t, e.query(t, "a.example.test.", dns.TypeA, qopts{}))
	if m, ok := e.pool.Get("127.0.0.1", "a.example.test"); !ok || m.Addr != got {
		t.Fatalf("answer %v after release, pool holds %v %v", got, m.Addr, ok)
	}
	if e.srv.stats.fast.Load() != fast+1 {
		t.Fatal("a released name was answered by the fast path")
	}
	// TCP never takes the fast path.
	if a := answerA(t, e.query(t, "a.example.test.", dns.TypeA, qopts{network: "tcp"})); a != got {
		t.Fatalf("TCP answer %v, UDP %v", a, got)
	}
	if e.srv.stats.fast.Load() != fast+1 {
		t.Fatal("TCP counted as fast")
	}
}

func FuzzFastAnswer(f *testing.F) {
	for _, m := range []*dns.Msg{
		queryMsg("a.example.test.", dns.TypeA, false),
		queryMsg("A.Example.test.", dns.TypeAAAA, true),
		queryMsg("b.other.test.", dns.TypeA, true),
		queryMsg("direct.example.test.", dns.TypeA, true),
	} {
		f.Add(pack(f, m))
	}
	s, _ := fuzzServer(f, "example.test", "other.test")
	for _, n := range []string{"a.example.test.", "b.other.test.", "c.example.test."} {
		w := &fakeWriter{}
		s.ServeDNS(w, queryMsg(n, dns.TypeA, false))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsServeDNS(t, s, b)
	})
}

// BenchmarkFastAnswer is the mapped-name path as the UDP loops run it: the
// query's bytes in, the reply's bytes out (BenchmarkServeDNSMapped is the
// same query through the DNS library's types, as ServeDNS gets it).
func BenchmarkFastAnswer(b *testing.B) {
	s, _ := fuzzServer(b, "example.test")
	w := &fakeWriter{}
	s.ServeDNS(w, queryMsg("a.example.test.", dns.TypeA, true))
	q := pack(b, queryMsg("a.example.test.", dns.TypeA, true))
	f, out := s.newFastState(), make([]byte, 0, maxReply)
	if _, ok := s.fastAnswer(f, q, fakeSrc, out); !ok {
		b.Fatal("not answered fast")
	}
	b.ReportAllocs()
	for b.Loop() {
		out, _ = s.fastAnswer(f, q, fakeSrc, out)
	}
}
