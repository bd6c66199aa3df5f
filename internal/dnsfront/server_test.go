package dnsfront

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/testdns"
	"github.com/ippool/ippool/localpool"
	"github.com/ippool/ippool/pool"
)

var ignorePrefix = netip.MustParsePrefix("10.99.0.0/16")

type env struct {
	srv  *Server
	pool *localpool.Pool
	up   *testdns.Upstream
	addr string
}

// start runs a Server on 127.0.0.1:0 over a localpool with the given pool
// text, a fake upstream, and cfg edited by mod.
func start(t *testing.T, poolText string, mod func(*Config)) *env {
	t.Helper()
	pc, err := pool.ParseConfig(poolText, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := localpool.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	cfg := Config{
		Addr:               "127.0.0.1:0",
		Domains:            []string{"example.test"},
		Upstreams:          []string{up.Addr},
		AllowPrivate:       docRanges,
		IgnoreDestinations: []netip.Prefix{ignorePrefix},
		V6Prefix:           netip.MustParsePrefix("fd7a:115c:a1e0::/96"),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, lp)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &env{srv: s, pool: lp, up: up, addr: s.Addr()}
}

type qopts struct {
	network string // "udp" (default) or "tcp"
	src     string // source IP, default 127.0.0.1
	edns    bool
}

func (e *env) query(t *testing.T, name string, qtype uint16, o qopts) *dns.Msg {
	t.Helper()
	if o.network == "" {
		o.network = "udp"
	}
	src := net.ParseIP("127.0.0.1")
	if o.src != "" {
		src = net.ParseIP(o.src)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if o.network == "udp" {
		d.LocalAddr = &net.UDPAddr{IP: src}
	} else {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	c := &dns.Client{Net: o.network, Dialer: d, Timeout: 5 * time.Second, UDPSize: 65535}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if o.edns {
		m.SetEdns0(4096, false)
	}
	r, _, err := c.Exchange(m, e.addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], o.network, err)
	}
	return r
}

func answerA(t *testing.T, r *dns.Msg) netip.Addr {
	t.Helper()
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("want one answer, got %v", r)
	}
	switch rr := r.Answer[0].(type) {
	case *dns.A:
		a, _ := netip.AddrFromSlice(rr.A)
		return a.Unmap()
	case *dns.AAAA:
		a, _ := netip.AddrFromSlice(rr.AAAA)
		return a
	}
	t.Fatalf("unexpected record %v", r.Answer[0])
	return netip.Addr{}
}

func ede(r *dns.Msg) *dns.EDNS0_EDE {
	if opt := r.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

func TestANewNameAndAAAA(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	a1 := answerA(t, e.query(t, "a.example.test.", dns.TypeA, qopts{}))
	if !netip.MustParsePrefix("100.64.0.0/24").Contains(a1) {
		t.Fatalf("A %v is not from the pool", a1)
	}
	r := e.query(t, "a.example.test.", dns.TypeA, qopts{})
	if got := answerA(t, r); got != a1 {
		t.Fatalf("second answer %v, first %v", got, a1)
	}
	if ttl := r.Answer[0].Header().Ttl; ttl != 60 {
		t.Fatalf("TTL %d, want 60", ttl)
	}
	six := answerA(t, e.query(t, "a.example.test.", dns.TypeAAAA, qopts{}))
	want := netip.MustParseAddr("fd7a:115c:a1e0::" + a1.String())
	if six != want {
		t.Fatalf("AAAA %v, want %v", six, want)
	}
	// AAAA first for a new name allocates too.
	six2 := answerA(t, e.query(t, "b.example.test.", dns.TypeAAAA, qopts{network: "tcp"}))
	b := answerA(t, e.query(t, "b.example.test.", dns.TypeA, qopts{}))
	if b == a1 || six2 != netip.MustParseAddr("fd7a:115c:a1e0::"+b.String()) {
		t.Fatalf("b: A %v AAAA %v (a is %v)", b, six2, a1)
	}
	if m, ok := e.pool.Get("127.0.0.1", "a.example.test"); !ok || m.Addr != a1 {
		t.Fatalf("pool mapping for a: %v %v", m, ok)
	}
	if e.up.Count("a.example.test.", dns.TypeA) != 1 {
		t.Fatalf("upstream asked %d times for a, want 1 (cache)", e.up.Count("a.example.test.", dns.TypeA))
	}
	st := e.srv.Stats()
	if st.Queries != 5 || st.Answered != 5 || st.CacheHits < 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNoV6PrefixAnswersEmptyAAAA(t *testing.T) {
	e := start(t, "100.64.0.0/24", func(c *Config) { c.V6Prefix = netip.Prefix{} })
	r := e.query(t, "a.example.test.", dns.TypeAAAA, qopts{})
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA without V6Prefix: %v", r)
	}
	if _, ok := e.pool.Get("127.0.0.1", "a.example.test"); ok {
		t.Fatal("AAAA without V6Prefix allocated an address")
	}
}

func TestClientsKeptApart(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	a2 := answerA(t, e.query(t, "x.example.test.", dns.TypeA, qopts{src: "127.0.0.2"}))
	b2 := answerA(t, e.query(t, "y.example.test.", dns.TypeA, qopts{src: "127.0.0.2"}))
	b3 := answerA(t, e.query(t, "y.example.test.", dns.TypeA, qopts{src: "127.0.0.3", network: "tcp"}))
	if a2 == b2 {
		t.Fatalf("one client got %v for two names", a2)
	}
	if m, ok := e.pool.Get("127.0.0.2", "y.example.test"); !ok || m.Addr != b2 {
		t.Fatalf("127.0.0.2 y: %v %v", m, ok)
	}
	if m, ok := e.pool.Get("127.0.0.3", "y.example.test"); !ok || m.Addr != b3 {
		t.Fatalf("127.0.0.3 y: %v %v", m, ok)
	}
	if _, ok := e.pool.Get("127.0.0.3", "x.example.test"); ok {
		t.Fatal("127.0.0.3 has a mapping for a name only 127.0.0.2 asked")
	}
	// Each client has the whole pool, so each starts at the first address.
	if b3 != a2 {
		t.Fatalf("127.0.0.3's first address %v, 127.0.0.2's %v", b3, a2)
	}
}

func TestNXDOMAIN(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r := e.query(t, "nx.example.test.", qt, qopts{})
		if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
			t.Fatalf("%s: %v", dns.TypeToString[qt], r)
		}
		if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
			t.Fatalf("NXDOMAIN without SOA: %v", r)
		}
	}
	if _, ok := e.pool.Get("127.0.0.1", "nx.example.test"); ok {
		t.Fatal("NXDOMAIN name got an address")
	}
	if n := e.up.Count("nx.example.test.", dns.TypeA); n != 1 {
		t.Fatalf("negative answer asked upstream %d times, want 1", n)
	}
}

func TestIgnoreDestinations(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	r := e.query(t, "direct.example.test.", dns.TypeA, qopts{})
	if got := answerA(t, r); got != netip.MustParseAddr("10.99.0.5") {
		t.Fatalf("ignored A: %v", got)
	}
	if r.Answer[0].Header().Ttl > 300 || r.Answer[0].Header().Ttl < 290 {
		t.Fatalf("passthrough TTL %d", r.Answer[0].Header().Ttl)
	}
	if got := answerA(t, e.query(t, "direct.example.test.", dns.TypeAAAA, qopts{})); got != netip.MustParseAddr("2001:db8::5") {
		t.Fatalf("ignored AAAA: %v", got)
	}
	r = e.query(t, "Alias.example.test.", dns.TypeA, qopts{})
	if len(r.Answer) != 2 || r.Answer[0].Header().Name != "Alias.example.test." || r.Answer[0].Header().Rrtype != dns.TypeCNAME {
		t.Fatalf("ignored CNAME chain: %v", r)
	}
	if ms := e.pool.Mappings("127.0.0.1"); len(ms) != 0 {
		t.Fatalf("ignored names allocated: %v", ms)
	}
}

func TestRefusedOutsideDomains(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	for _, n := range []string{"www.outside.test.", "notexample.test.", "test.", "."} {
		if r := e.query(t, n, dns.TypeA, qopts{}); r.Rcode != dns.RcodeRefused {
			t.Fatalf("%s: %v", n, r)
		}
	}
	if e.up.Count("www.outside.test.", dns.TypeA) != 0 {
		t.Fatal("asked upstream for a name outside the domains")
	}
}

func TestEveryNameWithDot(t *testing.T) {
	e := start(t, "100.64.0.0/24", func(c *Config) { c.Domains = []string{"."} })
	if a := answerA(t, e.query(t, "www.outside.test.", dns.TypeA, qopts{})); !a.Is4() {
		t.Fatal(a)
	}
	if r := e.query(t, ".", dns.TypeNS, qopts{}); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("root NS: %v", r)
	}
}

func TestTruncationUDPThenTCP(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	r := e.query(t, "big.example.test.", dns.TypeA, qopts{})
	if !r.Truncated || len(r.Answer) >= 40 {
		t.Fatalf("UDP without EDNS: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
	r = e.query(t, "big.example.test.", dns.TypeA, qopts{network: "tcp"})
	if r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("TCP: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
	// 120 records exceed the upstream's UDP reply too: the front end must
	// have fallen back to TCP upstream, and the client must as well.
	r = e.query(t, "huge.example.test.", dns.TypeA, qopts{edns: true})
	if !r.Truncated || r.IsEdns0() == nil || r.IsEdns0().UDPSize() != 1232 {
		t.Fatalf("UDP with EDNS 4096: TC=%v OPT=%v", r.Truncated, r.IsEdns0())
	}
	r.Compress = true
	if r.Len() > 1232 {
		t.Fatalf("UDP reply of %d bytes exceeds 1232", r.Len())
	}
	r = e.query(t, "huge.example.test.", dns.TypeA, qopts{network: "tcp", edns: true})
	if r.Truncated || len(r.Answer) != 120 {
		t.Fatalf("TCP huge: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
}

func TestPoolExhausted(t *testing.T) {
	e := start(t, "100.64.0.0/31", nil)
	answerA(t, e.query(t, "one.example.test.", dns.TypeA, qopts{edns: true}))
	answerA(t, e.query(t, "two.example.test.", dns.TypeA, qopts{edns: true}))
	r := e.query(t, "three.example.test.", dns.TypeA, qopts{edns: true})
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("third name: %v", r)
	}
	x := ede(r)
	if x == nil || x.ExtraText != "pool exhausted for client 127.0.0.1" {
		t.Fatalf("EDE %v", x)
	}
	// Without EDNS the bare rcode, and no OPT (RFC 6891).
	r = e.query(t, "three.example.test.", dns.TypeA, qopts{})
	if r.Rcode != dns.RcodeServerFailure || r.IsEdns0() != nil {
		t.Fatalf("without EDNS: %v", r)
	}
	if st := e.srv.Stats(); st.ServFail != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRateLimitOnlyNewNames(t *testing.T) {
	e := start(t, "100.64.0.0/24", func(c *Config) { c.RateLimit, c.Burst = 0.001, 2 })
	first := answerA(t, e.query(t, "r1.example.test.", dns.TypeA, qopts{edns: true}))
	answerA(t, e.query(t, "r2.example.test.", dns.TypeA, qopts{edns: true}))
	r := e.query(t, "r3.example.test.", dns.TypeA, qopts{edns: true})
	// No Extended DNS Error: a refusal carries nothing the query did not
	// have room for, and this query's OPT has no options.
	if r.Rcode != dns.RcodeRefused || ede(r) != nil || len(r.Extra) != 1 {
		t.Fatalf("third new name: %v", r)
	}
	for range 5 {
		if got := answerA(t, e.query(t, "r1.example.test.", dns.TypeA, qopts{edns: true})); got != first {
			t.Fatalf("mapped name answered %v, want %v", got, first)
		}
	}
	// Another client has its own bucket.
	answerA(t, e.query(t, "r3.example.test.", dns.TypeA, qopts{src: "127.0.0.7"}))
	if st := e.srv.Stats(); st.RateLimited != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCaseEcho(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r := e.query(t, "ExAmPlE.test.", qt, qopts{})
		if r.Question[0].Name != "ExAmPlE.test." || r.Answer[0].Header().Name != "ExAmPlE.test." {
			t.Fatalf("%s: %v", dns.TypeToString[qt], r)
		}
	}
	a := answerA(t, e.query(t, "example.TEST.", dns.TypeA, qopts{}))
	if m, ok := e.pool.Get("127.0.0.1", "example.test"); !ok || m.Addr != a {
		t.Fatalf("case variants are not one domain: %v %v %v", a, m, ok)
	}
	r := e.query(t, "DIRECT.example.test.", dns.TypeA, qopts{})
	if r.Answer[0].Header().Name != "DIRECT.example.test." {
		t.Fatalf("passthrough case: %v", r)
	}
}

func TestApexSOAAndNS(t *testing.T) {
	e := start(t, "100.64.0.0/24", func(c *Config) { c.Domains = []string{"Example.Test.", "other.test"} })
	r := e.query(t, "EXAMPLE.test.", dns.TypeSOA, qopts{})
	soa, ok := r.Answer[0].(*dns.SOA)
	if !ok || !r.Authoritative || soa.Hdr.Name != "EXAMPLE.test." || soa.Ns != "ns.example.test." || soa.Mbox != "hostmaster.example.test." || soa.Serial != 1 {
		t.Fatalf("SOA: %v", r)
	}
	r = e.query(t, "other.test.", dns.TypeNS, qopts{network: "tcp"})
	if ns, ok := r.Answer[0].(*dns.NS); !ok || ns.Ns != "ns.other.test." {
		t.Fatalf("NS: %v", r)
	}
	// Below the apex, and other types: NOERROR, no answer, SOA for caching.
	for _, c := range []struct {
		name  string
		qtype uint16
	}{{"a.example.test.", dns.TypeNS}, {"a.example.test.", dns.TypeMX}, {"example.test.", dns.TypeTXT}} {
		r = e.query(t, c.name, c.qtype, qopts{})
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
			t.Fatalf("%s %s: %v", c.name, dns.TypeToString[c.qtype], r)
		}
	}
}

func TestInvalidNameInsideDomains(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	for _, n := range []string{"-bad.example.test.", "a\\.b.example.test.", "sp\\032ace.example.test."} {
		if r := e.query(t, n, dns.TypeA, qopts{}); r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s: %v", n, r)
		}
	}
	// An escaped dot does not put a name under the domain.
	if r := e.query(t, "x.example\\.test.", dns.TypeA, qopts{}); r.Rcode != dns.RcodeRefused {
		t.Fatalf("escaped: %v", r)
	}
}

func TestClientMap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients")
	text := "# comment\n127.0.0.0/8 loopback\n\n127.0.0.4 special # host\n127.0.0.0/16 mid\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	e := start(t, "100.64.0.0/24", func(c *Config) { c.ClientMap = path })
	a4 := answerA(t, e.query(t, "m.example.test.", dns.TypeA, qopts{src: "127.0.0.4"}))
	a5 := answerA(t, e.query(t, "m.example.test.", dns.TypeA, qopts{src: "127.0.0.5"}))
	a6 := answerA(t, e.query(t, "n.example.test.", dns.TypeA, qopts{src: "127.1.0.6"}))
	for id, want := range map[string]netip.Addr{"special": a4, "mid": a5} {
		if m, ok := e.pool.Get(id, "m.example.test"); !ok || m.Addr != want {
			t.Fatalf("%s: %v %v", id, m, ok)
		}
	}
	if m, ok := e.pool.Get("loopback", "n.example.test"); !ok || m.Addr != a6 {
		t.Fatalf("loopback: %v %v", m, ok)
	}
	if _, ok := e.pool.Get("127.0.0.5", "m.example.test"); ok {
		t.Fatal("mapped source also kept its address identity")
	}
}

func TestClientMapErrors(t *testing.T) {
	for _, text := range []string{"10.0.0.0/8\n", "10.0.0.0/33 x\n", "10.0.0.0/8 bad/id\n", "10.0.0.0/8 a\n10.0.0.1/8 b\n", "x y z\n"} {
		path := filepath.Join(t.TempDir(), "clients")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := New(Config{Domains: []string{"."}, Upstreams: []string{"127.0.0.1:53"}, ClientMap: path}, &fakePool{}); err == nil {
			t.Fatalf("client map %q accepted", text)
		}
	}
}

func TestUpstreamFailure(t *testing.T) {
	e := start(t, "100.64.0.0/24", func(c *Config) { c.UpstreamTimeout = 300 * time.Millisecond })
	r := e.query(t, "fail.example.test.", dns.TypeA, qopts{edns: true})
	if r.Rcode != dns.RcodeServerFailure || ede(r) == nil || ede(r).InfoCode != dns.ExtendedErrorCodeNoReachableAuthority {
		t.Fatalf("upstream SERVFAIL: %v", r)
	}
	e.up.Stop()
	t0 := time.Now()
	r = e.query(t, "down.example.test.", dns.TypeA, qopts{edns: true})
	if r.Rcode != dns.RcodeServerFailure || ede(r) == nil {
		t.Fatalf("upstream down: %v", r)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("upstream failure took %v", d)
	}
	if st := e.srv.Stats(); st.UpstreamErrors != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCacheExpiryAndCoalescing(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	e := start(t, "100.64.0.0/24", func(c *Config) {
		c.Now = func() time.Time { return time.Unix(0, now.Load()) }
		c.CacheMaxTTL = 100 * time.Second
	})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			net := "udp"
			if i%2 == 1 {
				net = "tcp"
			}
			answerA(t, e.query(t, "co.example.test.", dns.TypeA, qopts{network: net}))
		}()
	}
	wg.Wait()
	if n := e.up.Count("co.example.test.", dns.TypeA); n != 1 {
		t.Fatalf("20 concurrent queries asked upstream %d times", n)
	}
	// Upstream TTL is 300s, capped at 100s.
	now.Add(int64(99 * time.Second))
	e.query(t, "co.example.test.", dns.TypeA, qopts{})
	if n := e.up.Count("co.example.test.", dns.TypeA); n != 1 {
		t.Fatalf("before expiry: %d upstream queries", n)
	}
	now.Add(int64(2 * time.Second))
	e.query(t, "co.example.test.", dns.TypeA, qopts{})
	if n := e.up.Count("co.example.test.", dns.TypeA); n != 2 {
		t.Fatalf("after expiry: %d upstream queries", n)
	}
	// Negative answers live for the SOA minimum (30s).
	e.query(t, "nx.example.test.", dns.TypeA, qopts{})
	now.Add(int64(29 * time.Second))
	e.query(t, "nx.example.test.", dns.TypeA, qopts{})
	now.Add(int64(2 * time.Second))
	e.query(t, "nx.example.test.", dns.TypeA, qopts{})
	if n := e.up.Count("nx.example.test.", dns.TypeA); n != 2 {
		t.Fatalf("negative cache: %d upstream queries, want 2", n)
	}
}

// fakePool fails every allocation with err, or waits for the context when
// block is set, as a cluster without quorum may.
type fakePool struct {
	err   error
	block bool
}

func (p *fakePool) IPForDomain(ctx context.Context, client, domain string) (netip.Addr, error) {
	if p.block {
		<-ctx.Done()
		return netip.Addr{}, ctx.Err()
	}
	return netip.Addr{}, p.err
}

func (p *fakePool) Get(string, string) (pool.Mapping, bool) { return pool.Mapping{}, false }
func (p *fakePool) HasClient(string) bool                   { return false }

func TestNoQuorumAnswersQuickly(t *testing.T) {
	up := startUpstream(t)
	for _, p := range []*fakePool{
		{err: pool.Errorf(pool.CodeNoQuorum, "no quorum")},
		{err: pool.Errorf(pool.CodeNoLeader, "no leader")},
		{block: true},
	} {
		s, err := New(Config{Domains: []string{"example.test"}, Upstreams: []string{up.Addr}, AllowPrivate: docRanges, WriteTimeout: 200 * time.Millisecond}, p)
		if err != nil {
			t.Fatal(err)
		}
		w := &fakeWriter{}
		t0 := time.Now()
		s.ServeDNS(w, queryMsg("q.example.test.", dns.TypeA, true))
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("%+v: took %v", p, d)
		}
		if len(w.msgs) != 1 || w.msgs[0].Rcode != dns.RcodeServerFailure || ede(w.msgs[0]).InfoCode != dns.ExtendedErrorCodeNotReady {
			t.Fatalf("%+v: %v", p, w.msgs)
		}
	}
}

func TestMalformedQueries(t *testing.T) {
	up := startUpstream(t)
	s, err := New(Config{Domains: []string{"example.test"}, Upstreams: []string{up.Addr}}, &fakePool{err: errors.New("unused")})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		edit  func(m *dns.Msg)
		rcode int
	}{
		{"no question", func(m *dns.Msg) { m.Question = nil }, dns.RcodeFormatError},
		{"two questions", func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }, dns.RcodeFormatError},
		{"opcode", func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }, dns.RcodeNotImplemented},
		{"class", func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }, dns.RcodeRefused},
		{"edns version", func(m *dns.Msg) { m.IsEdns0().SetVersion(1) }, dns.RcodeBadVers},
	}
	for _, c := range cases {
		m := queryMsg("a.example.test.", dns.TypeA, true)
		c.edit(m)
		w := &fakeWriter{}
		s.ServeDNS(w, m)
		if len(w.msgs) != 1 || w.msgs[0].Rcode != c.rcode {
			t.Fatalf("%s: %v", c.name, w.msgs)
		}
	}
	// A response is never answered.
	m := queryMsg("a.example.test.", dns.TypeA, false)
	m.Response = true
	w := &fakeWriter{}
	s.ServeDNS(w, m)
	if len(w.msgs) != 0 {
		t.Fatalf("answered a response: %v", w.msgs)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ok := Config{Domains: []string{"example.test"}, Upstreams: []string{"127.0.0.1:53"}}
	for name, edit := range map[string]func(*Config){
		"no domains":    func(c *Config) { c.Domains = nil },
		"bad domain":    func(c *Config) { c.Domains = []string{"bad domain"} },
		"v6 not /96":    func(c *Config) { c.V6Prefix = netip.MustParsePrefix("fd00::/64") },
		"v6 is v4":      func(c *Config) { c.V6Prefix = netip.MustParsePrefix("10.0.0.0/8") },
		"bad upstream":  func(c *Config) { c.Upstreams = []string{"nohost"} },
		"cache bounds":  func(c *Config) { c.CacheMinTTL, c.CacheMaxTTL = time.Hour, time.Second },
		"negative rate": func(c *Config) { c.RateLimit = -1 },
	} {
		c := ok
		edit(&c)
		if _, err := New(c, &fakePool{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(ok, &fakePool{}); err != nil {
		t.Fatal(err)
	}
}

func queryMsg(name string, qtype uint16, edns bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	return m
}

// fakeWriter records replies, for calling ServeDNS without a socket.
type fakeWriter struct {
	msgs []*dns.Msg
	tcp  bool
}

func (w *fakeWriter) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (w *fakeWriter) RemoteAddr() net.Addr {
	if w.tcp {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 53}
	}
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 53}
}
func (w *fakeWriter) WriteMsg(m *dns.Msg) error {
	// Pack as the real writer would, so a reply that cannot be sent fails
	// the test instead of passing silently.
	if _, err := m.Pack(); err != nil {
		return err
	}
	w.msgs = append(w.msgs, m)
	return nil
}
func (w *fakeWriter) Write([]byte) (int, error) { return 0, errors.New("fakeWriter: raw write") }
func (w *fakeWriter) Close() error              { return nil }
func (w *fakeWriter) TsigStatus() error         { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)       {}
func (w *fakeWriter) Hijack()                   {}

// TestPrivateOnlyNameIsNoData: a public name whose every address is private
// gets no pool address and answers NODATA, unless it is under a private
// domain.
func TestPrivateOnlyNameIsNoData(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r := e.query(t, "private.example.test.", qtype, qopts{})
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Fatalf("%s: want NODATA, got %v", dns.TypeToString[qtype], r)
		}
	}
	if ms := e.pool.Mappings("127.0.0.1"); len(ms) != 0 {
		t.Fatalf("a name with private addresses only was allocated: %v", ms)
	}
	if n := e.srv.res.Stats().PrivateDropped; n != 1 {
		t.Fatalf("%d private addresses dropped, want 1", n)
	}

	e = start(t, "100.64.0.0/24", func(c *Config) { c.PrivateDomains = []string{"example.test"} })
	answerA(t, e.query(t, "private.example.test.", dns.TypeA, qopts{}))
}
