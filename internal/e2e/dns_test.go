package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/testcluster"
)

// The upstream's zone: every name under example.test has upstreamA, except
// nxName (NXDOMAIN) and directName, which resolves into ignorePrefix and so
// must be answered with its real address.
const (
	upstreamA    = "203.0.113.80"
	nxName       = "nx.example.test."
	directName   = "direct.example.test."
	directA      = "10.99.0.5"
	directAAAA   = "2001:db8::5"
	ignorePrefix = "10.99.0.0/16"
	dnsPool      = "100.64.0.0/24"
	v6Prefix     = "fd7a:115c:a1e0:b1a::/96"
)

// startUpstream runs a DNS server on 127.0.0.1 (UDP) that serves the zone
// above, and returns its address.
func startUpstream(t *testing.T) string {
	t.Helper()
	return testcluster.StartUpstream(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 300}
		switch {
		case !dns.IsSubDomain("example.test.", name):
			m.Rcode = dns.RcodeRefused
		case name == nxName:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA && name == directName:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP(directA)})
		case q.Qtype == dns.TypeAAAA && name == directName:
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP(directAAAA)})
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP(upstreamA)})
		}
		w.WriteMsg(m)
	}))
}

// requireDig returns the path of dig: missing, it fails the test under CI
// and skips it elsewhere.
func requireDig(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("dig")
	if err == nil {
		return path
	}
	msg := "dig not found: install Debian's dnsutils (./test.sh does so when run as root)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// digger runs dig against one server.
type digger struct {
	t          *testing.T
	bin        string
	host, port string
}

// run runs dig with args after the server and timeout options.
func (d digger) run(args ...string) string {
	d.t.Helper()
	full := append([]string{"@" + d.host, "-p", d.port, "+time=3", "+tries=2"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.bin, full...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("dig %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

// short runs dig +short and returns the answer lines.
func (d digger) short(args ...string) []string {
	d.t.Helper()
	out := d.run(append([]string{"+short"}, args...)...)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// one runs dig +short and requires exactly one address in the answer.
func (d digger) one(args ...string) netip.Addr {
	d.t.Helper()
	lines := d.short(args...)
	if len(lines) != 1 {
		d.t.Fatalf("dig +short %s: want one answer, got %q", strings.Join(args, " "), lines)
	}
	a, err := netip.ParseAddr(lines[0])
	if err != nil {
		d.t.Fatalf("dig +short %s: answer %q is not an address", strings.Join(args, " "), lines[0])
	}
	return a
}

var digStatus = regexp.MustCompile(`status: ([A-Z]+)`)

// status runs dig and returns the response code of its header line.
func (d digger) status(args ...string) string {
	d.t.Helper()
	out := d.run(args...)
	m := digStatus.FindStringSubmatch(out)
	if m == nil {
		d.t.Fatalf("dig %s: no status line in\n%s", strings.Join(args, " "), out)
	}
	return m[1]
}

type clientMappings struct {
	Client   string `json:"client"`
	Mappings []struct {
		Domain   string `json:"domain"`
		IP       string `json:"ip"`
		LastUsed string `json:"last_used"`
	} `json:"mappings"`
}

// mappingsOf returns client's mappings as domain -> address, via the HTTP API.
func mappingsOf(t *testing.T, s *testcluster.Server, client string) map[string]string {
	t.Helper()
	status, body, err := s.Do(context.Background(), http.MethodGet, "/v1/clients/"+client, nil)
	if err != nil || status != 200 {
		t.Fatalf("GET /v1/clients/%s: %d %s %v", client, status, body, err)
	}
	var cm clientMappings
	if err := json.Unmarshal(body, &cm); err != nil {
		t.Fatalf("GET /v1/clients/%s: %v in %s", client, err, body)
	}
	if cm.Client != client {
		t.Fatalf("GET /v1/clients/%s answered for client %q", client, cm.Client)
	}
	out := map[string]string{}
	for _, m := range cm.Mappings {
		if _, err := time.Parse(time.RFC3339Nano, m.LastUsed); err != nil {
			t.Fatalf("client %s, %s: last_used %q: %v", client, m.Domain, m.LastUsed, err)
		}
		out[m.Domain] = m.IP
	}
	return out
}

// TestDNSWithDig runs the real `ippool serve` with its DNS front end in
// front of a local upstream and queries it with the real dig.
func TestDNSWithDig(t *testing.T) {
	dig := requireDig(t)
	upstream := startUpstream(t)
	const firstIP = 31
	ip := fmt.Sprintf("127.0.0.%d", firstIP)
	dnsAddr := testcluster.FreeDNSAddr(t, ip)
	c := testcluster.New(t, 1, testcluster.Options{FirstIP: firstIP, Args: []string{
		"--dns-addr", dnsAddr, "--dns-upstream", upstream, "--dns-domains", "example.test",
		"--ignore-destinations", ignorePrefix, "--v6-prefix", v6Prefix, "--pool", dnsPool,
	}})
	s := c.Servers[0]
	if s.IP != ip {
		t.Fatalf("server on %s, want %s", s.IP, ip)
	}
	s.Start()
	c.WaitReady(30 * time.Second)
	// /readyz may answer before the DNS listener is up.
	testcluster.WaitDNS(t, dnsAddr, 10*time.Second)

	host, port, _ := net.SplitHostPort(dnsAddr)
	d := digger{t: t, bin: dig, host: host, port: port}
	pool := netip.MustParsePrefix(dnsPool)
	inPool := func(what string, a netip.Addr) {
		t.Helper()
		if !a.Is4() || !pool.Contains(a) {
			t.Fatalf("%s = %s, not an address of the pool %s", what, a, pool)
		}
	}
	const c2, c3 = "127.0.0.2", "127.0.0.3"

	// One client: pool addresses, stable across queries, one per name.
	a2 := d.one("-b", c2, "A", "a.example.test")
	inPool("A a.example.test from "+c2, a2)
	if again := d.one("-b", c2, "A", "a.example.test"); again != a2 {
		t.Fatalf("repeated query: %s, first answer %s", again, a2)
	}
	if mixed := d.one("-b", c2, "A", "A.Example.TEST."); mixed != a2 {
		t.Fatalf("A.Example.TEST.: %s, want the same as a.example.test (%s)", mixed, a2)
	}
	b2 := d.one("-b", c2, "A", "b.example.test")
	inPool("A b.example.test from "+c2, b2)
	if b2 == a2 {
		t.Fatalf("a.example.test and b.example.test both got %s", a2)
	}

	// A second source address is a second client with the whole pool to
	// itself: its first name gets the same first unused address.
	x3 := d.one("-b", c3, "A", "x.example.test")
	a3 := d.one("-b", c3, "A", "a.example.test")
	inPool("A x.example.test from "+c3, x3)
	inPool("A a.example.test from "+c3, a3)
	if x3 == a3 {
		t.Fatalf("%s: x and a both got %s", c3, x3)
	}
	if x3 != a2 {
		t.Errorf("%s's first name got %s; %s's first got %s: each client should start at the same fresh address", c3, x3, c2, a2)
	}
	if again := d.one("-b", c2, "A", "a.example.test"); again != a2 {
		t.Fatalf("%s's a.example.test changed to %s after %s's queries (was %s)", c2, again, c3, a2)
	}
	m2, m3 := mappingsOf(t, s, c2), mappingsOf(t, s, c3)
	want2 := map[string]string{"a.example.test": a2.String(), "b.example.test": b2.String()}
	want3 := map[string]string{"x.example.test": x3.String(), "a.example.test": a3.String()}
	if fmt.Sprint(m2) != fmt.Sprint(want2) {
		t.Errorf("mappings of %s: %v, want %v", c2, m2, want2)
	}
	if fmt.Sprint(m3) != fmt.Sprint(want3) {
		t.Errorf("mappings of %s: %v, want %v", c3, m3, want3)
	}

	// AAAA: the same pool address inside the /96.
	aaaa := d.one("-b", c2, "AAAA", "a.example.test")
	v4 := a2.As4()
	w := netip.MustParsePrefix(v6Prefix).Addr().As16()
	copy(w[12:], v4[:])
	if want := netip.AddrFrom16(w); aaaa != want {
		t.Errorf("AAAA a.example.test = %s, want %s", aaaa, want)
	}

	// TCP gives the same answers as UDP.
	if tcp := d.one("+tcp", "-b", c2, "A", "b.example.test"); tcp != b2 {
		t.Errorf("+tcp A b.example.test = %s, want %s as over UDP", tcp, b2)
	}
	if tcp := d.one("+tcp", "-b", c3, "A", "x.example.test"); tcp != x3 {
		t.Errorf("+tcp A x.example.test from %s = %s, want %s as over UDP", c3, tcp, x3)
	}

	// Upstream NXDOMAIN passes through and allocates nothing.
	if st := d.status("-b", c2, "A", strings.TrimSuffix(nxName, ".")); st != "NXDOMAIN" {
		t.Errorf("A %s: status %s, want NXDOMAIN", nxName, st)
	}
	if st := d.status("-b", c2, "AAAA", strings.TrimSuffix(nxName, ".")); st != "NXDOMAIN" {
		t.Errorf("AAAA %s: status %s, want NXDOMAIN", nxName, st)
	}

	// Names outside --dns-domains are refused.
	if st := d.status("-b", c2, "A", "www.other.test"); st != "REFUSED" {
		t.Errorf("A www.other.test: status %s, want REFUSED", st)
	}
	if st := d.status("-b", c2, "A", "example.test.evil"); st != "REFUSED" {
		t.Errorf("A example.test.evil: status %s, want REFUSED", st)
	}

	// A name resolving into --ignore-destinations keeps its real addresses.
	if got := d.one("-b", c2, "A", strings.TrimSuffix(directName, ".")); got.String() != directA {
		t.Errorf("A %s = %s, want the upstream's %s", directName, got, directA)
	}
	if got := d.one("-b", c2, "AAAA", strings.TrimSuffix(directName, ".")); got != netip.MustParseAddr(directAAAA) {
		t.Errorf("AAAA %s = %s, want the upstream's %s", directName, got, directAAAA)
	}
	if got := d.one("+tcp", "-b", c2, "A", strings.TrimSuffix(directName, ".")); got.String() != directA {
		t.Errorf("+tcp A %s = %s, want the upstream's %s", directName, got, directA)
	}

	// None of the refused, missing or ignored names took an address.
	m2 = mappingsOf(t, s, c2)
	if got := slices.Sorted(maps.Keys(m2)); fmt.Sprint(got) != "[a.example.test b.example.test]" {
		t.Errorf("mappings of %s after the other queries: %v, want only a and b", c2, got)
	}
}
