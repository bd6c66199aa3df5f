package dnsfront

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/poll"
)

// The tests in this file turn each way the DNS front end could be turned
// against its clients (issue 17) into the bound that now holds.

// frozen is a clock that stands still, so that token buckets never refill
// and a bound can be asserted exactly.
func frozen() func() time.Time {
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time { return t }
}

// exchangeRaw sends the packet q over UDP from src and returns the raw
// reply, so that sizes are the ones on the wire.
func exchangeRaw(t *testing.T, addr, src string, q []byte) []byte {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("reply from %s to %s: %v", addr, src, err)
	}
	return buf[:n]
}

// loopbackSource is the i-th of many distinct 127.x.y.z source addresses;
// Linux delivers all of 127.0.0.0/8 to lo, so each binds without setup.
func loopbackSource(i int) string {
	return fmt.Sprintf("127.%d.%d.%d", 1+i/(250*250), 1+(i/250)%250, 1+i%250)
}

func TestAllowList(t *testing.T) {
	e := start(t, "100.64.0.0/24", func(c *Config) { c.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")} })
	for _, network := range []string{"udp", "tcp"} {
		r := e.query(t, "a.example.test.", dns.TypeA, qopts{src: "127.0.0.6", network: network, edns: true})
		if r.Rcode != dns.RcodeRefused || len(r.Answer)+len(r.Ns) != 0 {
			t.Fatalf("%s from 127.0.0.6: %v", network, r)
		}
	}
	if n := e.up.Total(); n != 0 {
		t.Fatalf("refused sources made %d upstream queries", n)
	}
	if ms := e.pool.Mappings("127.0.0.6"); len(ms) != 0 {
		t.Fatalf("a refused source got mappings: %v", ms)
	}
	answerA(t, e.query(t, "a.example.test.", dns.TypeA, qopts{src: "127.0.0.5"}))
	if st := e.srv.Stats(); st.NotAllowed != 2 || st.Refused != 2 || st.Answered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDefaultAllow(t *testing.T) {
	s, err := New(Config{Domains: []string{"."}, Upstreams: []string{"127.0.0.1:53"}}, &fakePool{})
	if err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]bool{
		"127.0.0.1": true, "127.200.1.1": true, "::1": true, "10.1.2.3": true, "172.16.0.1": true,
		"172.31.255.255": true, "192.168.1.1": true, "100.64.0.1": true, "100.127.255.255": true,
		"fd7a:115c:a1e0::1": true, "::ffff:192.168.1.1": true,
		"8.8.8.8": false, "172.32.0.1": false, "100.128.0.1": false, "192.0.2.1": false,
		"169.254.1.1": false, "fe80::1": false, "2001:db8::1": false, "::ffff:8.8.8.8": false,
	} {
		a := netip.MustParseAddr(src)
		if got := s.allowed(net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 53))); got != want {
			t.Errorf("%s allowed = %v, want %v", src, got, want)
		}
	}
	if _, err := New(Config{Domains: []string{"."}, Upstreams: []string{"127.0.0.1:53"}, Allow: []netip.Prefix{{}}}, &fakePool{}); err == nil {
		t.Fatal("an invalid allowed prefix was accepted")
	}
}

// One source's unique names send no more upstream than its bucket holds,
// and a name is refused before its lookup is sent, never after.
func TestRateLimitBoundsUpstreamLookups(t *testing.T) {
	const burst = 50
	e := start(t, "100.64.0.0/16", func(c *Config) { c.RateLimit, c.Burst, c.Now = 1, burst, frozen() })
	refused := 0
	for i := range 400 {
		r := e.query(t, fmt.Sprintf("n%d.example.test.", i), dns.TypeA, qopts{})
		switch r.Rcode {
		case dns.RcodeRefused:
			refused++
		case dns.RcodeSuccess:
		default:
			t.Fatalf("name %d: %v", i, r)
		}
	}
	if n := e.up.Total(); n != burst {
		t.Fatalf("400 new names made %d upstream queries; the bucket holds %d", n, burst)
	}
	if refused != 400-burst {
		t.Fatalf("%d refused, want %d", refused, 400-burst)
	}
	// A mapped name whose answer is cached costs nothing, bucket empty or not.
	answerA(t, e.query(t, "n0.example.test.", dns.TypeA, qopts{}))
	if st := e.srv.Stats(); st.RateLimited != 400-burst || st.CacheMisses != burst {
		t.Fatalf("stats %+v", st)
	}
}

// A passed-through AAAA needs two lookups, and pays for both.
func TestRateLimitPaysEachLookup(t *testing.T) {
	e := start(t, "100.64.0.0/24", func(c *Config) { c.RateLimit, c.Burst, c.Now = 1, 1, frozen() })
	if r := e.query(t, "direct.example.test.", dns.TypeAAAA, qopts{}); r.Rcode != dns.RcodeRefused {
		t.Fatalf("AAAA with one token: %v", r)
	}
	if n := e.up.Total(); n != 1 {
		t.Fatalf("%d upstream queries for one token", n)
	}
}

// A flood of new sources creates no more clients (each a Raft write) than
// the new-client bucket holds.
func TestNewClientFloodBounded(t *testing.T) {
	const burst, sources = 100, 3000
	e := start(t, "100.64.0.0/24", func(c *Config) { c.NewClientRate, c.NewClientBurst, c.Now = 1, burst, frozen() })
	// A client known before the flood, made without a DNS query so that
	// it takes nothing from the new-client bucket.
	if _, err := e.pool.IPForDomain(context.Background(), "127.0.0.1", "known.example.test"); err != nil {
		t.Fatal(err)
	}

	var answered, refused atomic.Int64
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				q := new(dns.Msg)
				q.SetQuestion(fmt.Sprintf("f%d.example.test.", i), dns.TypeA)
				b, _ := q.Pack()
				r := new(dns.Msg)
				if err := r.Unpack(exchangeRaw(t, e.addr, loopbackSource(i), b)); err != nil {
					t.Error(err)
					return
				}
				switch r.Rcode {
				case dns.RcodeSuccess:
					answered.Add(1)
				case dns.RcodeRefused:
					refused.Add(1)
				}
			}
		})
	}
	for i := range sources {
		work <- i
	}
	close(work)
	wg.Wait()

	clients := 0
	for i := range sources {
		if e.pool.HasClient(loopbackSource(i)) {
			clients++
		}
	}
	if clients != burst || answered.Load() != burst || refused.Load() != sources-burst {
		t.Fatalf("%d sources made %d clients (%d answered, %d refused); the new-client bucket holds %d",
			sources, clients, answered.Load(), refused.Load(), burst)
	}
	// One upstream query per admitted source.
	if n := e.up.Total(); n != burst {
		t.Fatalf("%d upstream queries", n)
	}
	// The known client is not held back by the empty new-client bucket.
	answerA(t, e.query(t, "after.example.test.", dns.TypeA, qopts{}))
	if st := e.srv.Stats(); st.NewClientLimited != sources-burst {
		t.Fatalf("stats %+v", st)
	}
}

// No refusal is larger than its query, so refusals amplify nothing.
func TestRefusalNoLargerThanQuery(t *testing.T) {
	clock := frozen()
	closed := start(t, "100.64.0.0/24", func(c *Config) { c.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")} })
	limited := start(t, "100.64.0.0/24", func(c *Config) {
		c.RateLimit, c.Burst, c.NewClientRate, c.NewClientBurst, c.Now = 1, 1, 1, 1, clock
	})
	// 127.0.0.1 becomes a known client with an empty bucket, and empties
	// the new-client bucket too.
	answerA(t, limited.query(t, "first.example.test.", dns.TypeA, qopts{}))

	long := ""
	for range 3 {
		long += "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij."
	}
	variants := []struct {
		name string
		edit func(m *dns.Msg)
	}{
		{"plain", func(m *dns.Msg) {}},
		{"edns", func(m *dns.Msg) { m.SetEdns0(4096, false) }},
		{"edns do", func(m *dns.Msg) { m.SetEdns0(1232, true) }},
		{"edns cookie", func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			o := m.IsEdns0()
			o.Option = append(o.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		}},
	}
	paths := []struct {
		name, addr, src, qname string
		class                  uint16
		counter                func(Stats) uint64
	}{
		{"not allowed", closed.addr, "127.0.0.6", "x%d.example.test.", dns.ClassINET, func(s Stats) uint64 { return s.NotAllowed }},
		{"not allowed, long name", closed.addr, "127.0.0.6", "y%d." + long + "example.test.", dns.ClassINET, func(s Stats) uint64 { return s.NotAllowed }},
		{"rate limited", limited.addr, "127.0.0.1", "x%d.example.test.", dns.ClassINET, func(s Stats) uint64 { return s.RateLimited }},
		{"new-client limited", limited.addr, "127.0.0.2", "x%d.example.test.", dns.ClassINET, func(s Stats) uint64 { return s.NewClientLimited }},
		{"outside the domains", limited.addr, "127.0.0.1", "x%d.outside.test.", dns.ClassINET, nil},
		{"class CHAOS", limited.addr, "127.0.0.1", "x%d.example.test.", dns.ClassCHAOS, nil},
	}
	worst := 0.0
	for _, p := range paths {
		for i, v := range variants {
			srv := closed.srv
			if p.addr == limited.addr {
				srv = limited.srv
			}
			var before uint64
			if p.counter != nil {
				before = p.counter(srv.Stats())
			}
			q := new(dns.Msg)
			q.SetQuestion(fmt.Sprintf(p.qname, i), dns.TypeA)
			q.Question[0].Qclass = p.class
			v.edit(q)
			b, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			raw := exchangeRaw(t, p.addr, p.src, b)
			r := new(dns.Msg)
			if err := r.Unpack(raw); err != nil {
				t.Fatal(err)
			}
			if r.Rcode != dns.RcodeRefused {
				t.Fatalf("%s, %s: %v", p.name, v.name, r)
			}
			if p.counter != nil && p.counter(srv.Stats()) != before+1 {
				t.Fatalf("%s, %s: refused, but not by that path: %+v", p.name, v.name, srv.Stats())
			}
			if (q.IsEdns0() != nil) != (r.IsEdns0() != nil) {
				t.Fatalf("%s, %s: OPT in query %v, in reply %v", p.name, v.name, q.IsEdns0() != nil, r.IsEdns0() != nil)
			}
			ratio := float64(len(raw)) / float64(len(b))
			worst = max(worst, ratio)
			if len(raw) > len(b) {
				t.Errorf("%s, %s: reply of %d bytes to a query of %d", p.name, v.name, len(raw), len(b))
			}
			// The cookie leaves room for the Extended DNS Error code.
			if p.name == "not allowed" && v.name == "edns cookie" {
				if x := ede(r); x == nil || x.InfoCode != dns.ExtendedErrorCodeProhibited || x.ExtraText != "" {
					t.Errorf("not allowed, with a cookie: EDE %v", x)
				}
			}
		}
	}
	t.Logf("largest reply/query size ratio over the refusal paths: %.3f", worst)
}

// A question name written with a compression pointer into the header: the
// query's ID bytes read as the label "x". Spelled out in a reply it would
// make the reply a byte longer than the query. And a question cut short
// after its name, which the DNS library reads as type and class 0.
func TestBadQuestionDropped(t *testing.T) {
	e := start(t, "100.64.0.0/24", nil)
	bad := []byte{
		0x01, 'x', // ID, read as the label "x" by the pointer below
		0x00, 0x00, // a query, no flags: the name ends here
		0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // one question
		0xC0, 0x00, // the name: a pointer to offset 0
		0x00, 0x01, 0x00, 0x01, // A, IN
	}
	var probe dns.Msg
	if err := probe.Unpack(bad); err != nil || probe.Question[0].Name != "x." {
		t.Fatalf("the crafted query does not parse as x.: %v %v", err, probe.Question)
	}
	c, err := net.Dial("udp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	truncated := []byte{0x03, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}
	good := new(dns.Msg)
	good.SetQuestion("a.example.test.", dns.TypeA)
	good.Id = 0x0202
	gb, _ := good.Pack()
	// The good query follows the bad ones on the same socket: the first
	// reply to arrive must be the good one's.
	for _, p := range [][]byte{bad, truncated, gb} {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil || r.Id != good.Id {
		t.Fatalf("first reply: %v (err %v), want the reply to ID %#x", r, err, good.Id)
	}
	// The library's goroutine counts the drops while a new-name worker
	// answers the good query: they need not be counted by the time its
	// reply is here.
	if !poll.Wait(5*time.Second, func() bool { return e.srv.Stats().Dropped >= 2 }) || e.srv.Stats().Dropped != 2 {
		t.Fatalf("stats %+v", e.srv.Stats())
	}

	// Over TCP the connection is closed instead.
	tc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	framed := binary.BigEndian.AppendUint16(nil, uint16(len(bad)))
	if _, err := tc.Write(append(framed, bad...)); err != nil {
		t.Fatal(err)
	}
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := tc.Read(buf); err == nil {
		t.Fatalf("TCP: read %d bytes (%v), want the connection closed", n, err)
	}
}

// Idle DNS-over-TCP connections are capped in all and per source.
func TestTCPConnectionCaps(t *testing.T) {
	e := start(t, "100.64.0.0/24", func(c *Config) {
		c.TCPMaxConns, c.TCPMaxConnsPerSource, c.TCPTimeout = 6, 2, 300*time.Millisecond
	})
	dial := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedSoon reports whether the server closes c within d.
	closedSoon := func(c net.Conn, d time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	waitOpen := func(want uint64) {
		t.Helper()
		if !poll.Wait(5*time.Second, func() bool { return e.srv.Stats().TCPConns == want }) {
			t.Fatalf("%d TCP connections open, want %d", e.srv.Stats().TCPConns, want)
		}
	}

	// Per source: the third connection from one address is closed at once.
	a1, a2, a3 := dial("127.0.0.21"), dial("127.0.0.21"), dial("127.0.0.21")
	if !closedSoon(a3, 2*time.Second) {
		t.Fatal("third connection from one source was kept")
	}
	waitOpen(2)
	// In all: six from three sources fill the server; a seventh source is
	// refused too.
	for _, src := range []string{"127.0.0.22", "127.0.0.22", "127.0.0.23", "127.0.0.23"} {
		dial(src)
	}
	waitOpen(6)
	if !closedSoon(dial("127.0.0.24"), 2*time.Second) {
		t.Fatal("a connection past the total cap was kept")
	}
	if st := e.srv.Stats(); st.TCPRefusedPerSource != 1 || st.TCPRefusedTotal != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A connection that sends nothing is closed after the timeout, and
	// its slot is free again.
	if !closedSoon(a1, 5*time.Second) || !closedSoon(a2, 5*time.Second) {
		t.Fatal("idle connections outlived the TCP timeout")
	}
	waitOpen(0)
	r := e.query(t, "a.example.test.", dns.TypeA, qopts{network: "tcp", src: "127.0.0.21"})
	answerA(t, r)
}
