package connector

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go4.org/netipx"

	"github.com/ippool/ippool/internal/clientid"
	"github.com/ippool/ippool/pool"
)

type fakePool struct {
	cfg      pool.Config
	mappings map[string]string // "client addr" -> domain
	err      error
	lookups  int
}

func (p *fakePool) Lookup(_ context.Context, client string, addr netip.Addr, _ time.Time) (pool.Mapping, error) {
	p.lookups++
	if p.err != nil {
		return pool.Mapping{}, p.err
	}
	d, ok := p.mappings[client+" "+addr.String()]
	if !ok {
		return pool.Mapping{}, pool.Errorf(pool.CodeNotFound, "no mapping")
	}
	return pool.Mapping{Domain: d, Addr: addr}, nil
}

func (p *fakePool) PoolConfig() (pool.Config, bool) { return p.cfg, len(p.cfg.Pool) > 0 }

// fakeResolver holds each name's addresses, both families in one list.
type fakeResolver map[string][]netip.Addr

func (r fakeResolver) LookupA(name string) ([]netip.Addr, bool, error) {
	return r.lookup(name, netip.Addr.Is4)
}

func (r fakeResolver) LookupAAAA(name string) ([]netip.Addr, bool, error) {
	return r.lookup(name, netip.Addr.Is6)
}

func (r fakeResolver) lookup(name string, family func(netip.Addr) bool) ([]netip.Addr, bool, error) {
	if name == "fail.test" {
		return nil, false, errors.New("upstream down")
	}
	var out []netip.Addr
	for _, a := range r[name] {
		if family(a) {
			out = append(out, a)
		}
	}
	return out, false, nil
}

func newTest(t *testing.T, cfg Config) (*Connector, *fakePool) {
	t.Helper()
	pc, err := pool.ParseConfig("198.18.0.0/15", "198.18.0.99", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fp := &fakePool{cfg: pc, mappings: map[string]string{
		"10.0.0.1 198.18.0.1":  "a.test",
		"10.0.0.2 198.18.0.1":  "b.test",
		"10.0.0.1 198.18.0.2":  "loop.test",
		"10.0.0.1 198.18.0.3":  "fail.test",
		"10.0.0.1 198.18.0.4":  "nx.test",
		"10.0.0.1 198.18.0.5":  "mixed.test",
		"10.0.0.1 198.18.0.6":  "ignored.test",
		"10.0.0.1 198.18.0.7":  "local.test",
		"office 198.18.0.1":    "office.test",
		"10.0.0.1 198.18.0.10": "v6.test",
		"10.0.0.1 198.18.0.11": "priv.test",
		"10.0.0.1 198.18.0.12": "cgnat.test",
		"10.0.0.1 198.18.0.13": "mixedpriv.test",
	}}
	res := fakeResolver{
		"a.test":       {netip.MustParseAddr("203.0.113.1")},
		"b.test":       {netip.MustParseAddr("203.0.113.2")},
		"loop.test":    {netip.MustParseAddr("198.18.0.7")},
		"mixed.test":   {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("203.0.113.5")},
		"ignored.test": {netip.MustParseAddr("203.0.113.6"), netip.MustParseAddr("100.100.0.1")},
		"local.test":   {netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("224.0.0.1")},
		"office.test":  {netip.MustParseAddr("203.0.113.9")},
		"v6.test":      {netip.MustParseAddr("203.0.113.10")},
		"priv.test":    {netip.MustParseAddr("10.99.0.2")},
		"cgnat.test":   {netip.MustParseAddr("100.64.0.5")},
		// mixed.test of the audit: a loopback address the guard always
		// refused, and a private one it used to fall through to.
		"mixedpriv.test": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.99.0.2")},
	}
	cfg.IgnoreDestinations = []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}
	cfg.V6Prefix = netip.MustParsePrefix("fd7a:115c:a1e0:b1a::/96")
	c, err := New(cfg, fp, res)
	if err != nil {
		t.Fatal(err)
	}
	return c, fp
}

// TestRoute follows a flow's decision from the pool's answer to the
// addresses dialed: every client reaches its own domain at a shared pool
// address, and nothing that would loop back or leave for the gateway's own
// network is dialed.
func TestRoute(t *testing.T) {
	cm, err := clientid.Parse("t", strings.NewReader("10.1.0.0/16 office\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newTest(t, Config{Clients: cm})
	cases := []routeCase{
		{"10.0.0.1:1000", "198.18.0.1:443", Relayed, "[203.0.113.1]"},
		{"10.0.0.2:1000", "198.18.0.1:443", Relayed, "[203.0.113.2]"},
		{"10.1.2.3:1000", "198.18.0.1:443", Relayed, "[203.0.113.9]"},
		{"10.0.0.3:1000", "198.18.0.1:443", NoMapping, ""},
		{"10.0.0.1:1000", "198.18.0.2:443", Refused, ""},
		{"10.0.0.1:1000", "198.18.0.3:443", ResolveFailed, ""},
		{"10.0.0.1:1000", "198.18.0.4:443", ResolveFailed, ""},
		{"10.0.0.1:1000", "198.18.0.5:443", Relayed, "[203.0.113.5]"},
		{"10.0.0.1:1000", "198.18.0.6:443", Refused, ""},
		{"10.0.0.1:1000", "198.18.0.7:443", Refused, ""},
		{"[fd00::1]:1000", "[fd7a:115c:a1e0:b1a::c612:1]:443", NoMapping, ""},
		{"10.0.0.1:1000", "[fd7a:115c:a1e0:b1a::c612:a]:443", Relayed, "[203.0.113.10]"},
		{"10.0.0.1:1000", "[fd00::c612:a]:443", NoMapping, ""},
		{"10.0.0.1:1000", "198.18.0.11:443", Refused, ""},
		{"10.0.0.1:1000", "198.18.0.12:443", Refused, ""},
		{"10.0.0.1:1000", "198.18.0.13:443", Refused, ""},
	}
	routeCases(t, c, cases)
}

// TestRouteAllow: --connector-allow opens private prefixes, and only those:
// a name with a loopback and an allowed private address dials the private
// one alone; the pool stays refused even inside an allowed prefix.
func TestRouteAllow(t *testing.T) {
	c, _ := newTest(t, Config{Allow: []netip.Prefix{
		netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("198.18.0.0/15"),
	}})
	routeCases(t, c, []routeCase{
		{"10.0.0.1:1000", "198.18.0.11:443", Relayed, "[10.99.0.2]"},
		{"10.0.0.1:1000", "198.18.0.12:443", Relayed, "[100.64.0.5]"},
		{"10.0.0.1:1000", "198.18.0.13:443", Relayed, "[10.99.0.2]"},
		{"10.0.0.1:1000", "198.18.0.2:443", Refused, ""}, // loop.test, a pool address
		{"10.0.0.1:1000", "198.18.0.7:443", Refused, ""}, // local.test: unspecified and multicast
	})
}

type routeCase struct {
	src, dst string
	want     Result
	addrs    string
}

func routeCases(t *testing.T, c *Connector, cases []routeCase) {
	t.Helper()
	for _, tc := range cases {
		f := flowInfo{proto: "tcp", src: netip.MustParseAddrPort(tc.src), dst: netip.MustParseAddrPort(tc.dst)}
		if !c.admit(&f) {
			t.Fatalf("%s: not admitted: %v", tc.src, f.err)
		}
		addrs := c.route(&f)
		c.limits.release(f.client, nil)
		if f.result == "" {
			f.result = Relayed
		}
		got := ""
		if addrs != nil {
			got = fmtAddrs(addrs)
		}
		if f.result != tc.want || got != tc.addrs {
			t.Errorf("%s -> %s: %s %s (%v), want %s %s", tc.src, tc.dst, f.result, got, f.err, tc.want, tc.addrs)
		}
	}
	if total, _ := c.limits.open(); total != 0 {
		t.Fatalf("%d flows still counted", total)
	}
}

func fmtAddrs(a []netip.Addr) string {
	var s []string
	for _, x := range a {
		s = append(s, x.String())
	}
	return "[" + strings.Join(s, ",") + "]"
}

func TestRouteLookupFailure(t *testing.T) {
	c, fp := newTest(t, Config{})
	fp.err = pool.Errorf(pool.CodeNoQuorum, "no quorum")
	f := flowInfo{proto: "tcp", src: netip.MustParseAddrPort("10.0.0.1:1"), dst: netip.MustParseAddrPort("198.18.0.1:80"), client: "10.0.0.1"}
	if c.route(&f) != nil || f.result != LookupFailed {
		t.Fatalf("%s %v", f.result, f.err)
	}
	fp.err = pool.Errorf(pool.CodeInvalidAddress, "outside")
	if c.route(&f) != nil || f.result != NoMapping {
		t.Fatalf("%s %v", f.result, f.err)
	}
}

// TestLimits: past each limit a flow is refused with the reason, another
// client is still admitted, and released places come back.
func TestLimits(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimits(5, 2, 10, 3)
	if why := l.admit("a", now); why != "" {
		t.Fatal(why)
	}
	if why := l.admit("a", now); why != "" {
		t.Fatal(why)
	}
	if why := l.admit("a", now); !strings.Contains(why, "per client") {
		t.Fatalf("third concurrent flow: %q", why)
	}
	l.release("a", nil)
	// A flow refused for concurrency took no token: the third of the
	// bucket's three is still there.
	if why := l.admit("a", now); why != "" {
		t.Fatalf("after a release: %q", why)
	}
	l.release("a", nil)
	l.release("a", nil)
	if why := l.admit("a", now); !strings.Contains(why, "per second") {
		t.Fatalf("fourth new flow in the same instant: %q", why)
	}
	if why := l.admit("a", now.Add(time.Second)); why != "" {
		t.Fatalf("a second later: %q", why)
	}
	for _, id := range []string{"b", "c", "d", "e"} {
		if why := l.admit(id, now); why != "" {
			t.Fatalf("%s: %q", id, why)
		}
	}
	if why := l.admit("f", now); !strings.Contains(why, "all clients") {
		t.Fatalf("sixth flow in all: %q", why)
	}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		l.release(id, nil)
	}
	if total, _ := l.open(); total != 0 {
		t.Fatalf("%d open", total)
	}
	// Without a rate limit, a client with no flow is forgotten at once.
	nl := newLimits(5, 2, 0, 0)
	nl.admit("x", now)
	nl.release("x", nil)
	if _, tracked := nl.open(); tracked != 0 {
		t.Fatalf("%d clients tracked with no flow", tracked)
	}
}

// TestLimitsFairShare: the audit's case, --connector-client-flows 4
// --connector-max-flows 6: two attackers holding all the flows they can
// leave a third client its flow, whether they take them one after the
// other or turn about; below half the table a client may use its whole
// limit.
func TestLimitsFairShare(t *testing.T) {
	now := time.Unix(1000, 0)
	fill := func(l *limits, ids ...string) map[string]int {
		got := make(map[string]int)
		for progress := true; progress; {
			progress = false
			for _, id := range ids {
				why := l.admit(id, now)
				if why == "" {
					got[id]++
					progress = true
				} else if !strings.Contains(why, "share") && !strings.Contains(why, "per client") {
					t.Fatalf("%s refused: %q", id, why)
				}
			}
		}
		return got
	}
	for _, order := range [][]string{{"a"}, {"a", "b"}} {
		l := newLimits(6, 4, 0, 0)
		held := fill(l, order...)
		if len(order) == 1 {
			held["b"] = fill(l, "b")["b"]
		}
		if why := l.admit("c", now); why != "" {
			t.Fatalf("attackers holding %v: the third client is refused: %q", held, why)
		}
		active, busiest, sum, _ := l.clientStats()
		if active != 3 || sum != held["a"]+held["b"]+1 || busiest != max(held["a"], held["b"]) {
			t.Fatalf("client stats %d %d %d with %v held", active, busiest, sum, held)
		}
	}
	l := newLimits(100, 40, 0, 0)
	if got := fill(l, "a")["a"]; got != 40 {
		t.Fatalf("alone in a table of 100, a client got %d flows of its 40", got)
	}
	// Past half the table the share shrinks with each client holding
	// flows, down to the floor (40/16 = 2).
	for i := range 50 {
		l.admit(fmt.Sprint("c", i), now)
	}
	if got := fill(l, "late")["late"]; got != 2 {
		t.Fatalf("a client arriving among 51 got %d flows, want the floor of 2", got)
	}
}

// TestLimitsBounded: a flood of sources keeps the table bounded; clients
// whose bucket refilled are dropped to make room.
func TestLimitsBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimits(1<<20, 10, 100, 1)
	for i := range maxTracked {
		if why := l.admit(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), now); why != "" {
			t.Fatal(why)
		}
		l.release(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), nil)
	}
	if why := l.admit("new", now); why != "too many clients tracked" {
		t.Fatalf("a new client with every bucket empty: %q", why)
	}
	if why := l.admit("new", now.Add(time.Second)); why != "" {
		t.Fatalf("once buckets refilled: %q", why)
	}
	if _, tracked := l.open(); tracked != 1 {
		t.Fatalf("%d tracked after the sweep", tracked)
	}
}

func TestPoolElements(t *testing.T) {
	set, err := pool.Config{Pool: []netipx.IPRange{netipx.MustParseIPRange("198.18.0.0-198.19.255.255")}, Exclude: []netipx.IPRange{netipx.MustParseIPRange("198.18.0.5-198.18.0.5")}}.Addresses()
	if err != nil {
		t.Fatal(err)
	}
	rs := set.Ranges()
	var got []string
	for _, r := range rs {
		got = append(got, rangeText(r))
	}
	if strings.Join(got, " ") != "198.18.0.0-198.18.0.4 198.18.0.6-198.19.255.255" {
		t.Fatalf("ranges %v", got)
	}
	r := Rules{Port: 7490, Mark: 0x1b1, Table: 7490, Pool: rs, V6Prefix: netip.MustParsePrefix("fd7a:115c:a1e0:b1a::/96")}
	s := r.Script()
	for _, want := range []string{
		"elements = { 198.18.0.0-198.18.0.4, 198.18.0.6-198.19.255.255 }",
		"meta l4proto tcp ip daddr @pool4 meta mark set 0x1b1 tproxy ip to 127.0.0.1:7490 accept",
		"meta l4proto udp ip6 daddr fd7a:115c:a1e0:b1a::/96 meta mark set 0x1b1 tproxy ip6 to [::1]:7490 accept",
		"ip rule add fwmark 0x1b1 lookup 7490 priority 7490",
		"ip -6 route replace local ::/0 dev lo table 7490",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
}

func TestConfigChecks(t *testing.T) {
	fp, res := &fakePool{}, fakeResolver{}
	for _, cfg := range []Config{
		{Port: 70000},
		{Table: 254},
		{V6Prefix: netip.MustParsePrefix("fd00::/64")},
	} {
		if _, err := New(cfg, fp, res); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	c, err := New(Config{MaxFlows: 10, MaxClientFlows: 100, ClientRate: DefaultClientRate}, fp, res)
	if err != nil || c.cfg.MaxClientFlows != 10 || c.cfg.ClientBurst != 400 {
		t.Fatalf("defaults: %+v %v", c.cfg, err)
	}
}

// TestClientFlowMetrics: the spread of flows over clients is exported as a
// count, a maximum and a histogram, never a series per client.
func TestClientFlowMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, _ := newTest(t, Config{Metrics: NewMetrics(reg)})
	now := time.Unix(1000, 0)
	for _, id := range []string{"a", "a", "a", "b"} {
		if why := c.limits.admit(id, now); why != "" {
			t.Fatal(why)
		}
	}
	want := `
# HELP ippool_connector_busiest_client_flows Flows held by the client holding the most, against --connector-client-flows and the fair share past half of --connector-max-flows.
# TYPE ippool_connector_busiest_client_flows gauge
ippool_connector_busiest_client_flows 3
# HELP ippool_connector_clients Clients holding one flow or more.
# TYPE ippool_connector_clients gauge
ippool_connector_clients 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ippool_connector_busiest_client_flows", "ippool_connector_clients"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "ippool_connector_client_flows"); err != nil || n != 1 {
		t.Fatalf("%d client_flows series, %v; want one histogram", n, err)
	}
}

// TestLimitsReclaim: with every place taken, a client under its share
// gets the place of the quietest held flow of the client furthest over its
// share, which is ended; that flow's release then gives back nothing. With
// no client over its share, or none of its flows relaying yet, the table
// stays full.
func TestLimitsReclaim(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimits(4, 4, 0, 0)
	type flow struct {
		h     *heldFlow
		ended bool
	}
	var flows []*flow
	admitHeld := func(id string, quiet time.Duration) *flow {
		t.Helper()
		if why := l.admit(id, now); why != "" {
			t.Fatalf("%s: %q", id, why)
		}
		f := &flow{}
		f.h = l.hold(id, func() time.Duration { return quiet }, func() { f.ended = true })
		flows = append(flows, f)
		return f
	}
	// a takes half the table, then b and c their shares: full.
	a1, a2 := admitHeld("a", 5*time.Second), admitHeld("a", 50*time.Second)
	b := admitHeld("b", time.Hour)
	if why := l.admit("c", now); why != "" {
		t.Fatal(why)
	}
	if total, _ := l.open(); total != 4 {
		t.Fatalf("%d open, want the table's 4", total)
	}
	// d is under its share (1), a over it (2 > 1): a's quietest goes.
	if why := l.admit("d", now); why != "" {
		t.Fatalf("d with the table full and a over its share: %q", why)
	}
	if !a2.ended || a1.ended {
		t.Fatalf("ended: a's 5 s-quiet flow %v, its 50 s-quiet flow %v; want the quieter one alone", a1.ended, a2.ended)
	}
	if total, _ := l.open(); total != 4 {
		t.Fatalf("%d open after the reclaim, want 4", total)
	}
	l.release("a", a2.h) // the reclaimed flow's goroutine ends
	if total, _ := l.open(); total != 4 {
		t.Fatalf("%d open after the reclaimed flow's release, want still 4", total)
	}
	// a, b, c and d hold one flow each, none over the share of 1: e is
	// refused, and nothing more is ended.
	if why := l.admit("e", now); !strings.Contains(why, "all clients") {
		t.Fatalf("e with every client at its share: %q", why)
	}
	for i, f := range flows {
		if f.ended && f != a2 {
			t.Fatalf("flow %d ended", i)
		}
	}
	l.release("a", a1.h)
	l.release("b", b.h)
	l.release("c", nil)
	l.release("d", nil)
	if total, tracked := l.open(); total != 0 || tracked != 0 || len(l.over) != 0 {
		t.Fatalf("after every release: %d open, %d tracked, %d over the floor", total, tracked, len(l.over))
	}
	// A client over its share whose flows are not relaying yet (not held)
	// gives no place.
	l2 := newLimits(4, 4, 0, 0)
	for _, id := range []string{"x", "x", "y", "z"} {
		if why := l2.admit(id, now); why != "" {
			t.Fatalf("%s: %q", id, why)
		}
	}
	if why := l2.admit("w", now); !strings.Contains(why, "all clients") {
		t.Fatalf("no held flow to reclaim: %q", why)
	}
	if _, tracked := l2.open(); tracked != 3 {
		t.Fatalf("%d clients tracked, want x, y and z (a refused client with no flow is not kept)", tracked)
	}
}

// BenchmarkLimitsFlow is what the limits cost a flow: its admission, its
// hold while it relays (what makes it reclaimable) and its release, with
// 1,000 clients holding flows.
func BenchmarkLimitsFlow(b *testing.B) {
	now := time.Unix(1000, 0)
	l := newLimits(16384, 1024, 0, 0)
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprint("c", i)
		l.admit(ids[i], now)
		l.hold(ids[i], func() time.Duration { return 0 }, func() {})
	}
	quiet, end := func() time.Duration { return 0 }, func() {}
	i := 0
	for b.Loop() {
		id := ids[i%len(ids)]
		i++
		if why := l.admit(id, now); why != "" {
			b.Fatal(why)
		}
		h := l.hold(id, quiet, end)
		l.release(id, h)
	}
}
