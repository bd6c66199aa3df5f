package dnsfront

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// fakeUpstream is a real DNS server on loopback (UDP and TCP on one port)
// serving fixed records, and counting the questions it gets so tests can see
// caching and coalescing.
type fakeUpstream struct {
	addr string
	mu   sync.Mutex
	hits map[string]int // "name/type" -> count
	udp  *dns.Server
	tcp  *dns.Server
}

const upstreamSOAMin = 30

func startUpstream(tb testing.TB) *fakeUpstream {
	tb.Helper()
	pc, ln, err := listenBoth("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	u := &fakeUpstream{addr: pc.LocalAddr().String(), hits: make(map[string]int)}
	u.udp = &dns.Server{PacketConn: pc, Handler: u}
	u.tcp = &dns.Server{Listener: ln, Handler: u}
	for _, srv := range []*dns.Server{u.udp, u.tcp} {
		up := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(up) }
		go func() { _ = srv.ActivateAndServe() }()
		<-up
	}
	tb.Cleanup(func() {
		_ = u.udp.Shutdown()
		_ = u.tcp.Shutdown()
	})
	return u
}

func (u *fakeUpstream) count(name string, qtype uint16) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[strings.ToLower(name)+"/"+dns.TypeToString[qtype]]
}

func rrs(tb testing.TB, lines ...string) []dns.RR {
	var out []dns.RR
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, rr)
	}
	return out
}

func (u *fakeUpstream) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	u.mu.Lock()
	u.hits[name+"/"+dns.TypeToString[q.Qtype]]++
	u.mu.Unlock()

	m := new(dns.Msg)
	m.SetReply(r)
	soa, _ := dns.NewRR(fmt.Sprintf("example.test. 300 IN SOA ns.example.test. h.example.test. 1 1 1 1 %d", upstreamSOAMin))
	add := func(s string) {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	switch {
	case name == "nx.example.test.":
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
	case name == "fail.example.test.":
		m.Rcode = dns.RcodeServerFailure
	case name == "direct.example.test.":
		if q.Qtype == dns.TypeA {
			add(name + " 300 IN A 10.99.0.5")
		} else if q.Qtype == dns.TypeAAAA {
			add(name + " 300 IN AAAA 2001:db8::5")
		}
	case name == "alias.example.test.":
		add(name + " 300 IN CNAME direct.example.test.")
		if q.Qtype == dns.TypeA {
			add("direct.example.test. 300 IN A 10.99.0.5")
		}
	case name == "big.example.test." || name == "huge.example.test.":
		n, third := 40, 1
		if name == "huge.example.test." {
			n, third = 120, 2
		}
		if q.Qtype == dns.TypeA {
			for i := range n {
				add(fmt.Sprintf("%s 300 IN A 10.99.%d.%d", name, third, i+1))
			}
		}
	case name == "tc.example.test.":
		if q.Qtype == dns.TypeA {
			add(name + " 300 IN A 192.0.2.77")
		}
	case name == "private.example.test.":
		if q.Qtype == dns.TypeA {
			add(name + " 300 IN A 10.1.2.3")
		}
	case strings.HasSuffix(name, ".outside.test."):
		add(name + " 300 IN A 198.51.100.1")
	default:
		// Every other name exists with one address.
		if q.Qtype == dns.TypeA {
			add(name + " 300 IN A 192.0.2.10")
		} else {
			m.Ns = append(m.Ns, soa)
		}
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		if name == "tc.example.test." {
			// Truncated over UDP whatever the size: the answer is over
			// TCP only.
			m.Answer, m.Truncated = nil, true
		}
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
			m.SetEdns0(opt.UDPSize(), false)
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// stop shuts the fake down early, for tests of upstream failure.
func (u *fakeUpstream) stop() {
	_ = u.udp.ShutdownContext(context.Background())
	_ = u.tcp.ShutdownContext(context.Background())
}

// docRanges are the documentation networks the fake upstream answers
// with. The resolver drops answers in this host's own networks, and a test
// machine's may be one of these (one CI's is 192.0.2.0/24), so tests admit
// them; the resolver's own tests cover the dropping.
var docRanges = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
}
