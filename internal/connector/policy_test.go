package connector

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ippool/ippool/internal/policy"
)

type compiledPolicy struct{ p *policy.Policy }

func (c compiledPolicy) EgressAddrs() []netip.Addr {
	var out []netip.Addr
	for _, r := range c.p.Document().Rules {
		for _, e := range r.Egress {
			out = append(out, netip.MustParseAddr(e))
		}
	}
	return out
}

func (c compiledPolicy) CheckFlow(cl *policy.Client, d string, proto policy.Proto, port uint16) policy.Decision {
	return c.p.CheckFlow(cl, d, proto, port)
}

// Each flow is decided by the policy with its client, domain and port: a
// denied one is reset and counted, an egress rule dials from its address
// when this host has it and refuses the flow when it has not.
func TestFlowsFollowThePolicy(t *testing.T) {
	echo := echoServer(t)
	p, err := policy.Parse([]byte(`{"rules": [
		{"name": "echo-from-loopback", "clients": ["id:nodeA"], "domains": ["echo.test"], "ports": ["tcp:1-65535"], "action": "egress", "egress": ["127.0.0.1"]},
		{"name": "away", "clients": ["*"], "domains": ["away.test"], "action": "egress", "egress": ["203.0.113.77"]},
	], "default": "deny"}`))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	c, fp := newTest(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Policy: compiledPolicy{p}, Metrics: m})
	fp.mappings["nodeA 198.18.0.30"] = "echo.test"
	fp.mappings["nodeB 198.18.0.30"] = "echo.test"
	fp.mappings["nodeA 198.18.0.31"] = "away.test"
	c.res.(fakeResolver)["echo.test"] = []netip.Addr{echo.Addr()}
	c.res.(fakeResolver)["away.test"] = []netip.Addr{echo.Addr()}

	if missing := c.MissingEgress(); len(missing) != 1 || missing[0] != netip.MustParseAddr("203.0.113.77") {
		t.Errorf("missing egress addresses %v, want 203.0.113.77", missing)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`# HELP ippool_connector_egress_missing Egress addresses of the policy that no interface of this host has; flows the policy sends from them are refused (no_egress).
# TYPE ippool_connector_egress_missing gauge
ippool_connector_egress_missing 1
`), "ippool_connector_egress_missing"); err != nil {
		t.Error(err)
	}
	for _, f := range []struct {
		client string
		dst    string
		want   Result
	}{
		{"nodeA", "198.18.0.30", Relayed},
		{"nodeB", "198.18.0.30", Denied},
		{"nodeA", "198.18.0.31", NoEgress},
	} {
		before := testutil.ToFloat64(m.byFlow["tcp"][f.want])
		client, done := servedPair(t, c, f.client, netip.AddrPortFrom(netip.MustParseAddr(f.dst), echo.Port()))
		client.SetDeadline(time.Now().Add(10 * time.Second))
		client.Write([]byte("ping"))
		buf := make([]byte, 4)
		n, _ := client.Read(buf)
		client.Close()
		<-done
		if relayed := n == 4 && string(buf) == "ping"; relayed != (f.want == Relayed) {
			t.Errorf("%s to %s: echoed %q, want %s", f.client, f.dst, buf[:n], f.want)
		}
		if got := testutil.ToFloat64(m.byFlow["tcp"][f.want]) - before; got != 1 {
			t.Errorf("%s to %s: %s counted %v times, want once", f.client, f.dst, f.want, got)
		}
	}
}
