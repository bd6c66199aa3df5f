//go:build linux

package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

// The gateways of these tests serve their HTTP API away from the default
// port, and each test stops the gateway it started before the next starts.
const guardHTTPAddr = "127.0.0.1:17480"

// startGateway runs `ippool serve --connector` in gw, answering DNS on
// dnsAddr from upstreamDNS for the domain "test", with the test's own
// flags after those, and waits for its rules.
func startGateway(t *testing.T, lab *netnsLab, name, gw, dnsAddr, upstreamDNS string, flags ...string) *labProc {
	t.Helper()
	args := append([]string{testcluster.Binary(t), "serve", "--data-dir", filepath.Join(t.TempDir(), "data"),
		"--http-addr", guardHTTPAddr, "--cluster-addr", "127.0.0.1:17481",
		"--dns-addr", dnsAddr + ":53", "--dns-upstream", upstreamDNS, "--dns-domains", "test",
		"--connector", "--log-level", "debug"}, flags...)
	p := lab.start(name, gw, args...)
	waitPoolSet(t, gw, "198.18.0.0/15", p)
	return p
}

// stopGateway stops a gateway with SIGTERM and waits for it, so that the
// next one can take its rules and ports.
func stopGateway(t *testing.T, p *labProc) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	if !p.wait(15 * time.Second) {
		t.Fatalf("%s did not stop on SIGTERM", p.name)
	}
}

// refusedFlow connects from src to dst and reports an error unless the
// gateway resets the connection.
func refusedFlow(lab *netnsLab, ns, src, dst string) error {
	c, err := lab.dial(ns, "tcp", src, dst, 2*time.Second)
	if err == nil {
		_, err = readAll(c, 3*time.Second)
		c.Close()
	}
	if !isReset(err) {
		return fmt.Errorf("%s: %v, want a reset", dst, err)
	}
	return nil
}

// TestConnectorRefusesPrivateDestinations is issue 28's finding 2: names
// whose addresses are private (10.x), CGNAT (100.100.100.200, a cloud's
// metadata address) or a mix of loopback and private. By default the
// resolver drops such answers, so DNS gives the client no pool address for
// them. With --dns-private-domains for them (the operator trusts those
// names, or a name rebinds between the answer and the dial) the client
// gets its pool addresses, and the connector still refuses to dial: the
// flows are reset and counted refused. With --connector-allow for those
// networks they are relayed, and the mixed name reaches its private
// address only, never the gateway's loopback.
func TestConnectorRefusesPrivateDestinations(t *testing.T) {
	lab := newLab(t)
	n := subnet()
	sub := func(format string, a ...any) string { return fmt.Sprintf(format, append([]any{n}, a...)...) }
	client, gw, up := lab.ns("client"), lab.ns("gw"), lab.ns("up")
	src, gwC, gwU, upA := sub("10.%d.1.2"), sub("10.%d.1.1"), sub("10.%d.2.1"), sub("10.%d.2.2")
	const cgnat = "100.100.100.200"
	lab.link(client, gw, []string{src + "/24"}, []string{gwC + "/24"})
	lab.link(gw, up, []string{gwU + "/24"}, []string{upA + "/24", cgnat + "/32"})
	lab.ip("-n", client, "route", "add", "default", "via", gwC)
	lab.ip("-n", gw, "route", "add", cgnat+"/32", "via", upA)
	lab.resolvConf(client, gwC)
	startUpstreamNet(lab, up, upA, map[string]string{
		"priv.test":  upA,
		"cgnat.test": cgnat,
		"mixed.test": "127.0.0.1," + upA,
	}, []string{upA, cgnat}, []int{8080}, 5300)
	// What the mixed name must never reach: the gateway's own loopback.
	loop := lab.listen(gw, "127.0.0.1:8080")
	go func() {
		for {
			c, err := loop.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello from the gateway's loopback\n")
			c.Close()
		}
	}()

	names := []string{"priv.test", "cgnat.test", "mixed.test"}
	poolAddrs := func() map[string]string {
		m := make(map[string]string)
		for _, name := range names {
			a := dig(t, client, src, "A", name)
			if !strings.HasPrefix(a, "198.1") {
				t.Fatalf("A for %s: %q, want a pool address", name, a)
			}
			m[name] = a
		}
		return m
	}

	t.Run("default", func(t *testing.T) {
		gwp := startGateway(t, lab, "gateway-default", gw, gwC, upA+":53")
		defer stopGateway(t, gwp)
		for _, name := range names {
			if a := dig(t, client, src, "A", name); a != "" {
				t.Errorf("A for %s: %q, want none (its every address is private)", name, a)
			}
		}
		dropped := `ippool_dns_private_answers_dropped_total`
		if v := lab.metric(gw, guardHTTPAddr, dropped); v < 4 {
			t.Errorf("%s = %v, want at least 4 (10.x, 100.100.100.200, 127.0.0.1 and 10.x)", dropped, v)
		}
	})

	t.Run("--dns-private-domains", func(t *testing.T) {
		gwp := startGateway(t, lab, "gateway-private-names", gw, gwC, upA+":53", "--dns-private-domains", "test")
		defer stopGateway(t, gwp)
		for name, pa := range poolAddrs() {
			if err := refusedFlow(lab, client, src, pa+":8080"); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		refused := `ippool_connector_flows_total{proto="tcp",result="refused"}`
		if !poll.Wait(10*time.Second, func() bool { return lab.metric(gw, guardHTTPAddr, refused) >= 3 }) {
			t.Errorf("%s = %v, want 3", refused, lab.metric(gw, guardHTTPAddr, refused))
		}
		if v := lab.metric(gw, guardHTTPAddr, `ippool_connector_flows_total{proto="tcp",result="relayed"}`); v != 0 {
			t.Errorf("%v flows relayed", v)
		}
	})

	// The connector's allow list opens the resolver too: what it may
	// dial, a name may point at.
	t.Run("--connector-allow", func(t *testing.T) {
		gwp := startGateway(t, lab, "gateway-allow", gw, gwC, upA+":53", "--connector-allow", sub("10.%d.2.0/24")+",100.64.0.0/10")
		defer stopGateway(t, gwp)
		pa := poolAddrs()
		for name, want := range map[string]string{"priv.test": upA, "cgnat.test": cgnat, "mixed.test": upA} {
			g, err := tcpExchange(lab, client, src, pa[name]+":8080", []byte(name))
			if err != nil || g != "hello "+want+":8080" {
				t.Errorf("%s: %q %v, want relayed to %s", name, g, err, want)
			}
		}
	})
}

// TestConnectorIPv6OnlyUpstream: a name with AAAA records only, on a host
// with only an IPv6 address (a global-looking one, outside the networks
// the connector refuses and outside the gateway's own), is reached by an
// IPv4 client through its pool IPv4 address: the connector resolves both
// families and dials the one there is. A name with both is reached over
// the family the client used: IPv4 through a pool IPv4 address, IPv6
// through a --v6-prefix address.
func TestConnectorIPv6OnlyUpstream(t *testing.T) {
	lab := newLab(t)
	n := subnet()
	sub := func(format string, a ...any) string { return fmt.Sprintf(format, append([]any{n}, a...)...) }
	client, gw, up := lab.ns("client"), lab.ns("gw"), lab.ns("up")
	src, gwC, src6, gwC6 := sub("10.%d.1.2"), sub("10.%d.1.1"), sub("fd00:%d:1::2"), sub("fd00:%d:1::1")
	// The link between the gateway and the upstream is one network; the
	// upstream's IPv6 service address is in another behind it, so that it
	// is not in one of the gateway's own networks. Its IPv4 address, for
	// the dual-stack name, is private and allowed.
	gwU6, upLink6, upAddr6 := sub("2001:db8:%d:1::1"), sub("2001:db8:%d:1::2"), sub("2001:db8:%d:2::2")
	gwU4, upAddr4 := sub("10.%d.2.1"), sub("10.%d.2.2")
	lab.link(client, gw, []string{src + "/24", src6 + "/64"}, []string{gwC + "/24", gwC6 + "/64"})
	lab.link(gw, up, []string{gwU6 + "/64", gwU4 + "/24"}, []string{upLink6 + "/64", upAddr6 + "/128", upAddr4 + "/24"})
	lab.ip("-6", "-n", gw, "route", "add", sub("2001:db8:%d:2::/64"), "via", upLink6)
	lab.ip("-n", client, "route", "add", "default", "via", gwC)
	lab.ip("-6", "-n", client, "route", "add", connV6Prefix, "via", gwC6)
	lab.resolvConf(client, gwC)
	upstream := startUpstreamNet(lab, up, upAddr6, map[string]string{
		"v6only.test": upAddr6,
		"dual.test":   upAddr4 + "," + upAddr6,
	}, []string{upAddr6, upAddr4}, []int{8080}, 5300)
	// The client's two addresses are one client, so that its IPv4 DNS
	// query gives the AAAA its IPv6 address uses.
	clientMap := filepath.Join(t.TempDir(), "clients")
	if err := os.WriteFile(clientMap, []byte(src+" c\n"+src6+" c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gwp := startGateway(t, lab, "gateway", gw, gwC, net.JoinHostPort(upAddr6, "53"),
		"--v6-prefix", connV6Prefix, "--dns-client-map", clientMap, "--connector-allow", sub("10.%d.2.0/24"))
	defer stopGateway(t, gwp)

	pa := dig(t, client, src, "A", "v6only.test")
	if !strings.HasPrefix(pa, "198.1") {
		t.Fatalf("A for v6only.test: %q, want a pool address", pa)
	}
	want := "hello [" + upAddr6 + "]:8080"
	if g, err := tcpExchange(lab, client, src, pa+":8080", []byte("over IPv6")); err != nil || g != want {
		t.Fatalf("to %s:8080: %q %v, want %q", pa, g, err, want)
	}
	if r, err := udpExchange(lab, client, src, pa+":5300", "ping"); err != nil || r != "from ["+upAddr6+"]:5300: ping" {
		t.Fatalf("UDP to %s:5300: %q %v", pa, r, err)
	}
	if upstream.askedType("v6only.test", "AAAA") < 1 {
		t.Error("the connector never asked for AAAA records")
	}

	pa4 := dig(t, client, src, "A", "dual.test")
	if g, err := tcpExchange(lab, client, src, pa4+":8080", []byte("IPv4 client")); err != nil || g != "hello "+upAddr4+":8080" {
		t.Errorf("dual.test from an IPv4 client: %q %v, want its IPv4 address", g, err)
	}
	pa6 := dig(t, client, src, "AAAA", "dual.test")
	if g, err := tcpExchange(lab, client, src6, net.JoinHostPort(pa6, "8080"), []byte("IPv6 client")); err != nil || g != want {
		t.Errorf("dual.test from an IPv6 client at %s: %q %v, want its IPv6 address", pa6, g, err)
	}
}
