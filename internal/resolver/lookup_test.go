package resolver

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/testdns"
)

var ignorePrefix = netip.MustParsePrefix("10.99.0.0/16")

// notOwn stands for this host's networks in tests, whose answers are in
// documentation ranges that the test machine's own network may be in.
func notOwn(netip.Addr) bool { return false }

// newTest is a resolver asking a fake upstream, with cfg edited by mod.
func newTest(t testing.TB, mod func(*Config)) (*Resolver, *testdns.Upstream) {
	t.Helper()
	up := startUpstream(t)
	cfg := Config{
		Upstreams:          []string{up.Addr},
		IgnoreDestinations: []netip.Prefix{ignorePrefix},
		UpstreamTimeout:    2 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	r.ownNetwork = notOwn
	return r, up
}

// TestLookupA is the connector's view of the resolver: A records through
// CNAMEs, NXDOMAIN as no address, ignored destinations flagged, and the
// cache.
func TestLookupA(t *testing.T) {
	r, up := newTest(t, nil)
	addrs, ignored, err := r.LookupA("a.example.test")
	if err != nil || ignored || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("a: %v %v %v", addrs, ignored, err)
	}
	if _, _, err := r.LookupA("a.example.test"); err != nil {
		t.Fatal(err)
	}
	if n := up.Count("a.example.test.", dns.TypeA); n != 1 {
		t.Fatalf("upstream asked %d times for a cached name, want 1", n)
	}
	addrs, ignored, err = r.LookupA("alias.example.test")
	if err != nil || !ignored || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("10.99.0.5") {
		t.Fatalf("alias: %v %v %v", addrs, ignored, err)
	}
	if addrs, _, err = r.LookupA("nx.example.test"); err != nil || len(addrs) != 0 {
		t.Fatalf("nx: %v %v", addrs, err)
	}
	if _, _, err = r.LookupA("fail.example.test"); err == nil {
		t.Fatal("SERVFAIL upstream gave no error")
	}
	if s := r.Stats(); s.CacheHits != 1 || s.CacheMisses != 4 || s.UpstreamErrors != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestLookupAAAA: the same for IPv6 addresses.
func TestLookupAAAA(t *testing.T) {
	r, _ := newTest(t, nil)
	addrs, _, err := r.LookupAAAA("v6.example.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("2001:db8::10") {
		t.Fatalf("v6: %v %v", addrs, err)
	}
	if addrs, _, err = r.LookupAAAA("a.example.test"); err != nil || len(addrs) != 0 {
		t.Fatalf("a.example.test has no AAAA: %v %v", addrs, err)
	}
}

// TestLookupTruncatedUpstreamAsksOverTCP: an upstream reply with TC set is
// asked again over TCP, and the TCP answer is the one used.
func TestLookupTruncatedUpstreamAsksOverTCP(t *testing.T) {
	r, up := newTest(t, nil)
	addrs, _, err := r.LookupA("tc.example.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.77") {
		t.Fatalf("tc: %v %v", addrs, err)
	}
	if n := up.Count("tc.example.test.", dns.TypeA); n != 2 {
		t.Fatalf("upstream asked %d times, want 2 (UDP, then TCP)", n)
	}
}

// TestPrivateAnswersDropped: a public name keeps only its public addresses,
// a name with private ones only has none (and says so), unless it is under
// a private domain or the address is in AllowPrivate.
func TestPrivateAnswersDropped(t *testing.T) {
	r, _ := newTest(t, func(c *Config) {
		c.PrivateDomains = []string{"corp.example.test"}
		c.AllowPrivate = []netip.Prefix{netip.MustParsePrefix("172.16.5.0/24")}
	})
	cases := []struct {
		name string
		want []string
	}{
		{"mixed.example.test", []string{"192.0.2.20"}},
		{"private.example.test", nil},
		{"private.corp.example.test", []string{"10.1.2.3", "127.0.0.5"}},
		{"allowed.example.test", []string{"172.16.5.9"}},
	}
	for _, c := range cases {
		addrs, _, err := r.LookupA(c.name)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	a, err := r.Lookup("private.example.test", dns.TypeA)
	if err != nil || !a.PrivateOnly || a.Rcode != dns.RcodeSuccess {
		t.Fatalf("private only: %+v %v", a, err)
	}
	if a, _ = r.Lookup("mixed.example.test", dns.TypeA); a.PrivateOnly {
		t.Fatal("a name with a public address is private only")
	}
	if addrs, _, err := r.LookupAAAA("private.example.test"); err != nil || len(addrs) != 0 {
		t.Fatalf("AAAA fd00::1 kept: %v %v", addrs, err)
	}
	// mixed: 10.0.0.1; private: 10.1.2.3, 127.0.0.5 and fd00::1.
	if n := r.Stats().PrivateDropped; n != 4 {
		t.Fatalf("dropped %d, want 4", n)
	}
}
