//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

const connV6Prefix = "fd7a:115c:a1e0:b1a::/96"

// upstreamNet is what runs in the upstream namespace: a DNS server for the
// test's domains, TCP servers that greet with the address and port they were
// reached at and then echo, and a UDP echo server that says the same.
type upstreamNet struct {
	mu      sync.Mutex
	queries map[string]int // DNS questions by "name TYPE"
}

// asked is how many A questions for name the DNS server had.
func (u *upstreamNet) asked(name string) int { return u.askedType(name, "A") }

func (u *upstreamNet) askedType(name, qtype string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.queries[name+" "+qtype]
}

// startUpstreamNet serves zone (name -> its addresses, comma-separated: A
// records for the IPv4 ones, AAAA for the IPv6 ones) on dnsAddr:53 and the
// TCP and UDP servers on every address of addrs, all inside ns.
func startUpstreamNet(lab *netnsLab, ns, dnsAddr string, zone map[string]string, addrs []string, tcpPorts []int, udpPort int) *upstreamNet {
	t := lab.t
	u := &upstreamNet{queries: make(map[string]int)}
	pc := lab.listenUDP(ns, net.JoinHostPort(dnsAddr, "53"))
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
		u.mu.Lock()
		u.queries[name+" "+dns.TypeToString[q.Qtype]]++
		u.mu.Unlock()
		addrs, ok := zone[name]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, a := range strings.Split(addrs, ",") {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			// A short TTL, as SaaS names have: the connector's resolves
			// then go through the cache's refresh too.
			hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 30}
			switch {
			case q.Qtype == dns.TypeA && ip.Is4():
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: ip.AsSlice()})
			case q.Qtype == dns.TypeAAAA && ip.Is6():
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
			}
		}
		w.WriteMsg(m)
	})}
	up := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(up) }
	go srv.ActivateAndServe()
	<-up
	t.Cleanup(func() { srv.Shutdown() })
	for _, a := range addrs {
		for _, port := range tcpPorts {
			ln := lab.listen(ns, net.JoinHostPort(a, fmt.Sprint(port)))
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						fmt.Fprintf(c, "hello %s\n", c.LocalAddr())
						io.Copy(c, c)
						c.(*net.TCPConn).CloseWrite()
						// Wait for the client's close, so the echo is
						// read whole before the connection ends.
						c.SetReadDeadline(time.Now().Add(10 * time.Second))
						io.Copy(io.Discard, c)
					}()
				}
			}()
		}
		pc := lab.listenUDP(ns, net.JoinHostPort(a, fmt.Sprint(udpPort)))
		go func() {
			buf := make([]byte, 65535)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte(fmt.Sprintf("from %s: ", pc.LocalAddr())), buf[:n]...), from)
			}
		}()
	}
	return u
}

// tcpExchange connects from local to remote, reads the greeting, sends
// payload and closes its write side first, then reads the echo to the end.
func tcpExchange(lab *netnsLab, ns, local, remote string, payload []byte) (greeting string, err error) {
	c, err := lab.dial(ns, "tcp", local, remote, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	greeting, err = br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("greeting: %w", err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	echo, err := io.ReadAll(br)
	if err != nil {
		return greeting, fmt.Errorf("echo: %w", err)
	}
	if err := <-werr; err != nil {
		return greeting, fmt.Errorf("send: %w", err)
	}
	if !bytes.Equal(echo, payload) {
		return greeting, fmt.Errorf("echo is %d bytes, not the %d sent", len(echo), len(payload))
	}
	return strings.TrimSpace(greeting), nil
}

// udpExchange sends one datagram from local to remote on a connected socket
// (which takes replies only from remote) and returns the reply, retrying a
// few times as a UDP client does.
func udpExchange(lab *netnsLab, ns, local, remote, msg string) (string, error) {
	c, err := lab.dial(ns, "udp", local, remote, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for try := 0; try < 5; try++ {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", errors.New("no reply")
}

// dig asks the namespace's resolver (ippool) from source src.
func dig(t testing.TB, ns, src, qtype, name string) string {
	t.Helper()
	out, err := testcluster.Command(t, 30*time.Second, "ip", "netns", "exec", ns, "dig", "+short", "+time=2", "+tries=2", "-b", src, qtype, name).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s %s from %s: %v: %s", qtype, name, src, err, out)
	}
	return strings.TrimSpace(string(out))
}

// waitPoolSet waits until the connector's nftables set in ns holds the pool.
func waitPoolSet(t testing.TB, ns, want string, p *labProc) {
	t.Helper()
	var out []byte
	if !poll.Wait(30*time.Second, func() bool {
		out, _ = testcluster.Command(t, 30*time.Second, "ip", "netns", "exec", ns, "nft", "list", "set", "inet", "ippool", "pool4").CombinedOutput()
		select {
		case <-p.done:
			t.Fatalf("%s exited before its rules were in place", p.name)
		default:
		}
		return strings.Contains(string(out), want)
	}) {
		t.Fatalf("the connector's nftables set in %s never held %s: %s", ns, want, out)
	}
}

// isReset reports whether err is the peer's reset.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func subnet() int {
	b := make([]byte, 1)
	rand.Read(b)
	return 100 + int(b[0])%100
}

// TestConnector runs the real binary as a gateway between a client
// namespace, whose resolver is ippool, and an upstream namespace with the
// test's domains: DNS gives a pool address, TCP to it reaches the domain
// on the port dialed with bytes both ways (the sender closing first, too),
// UDP makes a round trip, two clients sharing one pool address each reach
// their own domain, an IPv6 flow to the v6 prefix reaches the domain of the
// IPv4 address inside it, an unmapped address is reset at once, a client
// past its flow limit is refused while another is served, and a clean stop
// removes the rules.
func TestConnector(t *testing.T) {
	lab := newLab(t)
	bin := testcluster.Binary(t)
	n := subnet()
	sub := func(format string, a ...any) string { return fmt.Sprintf(format, append([]any{n}, a...)...) }
	client, gw, up := lab.ns("client"), lab.ns("gw"), lab.ns("up")
	alice, bob, alice6 := sub("10.%d.1.2"), sub("10.%d.1.3"), sub("fd00:%d:1::2")
	gwClientSide, gwClientSide6 := sub("10.%d.1.1"), sub("fd00:%d:1::1")
	upA, upB := sub("10.%d.2.2"), sub("10.%d.2.3")
	lab.link(client, gw, []string{alice + "/24", bob + "/24", alice6 + "/64"}, []string{gwClientSide + "/24", gwClientSide6 + "/64"})
	lab.link(gw, up, []string{sub("10.%d.2.1/24")}, []string{upA + "/24", upB + "/24"})
	lab.ip("-n", client, "route", "add", "default", "via", gwClientSide)
	lab.ip("-6", "-n", client, "route", "add", connV6Prefix, "via", gwClientSide6)
	lab.resolvConf(client, gwClientSide)

	upstream := startUpstreamNet(lab, up, upA, map[string]string{"a.test": upA, "b.test": upB}, []string{upA, upB}, []int{8080, 9090}, 5300)

	// alice's IPv4 and IPv6 addresses are one client, as a client map
	// makes them; bob is named by his address.
	clientMap := filepath.Join(t.TempDir(), "clients")
	if err := os.WriteFile(clientMap, []byte(alice+" alice\n"+alice6+" alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := lab.start("gateway", gw, bin, "serve", "--data-dir", filepath.Join(t.TempDir(), "data"),
		"--http-addr", "127.0.0.1:7480", "--cluster-addr", "127.0.0.1:7481",
		"--dns-addr", gwClientSide+":53", "--dns-upstream", upA+":53", "--dns-domains", "test", "--dns-private-domains", "test",
		"--v6-prefix", connV6Prefix, "--dns-client-map", clientMap,
		"--connector", "--connector-client-flows", "4", "--log-level", "debug",
		// The upstreams are private addresses, which the connector
		// refuses unless allowed.
		"--connector-allow", sub("10.%d.2.0/24"))
	waitPoolSet(t, gw, "198.18.0.0/15", srv)

	poolA := dig(t, client, alice, "A", "a.test")
	if poolA != "198.18.0.0" {
		t.Fatalf("alice's A for a.test is %q, want the pool's first address", poolA)
	}
	if got := dig(t, client, alice, "AAAA", "a.test"); got != "fd7a:115c:a1e0:b1a::c612:0" {
		t.Fatalf("alice's AAAA for a.test is %q", got)
	}
	if poolB := dig(t, client, bob, "A", "b.test"); poolB != poolA {
		t.Fatalf("bob's A for b.test is %q, want the same pool address as alice's a.test (%s)", poolB, poolA)
	}

	payload := make([]byte, 1<<20)
	rand.Read(payload)
	for _, port := range []int{8080, 9090} {
		g, err := tcpExchange(lab, client, alice, fmt.Sprintf("%s:%d", poolA, port), payload)
		if err != nil || g != fmt.Sprintf("hello %s:%d", upA, port) {
			t.Fatalf("alice to %s:%d: %q %v", poolA, port, g, err)
		}
	}
	if g, err := tcpExchange(lab, client, bob, poolA+":8080", payload[:1000]); err != nil || g != "hello "+upB+":8080" {
		t.Fatalf("bob to %s:8080 reached %q (%v), want b.test at %s", poolA, g, err, upB)
	}
	if g, err := tcpExchange(lab, client, alice6, "[fd7a:115c:a1e0:b1a::c612:0]:9090", payload[:5000]); err != nil || g != "hello "+upA+":9090" {
		t.Fatalf("alice over IPv6: %q %v", g, err)
	}
	if r, err := udpExchange(lab, client, alice, poolA+":5300", "ping"); err != nil || r != fmt.Sprintf("from %s:5300: ping", upA) {
		t.Fatalf("UDP round trip: %q %v", r, err)
	}
	if r, err := udpExchange(lab, client, bob, poolA+":5300", "pong"); err != nil || r != fmt.Sprintf("from %s:5300: pong", upB) {
		t.Fatalf("bob's UDP round trip: %q %v", r, err)
	}
	if r, err := udpExchange(lab, client, alice6, "[fd7a:115c:a1e0:b1a::c612:0]:5300", "ping6"); err != nil || r != fmt.Sprintf("from %s:5300: ping6", upA) {
		t.Fatalf("alice's UDP round trip over IPv6: %q %v", r, err)
	}

	// An address nobody was given: the connection is reset at once.
	t0 := time.Now()
	c, err := lab.dial(client, "tcp", alice, "198.18.0.77:8080", 2*time.Second)
	if err == nil {
		_, err = readAll(c, 3*time.Second)
		c.Close()
	}
	if !isReset(err) || time.Since(t0) > time.Second {
		t.Fatalf("unmapped address: %v after %v, want a reset at once", err, time.Since(t0))
	}

	// alice's two UDP flows (IPv4 and IPv6) live until their idle timeout;
	// with two TCP flows held she is at her limit of four: a fifth is
	// refused, bob is served. The TCP flows above are over for the client
	// once it has read their answers, but the connector counts one until
	// both of its halves are done: wait for that, or a slow teardown on a
	// loaded machine takes a place of the four.
	if !poll.Wait(10*time.Second, func() bool {
		out, _ := testcluster.Command(t, 10*time.Second, "ip", "netns", "exec", gw, "curl", "-s", "http://127.0.0.1:7480/metrics").Output()
		return strings.Contains(string(out), `ippool_connector_active_flows{proto="tcp"} 0`+"\n")
	}) {
		t.Fatal("the connector still counts TCP flows the client has finished")
	}
	var held []net.Conn
	for range 2 {
		c, err := lab.dial(client, "tcp", alice, poolA+":8080", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Fatalf("held flow: %v", err)
		}
	}
	c, err = lab.dial(client, "tcp", alice, poolA+":8080", 2*time.Second)
	if err == nil {
		_, err = readAll(c, 3*time.Second)
		c.Close()
	}
	if !isReset(err) {
		t.Fatalf("alice's fifth flow: %v, want a reset", err)
	}
	if g, err := tcpExchange(lab, client, bob, poolA+":9090", []byte("bob")); err != nil || g != "hello "+upB+":9090" {
		t.Fatalf("bob while alice is at her limit: %q %v", g, err)
	}
	for _, c := range held {
		c.Close()
	}

	ns := func(s string) float64 { return lab.metric(gw, "127.0.0.1:7480", s) }
	// A flow is counted when it ends, and the held ones end after their
	// Close reaches the gateway: wait for the counts, then report the short.
	least := map[string]float64{
		`ippool_connector_flows_total{proto="tcp",result="relayed"}`:     7,
		`ippool_connector_flows_total{proto="udp",result="relayed"}`:     0, // UDP flows end only after their idle timeout
		`ippool_connector_flows_total{proto="tcp",result="no_mapping"}`:  1,
		`ippool_connector_flows_total{proto="tcp",result="limited"}`:     1,
		`ippool_connector_bytes_total{direction="upstream",proto="tcp"}`: 2 << 20,
		`ippool_connector_active_flows{proto="udp"}`:                     3,
		`ippool_connector_dial_seconds_count`:                            9,
	}
	short := func() (out []string) {
		for sample, want := range least {
			if v := ns(sample); v < want {
				out = append(out, fmt.Sprintf("%s = %v, want at least %v", sample, v, want))
			}
		}
		return out
	}
	poll.Wait(10*time.Second, func() bool { return len(short()) == 0 })
	for _, s := range short() {
		t.Error(s)
	}
	if n := upstream.asked("a.test"); n < 1 || n > 3 {
		t.Errorf("upstream asked %d times for a.test: the connector must resolve through the DNS front end's cache", n)
	}

	srv.signal(syscall.SIGTERM)
	if !srv.wait(15 * time.Second) {
		t.Fatal("gateway did not stop on SIGTERM")
	}
	out, _ := testcluster.Command(t, 30*time.Second, "ip", "netns", "exec", gw, "nft", "list", "tables").CombinedOutput()
	rules, _ := testcluster.Command(t, 30*time.Second, "ip", "-n", gw, "rule").CombinedOutput()
	if strings.Contains(string(out), "ippool") || strings.Contains(string(rules), "7490") {
		t.Fatalf("rules left after a clean stop:\n%s\n%s", out, rules)
	}
	if _, err := netip.ParseAddr(poolA); err != nil {
		t.Fatal(err)
	}
}

// TestConnectorFairFlows is issue 28's finding 4: with
// --connector-client-flows 4 --connector-max-flows 6, attackers from two
// addresses holding every flow the gateway lets them open (the upstream
// never closes them) leave a third client room for its flow. A third
// attacker then takes the last place; the client still gets a flow, in
// the place of the quietest flow of the attacker furthest over its share.
func TestConnectorFairFlows(t *testing.T) {
	lab := newLab(t)
	n := subnet()
	sub := func(format string, a ...any) string { return fmt.Sprintf(format, append([]any{n}, a...)...) }
	client, gw, up := lab.ns("client"), lab.ns("gw"), lab.ns("up")
	atk1, atk2, atk3, victim, gwC := sub("10.%d.1.2"), sub("10.%d.1.3"), sub("10.%d.1.5"), sub("10.%d.1.4"), sub("10.%d.1.1")
	upA := sub("10.%d.2.2")
	lab.link(client, gw, []string{atk1 + "/24", atk2 + "/24", atk3 + "/24", victim + "/24"}, []string{gwC + "/24"})
	lab.link(gw, up, []string{sub("10.%d.2.1/24")}, []string{upA + "/24"})
	lab.ip("-n", client, "route", "add", "default", "via", gwC)
	lab.resolvConf(client, gwC)
	startUpstreamNet(lab, up, upA, map[string]string{"a.test": upA}, []string{upA}, []int{8080}, 5300)
	gwp := startGateway(t, lab, "gateway", gw, gwC, upA+":53",
		"--connector-client-flows", "4", "--connector-max-flows", "6", "--connector-allow", sub("10.%d.2.0/24"))
	defer stopGateway(t, gwp)

	pa := make(map[string]string)
	for _, src := range []string{atk1, atk2, atk3, victim} {
		pa[src] = dig(t, client, src, "A", "a.test")
	}
	// Each attacker in turn opens flows until one is refused and keeps
	// those relayed (greeted by the upstream) open.
	held := make(map[string][]net.Conn)
	hold := func(atk string) {
		for range 8 {
			c, err := lab.dial(client, "tcp", atk, pa[atk]+":8080", 2*time.Second)
			if err != nil {
				break
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				c.Close()
				if !isReset(err) {
					t.Fatalf("%s: %v, want a greeting or a reset", atk, err)
				}
				break
			}
			held[atk] = append(held[atk], c)
			t.Cleanup(func() { c.Close() })
		}
	}
	hold(atk1)
	hold(atk2)
	n1, n2 := len(held[atk1]), len(held[atk2])
	t.Logf("the attackers hold %d and %d flows", n1, n2)
	if n1+n2 >= 6 {
		t.Fatalf("the attackers hold %d and %d flows, the whole table", n1, n2)
	}
	if g, err := tcpExchange(lab, client, victim, pa[victim]+":8080", []byte("victim")); err != nil || g != "hello "+upA+":8080" {
		t.Fatalf("the third client while the attackers hold %d and %d: %q %v", n1, n2, g, err)
	}
	if v := lab.metric(gw, guardHTTPAddr, `ippool_connector_flows_total{proto="tcp",result="limited"}`); v < 2 {
		t.Errorf("%v flows counted limited, want one per attacker", v)
	}
	if v := lab.metric(gw, guardHTTPAddr, "ippool_connector_busiest_client_flows"); v != float64(max(n1, n2)) {
		t.Errorf("busiest client's flows %v, want %d", v, max(n1, n2))
	}

	// The third attacker's flows and the first two's fill the table.
	poll.Until(t, 10*time.Second, "the client's flow to end", func() bool {
		return lab.metric(gw, guardHTTPAddr, `ippool_connector_active_flows{proto="tcp"}`) == float64(n1+n2)
	})
	hold(atk3)
	if total := n1 + n2 + len(held[atk3]); total != 6 {
		t.Fatalf("three attackers hold %d, %d and %d flows; want the table's 6 taken", n1, n2, len(held[atk3]))
	}
	if g, err := tcpExchange(lab, client, victim, pa[victim]+":8080", []byte("victim")); err != nil || g != "hello "+upA+":8080" {
		t.Fatalf("the client with the table full: %q %v, want its flow in a reclaimed place", g, err)
	}
	if v := lab.metric(gw, guardHTTPAddr, "ippool_connector_reclaimed_flows_total"); v != 1 {
		t.Errorf("%v flows reclaimed, want 1", v)
	}
	// The place came from the attacker holding the most: one of its flows
	// was reset.
	resets := 0
	for _, c := range held[atk1] {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); isReset(err) || errors.Is(err, io.EOF) {
			resets++
		}
	}
	if resets != 1 {
		t.Errorf("%d of the first attacker's %d flows ended, want 1", resets, n1)
	}
}

// TestConnectorFailover: two gateways, each one server of a three-server
// cluster running the connector, serve the same clients. A client resolves
// and connects through the first; the first is SIGKILLed and the client's
// route moves to the second (what VRRP or an ECMP route does); the same pool
// address reaches the same domain through the second, with no new DNS query:
// the mapping was replicated when the DNS answer was made.
func TestConnectorFailover(t *testing.T) {
	lab := newLab(t)
	bin := testcluster.Binary(t)
	n := subnet()
	ip := func(host int) string { return fmt.Sprintf("10.%d.0.%d", n, host) }
	plug := lab.bridge("hub")
	client, g1, g2, s3, up := lab.ns("client"), lab.ns("g1"), lab.ns("g2"), lab.ns("s3"), lab.ns("up")
	plug(client, ip(10)+"/24")
	plug(g1, ip(1)+"/24")
	plug(g2, ip(2)+"/24")
	plug(s3, ip(3)+"/24")
	plug(up, ip(100)+"/24")
	lab.ip("-n", client, "route", "add", "198.18.0.0/15", "via", ip(1))
	lab.resolvConf(client, ip(1))
	upstream := startUpstreamNet(lab, up, ip(100), map[string]string{"a.test": ip(100)}, []string{ip(100)}, []int{8080}, 5300)

	tlsDir := filepath.Join(t.TempDir(), "tls")
	if out, err := testcluster.Command(t, time.Minute, bin, "tls", "init", "--dir", tlsDir, "--servers", "3").CombinedOutput(); err != nil {
		t.Fatalf("tls init: %v: %s", err, out)
	}
	join := strings.Join([]string{ip(1) + ":7481", ip(2) + ":7481", ip(3) + ":7481"}, ",")
	var procs []*labProc
	for i, ns := range []string{g1, g2, s3} {
		certs := filepath.Join(tlsDir, fmt.Sprintf("server-%d", i+1))
		args := []string{bin, "serve", "--id", fmt.Sprintf("s%d", i+1), "--data-dir", filepath.Join(t.TempDir(), "data"),
			"--http-addr", "127.0.0.1:7480", "--cluster-addr", ip(i+1) + ":7481", "--join", join, "--bootstrap-expect", "3",
			"--tls-ca", filepath.Join(certs, "ca.pem"), "--tls-cert", filepath.Join(certs, "cert.pem"), "--tls-key", filepath.Join(certs, "key.pem"),
			"--log-level", "debug"}
		if ns != s3 {
			args = append(args, "--connector", "--connector-allow", ip(100)+"/32", "--dns-addr", ip(i+1)+":53", "--dns-upstream", ip(100)+":53", "--dns-domains", "test")
		}
		procs = append(procs, lab.start(fmt.Sprintf("s%d", i+1), ns, args...))
	}
	waitPoolSet(t, g1, "198.18.0.0/15", procs[0])
	waitPoolSet(t, g2, "198.18.0.0/15", procs[1])

	src := ip(10)
	pa := dig(t, client, src, "A", "a.test")
	if pa != "198.18.0.0" {
		t.Fatalf("A for a.test: %q", pa)
	}
	if g, err := tcpExchange(lab, client, src, pa+":8080", []byte("through g1")); err != nil || g != "hello "+ip(100)+":8080" {
		t.Fatalf("through g1: %q %v", g, err)
	}
	relayed := func(gw string) float64 {
		return lab.metric(gw, "127.0.0.1:7480", `ippool_connector_flows_total{proto="tcp",result="relayed"}`)
	}
	// A flow is counted once both of its sides have ended at the gateway.
	poll.Wait(10*time.Second, func() bool { return relayed(g1) >= 1 })
	if v := relayed(g1); v != 1 {
		t.Fatalf("g1 relayed %v flows, want 1", v)
	}

	leader := "?"
	if resp, err := lab.httpClient(g1).Get("http://127.0.0.1:7480/v1/cluster"); err == nil {
		var st struct {
			Leader string `json:"leader_id"`
		}
		json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		leader = st.Leader
	}
	procs[0].signal(syscall.SIGKILL)
	if !procs[0].wait(10 * time.Second) {
		t.Fatal("s1 did not die")
	}
	lab.ip("-n", client, "route", "replace", "198.18.0.0/15", "via", ip(2))
	t0 := time.Now()
	var g string
	var err error
	// A refused try (the surviving servers electing a leader while the
	// lookup waits for its read barrier) is what a client retries.
	poll.Wait(20*time.Second, func() bool {
		g, err = tcpExchange(lab, client, src, pa+":8080", []byte("through g2"))
		return err == nil
	})
	if err != nil || g != "hello "+ip(100)+":8080" {
		t.Fatalf("through g2 after s1 died: %q %v", g, err)
	}
	t.Logf("the pool address reached a.test through g2 %v after s1 was killed (the leader was %s)", time.Since(t0).Round(time.Millisecond), leader)
	if !poll.Wait(10*time.Second, func() bool { return relayed(g2) >= 1 }) {
		t.Fatalf("g2 relayed %v flows", relayed(g2))
	}
	if v := lab.metric(g2, "127.0.0.1:7480", "ippool_dns_queries_total"); v != 0 {
		t.Fatalf("g2's DNS was asked %v queries; the client must not need a new DNS answer", v)
	}
	// g1's DNS asked upstream once for the answer; g2's connector once to
	// resolve the domain it found in the replicated mapping.
	if n := upstream.asked("a.test"); n > 2 {
		t.Errorf("upstream asked %d times for a.test", n)
	}
}

// TestConnectorDemoScript runs examples/connector-demo.sh as docs/connector.md
// shows it: curl through the connector reaches the domain from the
// gateway's address, and the script leaves no namespace behind.
func TestConnectorDemoScript(t *testing.T) {
	newLab(t) // skips where namespaces cannot be made
	out := runScript(t, nil, "examples/connector-demo.sh")
	for _, want := range []string{
		"hello from app.demo at 10.250.2.2:80; you came from 10.250.2.1:",
		"hello from api.demo at 10.250.2.2:80; you came from 10.250.2.1:",
		`ippool_connector_flows_total{proto="tcp",result="no_mapping"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
	if left, _ := testcluster.Command(t, 30*time.Second, "ip", "netns", "list").Output(); strings.Contains(string(left), "ippd") {
		t.Errorf("the demo left namespaces: %s", left)
	}
}
