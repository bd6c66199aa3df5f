package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// ruleSet is n rules of every selector kind, none of which matches the
// benchmark's client before the last, so that a check reads every index.
func ruleSet(n int) string {
	var b strings.Builder
	b.WriteString(`{"groups": {"group:ops": ["id:op-1", "cidr:172.20.0.0/16"]}, "rules": [`)
	for i := range n - 1 {
		switch i % 6 {
		case 0:
			fmt.Fprintf(&b, `{"name": "r%d", "clients": ["id:host-%d"], "domains": ["*.svc%d.example"], "action": "allow"},`, i, i, i)
		case 1:
			fmt.Fprintf(&b, `{"name": "r%d", "clients": ["id-prefix:team%d-"], "domains": ["app%d.example"], "action": "deny"},`, i, i, i)
		case 2:
			fmt.Fprintf(&b, `{"name": "r%d", "clients": ["cidr:10.%d.%d.0/24"], "domains": ["*"], "ports": ["tcp:%d"], "action": "deny"},`, i, i/256, i%256, 1+i%60000)
		case 3:
			fmt.Fprintf(&b, `{"name": "r%d", "clients": ["tag:t%d", "user:u%d@example.com"], "domains": ["*.example"], "action": "allow"},`, i, i, i)
		case 4:
			fmt.Fprintf(&b, `{"name": "r%d", "clients": ["group:ops"], "domains": ["*.d%d.example"], "action": "egress", "egress": ["203.0.113.%d"]},`, i, i, i%250+1)
		case 5:
			fmt.Fprintf(&b, `{"name": "r%d", "clients": ["cidr:2001:db8:%x::/48"], "domains": ["x%d.example"], "action": "deny"},`, i, i, i)
		}
	}
	b.WriteString(`{"name": "last", "clients": ["*"], "domains": ["*.corp.example"], "ports": ["tcp:443"], "action": "allow"}], "default": "deny"}`)
	return b.String()
}

// A check costs a few hundred nanoseconds and no allocation whatever the
// number of rules; a name check (DNS) and a flow check (the connector).
func BenchmarkCheck(b *testing.B) {
	c := &Client{ID: "10.200.3.4", Addr: netip.MustParseAddr("10.200.3.4")}
	for _, n := range []int{10, 100, 1000} {
		p := mustParse(b, ruleSet(n))
		b.Run(fmt.Sprintf("name/rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := p.CheckName(c, "git.corp.example"); d.RuleName() != "last" {
					b.Fatal(d.RuleName())
				}
			}
		})
		b.Run(fmt.Sprintf("flow/rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := p.CheckFlow(c, "git.corp.example", TCP, 443); d.RuleName() != "last" {
					b.Fatal(d.RuleName())
				}
			}
		})
	}
}

func TestRuleSetParses(t *testing.T) {
	for _, n := range []int{10, 100, 1000} {
		p := mustParse(t, ruleSet(n))
		if p.Len() != n {
			t.Fatalf("%d rules, want %d", p.Len(), n)
		}
		if d := p.CheckFlow(&Client{ID: "x"}, "git.corp.example", TCP, 22); d.RuleName() != "default" {
			t.Errorf("tcp:22 decided by %s", d.RuleName())
		}
	}
}
