package dnsfront

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/internal/testdns"
	"github.com/ippool/ippool/localpool"
	"github.com/ippool/ippool/pool"
)

// policedPool is a localpool with a policy, as service.Service is a pool
// with the cluster's.
type policedPool struct {
	*localpool.Pool
	p atomic.Pointer[policy.Policy]
}

func (pp *policedPool) CheckName(c *policy.Client, d string) error {
	p := pp.p.Load()
	if p == nil {
		return nil
	}
	if dec := p.CheckName(c, d); !dec.Allowed() {
		return errors.New("the policy's rule " + dec.RuleName() + " denies it")
	}
	return nil
}

func policedServer(t *testing.T, rcode int) (*Server, *policedPool, *testdns.Upstream) {
	t.Helper()
	up := startUpstream(t)
	pc, err := pool.ParseConfig("100.64.0.0/28", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := localpool.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	pp := &policedPool{Pool: lp}
	s, err := New(Config{Domains: []string{"example.test"}, Upstreams: []string{up.Addr}, AllowPrivate: docRanges, PolicyDenyRcode: rcode}, pp)
	if err != nil {
		t.Fatal(err)
	}
	return s, pp, up
}

// A name the policy denies gets NXDOMAIN (or REFUSED) with an Extended DNS
// Error "Blocked" naming the rule, no upstream query and no mapping; a
// mapped name denied after it was mapped leaves the fast path and is
// denied alike, so that a change applies to existing mappings.
func TestPolicyDeniesNames(t *testing.T) {
	s, pp, up := policedServer(t, 0)
	client := fakeSrc.String()
	ask := func(name string) *dns.Msg {
		t.Helper()
		w := &fakeWriter{}
		s.ServeDNS(w, queryMsg(name, dns.TypeA, true))
		if len(w.msgs) != 1 {
			t.Fatalf("%s: %d replies", name, len(w.msgs))
		}
		return w.msgs[0]
	}
	if r := ask("mapped.example.test."); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("before a policy: %v", r)
	}
	if !sameAsServeDNS(t, s, pack(t, queryMsg("mapped.example.test.", dns.TypeA, false))) {
		t.Fatal("a mapped name was not answered fast before a policy")
	}

	p, err := policy.Parse([]byte(`{"rules": [
		{"name": "loopback-no-mapped", "clients": ["cidr:127.0.0.0/8"], "domains": ["mapped.example.test", "*.denied.example.test"], "action": "deny"},
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	pp.p.Store(p)
	if sameAsServeDNS(t, s, pack(t, queryMsg("mapped.example.test.", dns.TypeA, false))) {
		t.Fatal("the fast path answered a name the policy now denies")
	}
	for _, name := range []string{"mapped.example.test.", "x.denied.example.test."} {
		r := ask(name)
		e := ede(r)
		if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 || e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || !strings.Contains(e.ExtraText, "loopback-no-mapped") {
			t.Errorf("%s: %v, EDE %+v; want NXDOMAIN, Blocked, naming the rule", name, r, e)
		}
	}
	if _, ok := pp.Get(client, "x.denied.example.test"); ok {
		t.Error("a denied name was mapped")
	}
	if n := up.Count("x.denied.example.test", dns.TypeA); n != 0 {
		t.Errorf("a denied name was asked upstream %d times", n)
	}
	if r := ask("other.example.test."); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("an allowed name: %v", r)
	}
	if got := s.Stats().PolicyDenied; got != 2 {
		t.Errorf("PolicyDenied %d, want 2", got)
	}

	refusing, rp, _ := policedServer(t, dns.RcodeRefused)
	rp.p.Store(p)
	w := &fakeWriter{}
	refusing.ServeDNS(w, queryMsg("x.denied.example.test.", dns.TypeAAAA, true))
	if r := w.msgs[0]; r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Errorf("--policy-deny-rcode refused: %v", r)
	}
}

// BenchmarkFastAnswerPolicy is BenchmarkFastAnswer with the name checked
// against a policy of 1,000 rules, none of which matches before the last:
// the cost a policy adds to a mapped name's answer.
func BenchmarkFastAnswerPolicy(b *testing.B) {
	up := startUpstream(b)
	pc, err := pool.ParseConfig("100.64.0.0/28", "", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	lp, err := localpool.New(pc)
	if err != nil {
		b.Fatal(err)
	}
	pp := &policedPool{Pool: lp}
	s, err := New(Config{Domains: []string{"example.test"}, Upstreams: []string{up.Addr}, AllowPrivate: docRanges, RateLimit: 1000}, pp)
	if err != nil {
		b.Fatal(err)
	}
	var doc strings.Builder
	doc.WriteString(`{"rules": [`)
	for i := range 999 {
		fmt.Fprintf(&doc, `{"name": "r%d", "clients": ["id-prefix:team%d-", "cidr:10.%d.%d.0/24"], "domains": ["*.svc%d.example", "app%d.example.test"], "action": "deny"},`, i, i, i/256, i%256, i, i)
	}
	doc.WriteString(`{"name": "last", "clients": ["cidr:127.0.0.0/8"], "domains": ["*.example.test"], "action": "allow"}], "default": "deny"}`)
	p, err := policy.Parse([]byte(doc.String()))
	if err != nil {
		b.Fatal(err)
	}
	pp.p.Store(p)
	s.ServeDNS(&fakeWriter{}, queryMsg("a.example.test.", dns.TypeA, true))
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
