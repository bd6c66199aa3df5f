package dnsfront

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestNewNamesAnswerAsServeDNS: the new names' workers give each A and AAAA
// query the reply ServeDNS gives it, whether they pack it by hand (a pool
// address) or through the library (NXDOMAIN, passthrough), and leave every
// other query to the library untouched.
func TestNewNamesAnswerAsServeDNS(t *testing.T) {
	s, _ := fuzzServer(t, "example.test")
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// The fakeWriter's client: ServeDNS and the workers answer the same one.
	cl, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IP(fakeSrc.AsSlice())})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	slow := newSlowConn(srv)
	n := newNewNames(s, slow)
	src := cl.LocalAddr().(*net.UDPAddr).AddrPort()
	buf := make([]byte, 4096)

	for i, m := range []*dns.Msg{
		queryMsg("new.example.test.", dns.TypeA, false),
		queryMsg("New2.Example.test.", dns.TypeA, true),
		queryMsg("new3.example.test.", dns.TypeAAAA, true),
		queryMsg("nx.example.test.", dns.TypeA, true),     // NXDOMAIN upstream
		queryMsg("direct.example.test.", dns.TypeA, true), // ignored destination: passthrough
	} {
		b := pack(t, m)
		answered, fastBefore := s.stats.answered.Load(), s.stats.fast.Load()
		if !n.take(b, src, srv) {
			t.Fatalf("query %d not taken", i)
		}
		cl.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, err := cl.Read(buf)
		if err != nil {
			t.Fatalf("query %d: no reply: %v", i, err)
		}
		got := new(dns.Msg)
		if err := got.Unpack(buf[:k]); err != nil {
			t.Fatalf("query %d: reply does not parse: %v", i, err)
		}
		if s.stats.answered.Load() != answered+1 || s.stats.fast.Load() != fastBefore {
			t.Fatalf("query %d: answered %d -> %d", i, answered, s.stats.answered.Load())
		}
		w := &fakeWriter{}
		s.ServeDNS(w, m)
		if g, want := got.String(), w.msgs[0].String(); g != want {
			t.Fatalf("query %d: worker\n%s\nServeDNS\n%s", i, g, want)
		}
		if i < 3 && (len(got.Answer) != 1 || got.Rcode != dns.RcodeSuccess) {
			t.Fatalf("query %d: want one pool address, got\n%s", i, got)
		}
	}

	// Left to the library, unanswered here.
	for i, m := range []*dns.Msg{
		queryMsg("a.elsewhere.test.", dns.TypeA, false),
		queryMsg("a.example.test.", dns.TypeMX, false),
	} {
		if !n.take(pack(t, m), src, srv) {
			t.Fatalf("query %d not taken", i)
		}
		select {
		case p := <-slow.queue:
			if q := new(dns.Msg); q.Unpack(*p.buf) != nil || q.Question[0] != m.Question[0] || p.addr.AddrPort() != netip.AddrPortFrom(fakeSrc, src.Port()) {
				t.Fatalf("query %d: the library got %x from %v", i, *p.buf, p.addr)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("query %d never reached the library", i)
		}
	}
	s.cancel()
	n.wait()
}
