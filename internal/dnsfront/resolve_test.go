package dnsfront

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// TestLookupA is the connector's view of the resolver: A records through
// CNAMEs, NXDOMAIN as no address, ignored destinations flagged, and the
// cache shared with DNS answers.
func TestLookupA(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	addrs, ignored, err := e.srv.LookupA("a.example.test")
	if err != nil || ignored || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("a: %v %v %v", addrs, ignored, err)
	}
	answerA(t, e.query(t, "a.example.test.", dns.TypeA, qopts{}))
	if n := e.up.count("a.example.test.", dns.TypeA); n != 1 {
		t.Fatalf("upstream asked %d times for a name the connector resolved first, want 1", n)
	}
	addrs, ignored, err = e.srv.LookupA("alias.example.test")
	if err != nil || !ignored || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("10.99.0.5") {
		t.Fatalf("alias: %v %v %v", addrs, ignored, err)
	}
	if addrs, _, err = e.srv.LookupA("nx.example.test"); err != nil || len(addrs) != 0 {
		t.Fatalf("nx: %v %v", addrs, err)
	}
	if _, _, err = e.srv.LookupA("fail.example.test"); err == nil {
		t.Fatal("SERVFAIL upstream gave no error")
	}
	// AAAA asks for AAAA and takes no A record from the answer.
	if addrs, _, err = e.srv.LookupAAAA("a.example.test"); err != nil || len(addrs) != 0 {
		t.Fatalf("AAAA of a name with only A: %v %v", addrs, err)
	}
	if n := e.up.count("a.example.test.", dns.TypeAAAA); n != 1 {
		t.Fatalf("upstream asked %d times for AAAA, want 1", n)
	}
}

// TestLookupTruncatedUpstreamAsksOverTCP: an upstream reply with TC set is
// asked again over TCP, and the TCP answer is the one used.
func TestLookupTruncatedUpstreamAsksOverTCP(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	addrs, _, err := e.srv.LookupA("tc.example.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.77") {
		t.Fatalf("tc: %v %v", addrs, err)
	}
	if n := e.up.count("tc.example.test.", dns.TypeA); n != 2 {
		t.Fatalf("upstream asked %d times, want 2 (UDP, then TCP)", n)
	}
}
