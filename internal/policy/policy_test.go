package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// The document issue 29 names, as it stands.
const example = `{
  // clients grouped by name
  "groups": {"group:eng": ["id:alice-laptop", "cidr:10.1.0.0/16"]},
  "rules": [
    {"name": "no-ssh", "clients": ["*"], "domains": ["*"], "ports": ["tcp:22"], "action": "deny"},
    {"name": "eng-git", "clients": ["group:eng", "tag:eng"], "domains": ["git.corp.example", "*.github.com"], "action": "allow"},
    {"name": "anchor-saas", "clients": ["*"], "domains": ["*.saas.example"], "action": "egress", "egress": ["203.0.113.10", "203.0.113.11"]},
  ],
  "default": "deny",
}`

func mustParse(t testing.TB, text string) *Policy {
	t.Helper()
	p, err := Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExampleDocument(t *testing.T) {
	p := mustParse(t, example)
	alice := &Client{ID: "alice-laptop"}
	bob := &Client{ID: "bob-phone", Addr: netip.MustParseAddr("10.2.0.7")}
	office := &Client{ID: "10.1.4.4"}
	tagged := &Client{ID: "n123", Tags: []string{"tag:ci", "tag:eng"}}
	for _, c := range []struct {
		client *Client
		domain string
		proto  Proto
		port   uint16
		rule   string
		action Action
	}{
		{alice, "git.corp.example", TCP, 443, "eng-git", Allow},
		{alice, "git.corp.example", TCP, 22, "no-ssh", Deny},
		{alice, "git.corp.example", 0, 0, "eng-git", Allow},
		{alice, "api.github.com", TCP, 443, "eng-git", Allow},
		{alice, "a.b.github.com", UDP, 22, "eng-git", Allow},
		{alice, "github.com", TCP, 443, "default", Deny},
		{alice, "corp.example", 0, 0, "default", Deny},
		{bob, "git.corp.example", TCP, 443, "default", Deny},
		{bob, "x.saas.example", TCP, 443, "anchor-saas", Egress},
		{bob, "x.saas.example", 0, 0, "anchor-saas", Egress},
		{bob, "x.saas.example", TCP, 22, "no-ssh", Deny},
		{office, "git.corp.example", TCP, 443, "eng-git", Allow},
		{&Client{ID: "office", Addr: netip.MustParseAddr("::ffff:10.1.9.9")}, "git.corp.example", TCP, 443, "eng-git", Allow},
		{tagged, "git.corp.example", TCP, 8443, "eng-git", Allow},
		{&Client{ID: "n124", Tags: []string{"tag:ci"}}, "git.corp.example", TCP, 443, "default", Deny},
	} {
		var d Decision
		if c.proto == 0 {
			d = p.CheckName(c.client, c.domain)
		} else {
			d = p.CheckFlow(c.client, c.domain, c.proto, c.port)
		}
		if d.RuleName() != c.rule || d.Action != c.action {
			t.Errorf("%+v %s %s:%d: %s %s, want %s %s", *c.client, c.domain, c.proto, c.port, d.RuleName(), d.Action, c.rule, c.action)
		}
	}
	// A client keeps its egress address for a domain; both are used.
	d := p.CheckName(bob, "x.saas.example")
	seen := map[netip.Addr]bool{}
	for i := range 64 {
		a := d.EgressAddr(fmt.Sprintf("client-%d", i), "x.saas.example")
		if a != d.EgressAddr(fmt.Sprintf("client-%d", i), "x.saas.example") {
			t.Fatal("the egress address of one client and domain changed")
		}
		seen[a] = true
	}
	if len(seen) != 2 || !seen[netip.MustParseAddr("203.0.113.10")] || !seen[netip.MustParseAddr("203.0.113.11")] {
		t.Errorf("64 clients used egress addresses %v, want both", seen)
	}
}

func TestSelectorsAndFirstMatch(t *testing.T) {
	p := mustParse(t, `{"rules": [
		{"name": "deny-prefix", "clients": ["id-prefix:guest-"], "domains": ["*"], "action": "deny"},
		{"name": "user", "clients": ["user:carol@example.com"], "domains": ["Mail.Example."], "action": "allow"},
		{"name": "v6", "clients": ["cidr:2001:db8::/32"], "domains": ["*.v6.example"], "action": "deny"},
		{"name": "udp-range", "clients": ["*"], "domains": ["dns.example"], "ports": ["udp:50-60", "tcp:853"], "action": "deny"},
		{"name": "later", "clients": ["*"], "domains": ["*"], "action": "allow"},
	], "default": "deny"}`)
	for _, c := range []struct {
		client Client
		domain string
		proto  Proto
		port   uint16
		rule   string
	}{
		{Client{ID: "guest-1"}, "mail.example", 0, 0, "deny-prefix"},
		{Client{ID: "guest"}, "mail.example", 0, 0, "later"},
		{Client{ID: "x", User: "carol@example.com"}, "mail.example", 0, 0, "user"},
		{Client{ID: "x", User: "dave@example.com"}, "mail.example", 0, 0, "later"},
		{Client{ID: "x", Addr: netip.MustParseAddr("2001:db8::1")}, "a.v6.example", 0, 0, "v6"},
		{Client{ID: "2001:db8:1::1"}, "a.v6.example", 0, 0, "v6"},
		{Client{ID: "x"}, "a.v6.example", 0, 0, "later"},
		{Client{ID: "x"}, "v6.example", 0, 0, "later"},
		{Client{ID: "x"}, "dns.example", UDP, 53, "udp-range"},
		{Client{ID: "x"}, "dns.example", UDP, 49, "later"},
		{Client{ID: "x"}, "dns.example", UDP, 61, "later"},
		{Client{ID: "x"}, "dns.example", TCP, 53, "later"},
		{Client{ID: "x"}, "dns.example", TCP, 853, "udp-range"},
		// Name checks skip a deny limited to ports.
		{Client{ID: "x"}, "dns.example", 0, 0, "later"},
	} {
		var d Decision
		if c.proto == 0 {
			d = p.CheckName(&c.client, c.domain)
		} else {
			d = p.CheckFlow(&c.client, c.domain, c.proto, c.port)
		}
		if d.RuleName() != c.rule {
			t.Errorf("%+v %s %s:%d: rule %s, want %s", c.client, c.domain, c.proto, c.port, d.RuleName(), c.rule)
		}
	}
}

func TestDefaults(t *testing.T) {
	for text, want := range map[string]Action{
		`{"rules": []}`:                     Allow,
		`{"rules": [], "default": "allow"}`: Allow,
		`{"rules": [], "default": "deny"}`:  Deny,
		`{}`:                                Allow,
		`{"rules": [{"name": "r", "clients": ["id:a"], "domains": ["*"], "action": "deny"}], "default": "deny"}`: Deny,
	} {
		p := mustParse(t, text)
		if d := p.CheckName(&Client{ID: "b"}, "x.example"); d.Action != want || d.Rule != -1 || d.RuleName() != "default" {
			t.Errorf("%s: %v rule %d, want the default's %v", text, d.Action, d.Rule, want)
		}
	}
}

// Every refusal says where, at the line and column of the value.
func TestErrorsSayWhere(t *testing.T) {
	for _, c := range []struct {
		text       string
		line, col  int
		msgContain string
	}{
		{"{\n  \"rules\": [\n    {\"name\": \"a\", \"clients\": [\"ip:1.2.3.4\"], \"domains\": [\"*\"], \"action\": \"allow\"}\n  ]\n}", 3, 31, "unknown kind"},
		{"{\"rules\": [\n {\"name\": \"a\", \"clients\": [\"*\"], \"domains\": [\"*\"],\n  \"action\": \"permit\"}]}", 3, 13, "not allow, deny or egress"},
		{"{\"rules\": [{\"name\": \"a\", \"clients\": [\"*\"], \"domains\": [\"*\"], \"ports\": [\"tcp:0\"], \"action\": \"deny\"}]}", 1, 72, "ports are 1 to 65535"},
		{"{\"rules\": [{\"name\": \"a\", \"clients\": [\"*\"], \"domains\": [\"*\"], \"ports\": [\"tcp:9-8\"], \"action\": \"deny\"}]}", 1, 72, "FROM <= TO"},
		{"{\"rules\": [{\"name\": \"a\", \"clients\": [\"group:x\"], \"domains\": [\"*\"], \"action\": \"deny\"}]}", 1, 38, "not defined"},
		{"{\"groups\": {\"group:a\": [\"group:b\"]}, \"rules\": []}", 1, 25, "not other groups"},
		{"{\"rules\": [{\"name\": \"a\", \"clients\": [\"*\"], \"domains\": [\"bad..name\"], \"action\": \"deny\"}]}", 1, 56, "domain"},
		{"{\"rules\": [{\"name\": \"a\", \"clients\": [\"*\"], \"domains\": [\"a*.example\"], \"action\": \"deny\"}]}", 1, 56, "wildcard"},
		{"{\"rules\": [{\"name\": \"a\", \"clients\": [\"*\"], \"domains\": [\"*\"], \"action\": \"egress\"}]}", 1, 12, "egress"},
		{"{\"rules\": [{\"name\": \"a\", \"clients\": [\"*\"], \"domains\": [\"*\"], \"action\": \"egress\", \"egress\": [\"1.2.3\"]}]}", 1, 93, "not an IP address"},
		{"{\"rules\": [{\"name\": \"a\", \"clients\": [\"*\"], \"domains\": [\"*\"], \"action\": \"deny\"}, {\"name\": \"a\", \"clients\": [\"*\"], \"domains\": [\"*\"], \"action\": \"deny\"}]}", 1, 90, "also rule 0"},
		{"{\"rules\": [{\"clients\": [\"*\"], \"domains\": [\"*\"], \"action\": \"deny\"}]}", 1, 12, "needs a name"},
		{"{\"rules\": [{\"name\": \"default\", \"clients\": [\"*\"], \"domains\": [\"*\"], \"action\": \"deny\"}]}", 1, 21, "another name"},
		{"{\"default\": \"maybe\"}", 1, 13, "neither allow nor deny"},
		{"{\n\"rules\": [],\n\"defualt\": \"deny\"}", 3, 1, `unknown field "defualt"`},
		{"{\"rules\": {}}", 1, 12, "list of rules"},
		{"{\"rules\": [\n  {\"name\": 7}]}", 2, 13, "a string"},
		{"{\"rules\": [\n  {\"name\": \"a\" \"x\"}]}", 2, 16, "invalid character"},
		{"{\"rules\": []", 1, 13, ""},
	} {
		_, err := Parse([]byte(c.text))
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%s: %v, want a SyntaxError", c.text, err)
			continue
		}
		if se.Line != c.line || se.Column != c.col || !strings.Contains(se.Msg, c.msgContain) {
			t.Errorf("%s:\n  %v\n  want line %d, column %d, saying %q", c.text, err, c.line, c.col, c.msgContain)
		}
	}
}

func TestLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"rules": [`)
	for i := range MaxRules + 1 {
		fmt.Fprintf(&b, `{"name": "r%d", "clients": ["*"], "domains": ["*"], "action": "allow"},`, i)
	}
	b.WriteString(`]}`)
	if _, err := Parse([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "at most 4096") {
		t.Errorf("%d rules: %v, want refused", MaxRules+1, err)
	}
	if _, err := Parse(make([]byte, MaxBytes+1)); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("an oversized document: %v", err)
	}
}

// Whatever bytes come in, Parse returns a policy or an error, never a panic,
// and a parsed policy answers every check.
func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(`{"rules": [{"name": "a", "clients": ["cidr:10.0.0.0/8", "id-prefix:x"], "domains": ["*.a.b"], "ports": ["udp:1-65535"], "action": "deny"}]}`))
	f.Add([]byte(`{"groups": {"group:g": ["user:u", "tag:t"]}, "rules": [{"name": "b", "clients": ["group:g"], "domains": ["c.d"], "action": "allow"}], "default": "deny"}`))
	f.Fuzz(func(t *testing.T, text []byte) {
		p, err := Parse(text)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("%T %v", err, err)
			}
			return
		}
		for _, c := range []Client{{ID: "a"}, {ID: "10.1.2.3"}, {ID: "x", Tags: []string{"tag:t"}, User: "u"}} {
			for _, d := range []string{"c.d", "x.a.b", "a.b", "git.corp.example"} {
				p.CheckName(&c, d)
				p.CheckFlow(&c, d, TCP, 22)
				p.CheckFlow(&c, d, UDP, 53)
			}
		}
	})
}
