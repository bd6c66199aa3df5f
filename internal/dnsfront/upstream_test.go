package dnsfront

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/testdns"
)

const upstreamSOAMin = 30

// startUpstream runs the fake upstream (package testdns) with this
// package's zone.
func startUpstream(tb testing.TB) *testdns.Upstream { return testdns.Start(tb, zone) }

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

// zone is the fake upstream's: fixed records for the names the tests ask.
func zone(name string, q dns.Question, m *dns.Msg, udp bool) {
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
	if udp && name == "tc.example.test." {
		// Truncated over UDP whatever the size: the answer is over TCP
		// only.
		m.Answer, m.Truncated = nil, true
	}
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
