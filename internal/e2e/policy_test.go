//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

// TestPolicyEndToEnd is issue 29's: two clients and a gateway in network
// namespaces, in a cluster of three servers where only g1 runs DNS and the
// connector. The policy is set through s2, and g1 enforces it:
//   - a client whose mapping was made before the policy denied it is reset
//     when it sends to its address, and gets NXDOMAIN when it asks again,
//     while the other client goes on;
//   - a port rule lets 443 through and refuses 22 and 8080;
//   - an egress rule with two source addresses on the gateway makes the
//     upstream see, for each domain, the address the policy chose.
func TestPolicyEndToEnd(t *testing.T) {
	lab := newLab(t)
	bin := testcluster.Binary(t)
	n := subnet()
	ip := func(host int) string { return fmt.Sprintf("10.%d.0.%d", n, host) }
	plug := lab.bridge("hub")
	c1, c2, g1, s2, s3, up := lab.ns("c1"), lab.ns("c2"), lab.ns("g1"), lab.ns("s2"), lab.ns("s3"), lab.ns("up")
	plug(c1, ip(10)+"/24")
	plug(c2, ip(11)+"/24")
	plug(g1, ip(1)+"/24", ip(21)+"/24", ip(22)+"/24")
	plug(s2, ip(2)+"/24")
	plug(s3, ip(3)+"/24")
	plug(up, ip(100)+"/24")
	for _, c := range []string{c1, c2} {
		lab.ip("-n", c, "route", "add", "198.18.0.0/15", "via", ip(1))
		lab.resolvConf(c, ip(1))
	}
	egressNames := []string{"e1.egress.test", "e2.egress.test", "e3.egress.test", "e4.egress.test", "e5.egress.test", "e6.egress.test"}
	zone := map[string]string{"secret.test": ip(100), "web.test": ip(100)}
	for _, name := range egressNames {
		zone[name] = ip(100)
	}
	startUpstreamNet(lab, up, ip(100), zone, []string{ip(100)}, []int{443, 22, 8080}, 5300)
	// Says who connected: the source address the gateway dialled from.
	whoLn := lab.listen(up, ip(100)+":9000")
	go func() {
		for {
			c, err := whoLn.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello %s\n", c.RemoteAddr())
			c.Close()
		}
	}()

	tlsDir := filepath.Join(t.TempDir(), "tls")
	if out, err := testcluster.Command(t, time.Minute, bin, "tls", "init", "--dir", tlsDir, "--servers", "3").CombinedOutput(); err != nil {
		t.Fatalf("tls init: %v: %s", err, out)
	}
	join := strings.Join([]string{ip(1) + ":7481", ip(2) + ":7481", ip(3) + ":7481"}, ",")
	var g1p *labProc
	for i, ns := range []string{g1, s2, s3} {
		certs := filepath.Join(tlsDir, fmt.Sprintf("server-%d", i+1))
		args := []string{bin, "serve", "--id", fmt.Sprintf("s%d", i+1), "--data-dir", filepath.Join(t.TempDir(), "data"),
			"--http-addr", "127.0.0.1:7480", "--cluster-addr", ip(i+1) + ":7481", "--join", join, "--bootstrap-expect", "3",
			"--tls-ca", filepath.Join(certs, "ca.pem"), "--tls-cert", filepath.Join(certs, "cert.pem"), "--tls-key", filepath.Join(certs, "key.pem"),
			"--log-level", "debug"}
		if ns == g1 {
			args = append(args, "--connector", "--connector-allow", ip(100)+"/32", "--dns-addr", ip(1)+":53", "--dns-upstream", ip(100)+":53", "--dns-domains", "test")
		}
		p := lab.start(fmt.Sprintf("s%d", i+1), ns, args...)
		if ns == g1 {
			g1p = p
		}
	}
	waitPoolSet(t, g1, "198.18.0.0/15", g1p)

	// Both clients map secret.test before any policy.
	p1, p2 := dig(t, c1, ip(10), "A", "secret.test"), dig(t, c2, ip(11), "A", "secret.test")
	if !strings.HasPrefix(p1, "198.1") || !strings.HasPrefix(p2, "198.1") {
		t.Fatalf("A for secret.test: %q and %q, want pool addresses", p1, p2)
	}
	for c, src := range map[string]string{c1: ip(10), c2: ip(11)} {
		pa := map[string]string{c1: p1, c2: p2}[c]
		poll.Until(t, 20*time.Second, "a flow to secret.test before the policy", func() bool {
			g, err := tcpExchange(lab, c, src, pa+":443", []byte("before"))
			return err == nil && g == "hello "+ip(100)+":443"
		})
	}

	doc := fmt.Sprintf(`{
		// issue 29's end-to-end test
		"rules": [
			{"name": "no-ssh", "clients": ["*"], "domains": ["*"], "ports": ["tcp:22"], "action": "deny"},
			{"name": "c2-no-secret", "clients": ["cidr:%s/32"], "domains": ["secret.test"], "action": "deny"},
			{"name": "web-443", "clients": ["*"], "domains": ["web.test"], "ports": ["tcp:443"], "action": "allow"},
			{"name": "web-rest", "clients": ["*"], "domains": ["web.test"], "action": "deny"},
			{"name": "anchor", "clients": ["*"], "domains": ["*.egress.test"], "action": "egress", "egress": ["%s", "%s"]},
		],
	}`, ip(11), ip(21), ip(22))
	setPolicy(t, lab, s2, doc)

	// The change made on s2 reaches g1's connector: c2's next flow to the
	// address it was given before is reset, within the staleness bound.
	poll.Until(t, 20*time.Second, "c2's flow to secret.test to be refused on g1", func() bool {
		return refusedFlow(lab, c2, ip(11), p2+":443") == nil
	})
	if g, err := tcpExchange(lab, c1, ip(10), p1+":443", []byte("after")); err != nil || g != "hello "+ip(100)+":443" {
		t.Errorf("c1 to secret.test after the policy: %q %v, want relayed", g, err)
	}
	if status := nsDigStatus(t, c2, ip(11), "secret.test"); status != "NXDOMAIN" {
		t.Errorf("c2's A for secret.test: %s, want NXDOMAIN", status)
	}
	if status := nsDigStatus(t, c1, ip(10), "secret.test"); status != "NOERROR" {
		t.Errorf("c1's A for secret.test: %s, want NOERROR", status)
	}

	// Ports.
	web := dig(t, c1, ip(10), "A", "web.test")
	if g, err := tcpExchange(lab, c1, ip(10), web+":443", []byte("web")); err != nil || g != "hello "+ip(100)+":443" {
		t.Errorf("web.test:443: %q %v, want relayed", g, err)
	}
	for _, port := range []string{"22", "8080"} {
		if err := refusedFlow(lab, c1, ip(10), web+":"+port); err != nil {
			t.Errorf("web.test:%s: %v", port, err)
		}
	}
	denied := func() float64 {
		return lab.metric(g1, "127.0.0.1:7480", `ippool_connector_flows_total{proto="tcp",result="denied"}`)
	}
	// A flow is counted once both of its sides have ended at the gateway.
	if !poll.Wait(10*time.Second, func() bool { return denied() >= 3 }) {
		t.Errorf("denied flows counted %v, want at least 3", denied())
	}

	// Egress: each domain's flows leave from the address the policy's hash
	// of client and domain chose, and the six domains use both.
	pol, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, name := range egressNames {
		d := pol.CheckFlow(&policy.Client{ID: ip(10)}, name, policy.TCP, 9000)
		want := d.EgressAddr(ip(10), name).String()
		used[want] = true
		pa := dig(t, c1, ip(10), "A", name)
		c, err := lab.dial(c1, "tcp", ip(10), pa+":9000", 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := readAll(c, 5*time.Second)
		c.Close()
		if err != nil || !strings.HasPrefix(string(got), "hello "+want+":") {
			t.Errorf("%s: the upstream saw %q (%v), want the egress address %s", name, bytes.TrimSpace(got), err, want)
		}
	}
	if len(used) != 2 {
		t.Errorf("the six domains used egress addresses %v, want both", used)
	}
}

// setPolicy sets the policy through the server in ns and waits for it.
func setPolicy(t *testing.T, lab *netnsLab, ns, doc string) {
	t.Helper()
	poll.Until(t, 30*time.Second, "PUT /v1/policy", func() bool {
		req, err := http.NewRequest(http.MethodPut, "http://127.0.0.1:7480/v1/policy", strings.NewReader(doc))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := lab.httpClient(ns).Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// nsDigStatus is the status word of dig's answer (NOERROR, NXDOMAIN, ...).
func nsDigStatus(t testing.TB, ns, src, name string) string {
	t.Helper()
	out, err := testcluster.Command(t, 30*time.Second, "ip", "netns", "exec", ns, "dig", "+noall", "+comments", "+time=2", "+tries=2", "-b", src, "A", name).CombinedOutput()
	if err != nil {
		t.Fatalf("dig A %s from %s: %v: %s", name, src, err, out)
	}
	_, rest, ok := strings.Cut(string(out), "status: ")
	if !ok {
		t.Fatalf("dig A %s: no status in %s", name, out)
	}
	status, _, _ := strings.Cut(rest, ",")
	return status
}

// TestPolicyInConsole: the console's policy page lists the rules with their
// hits on this server and tests a request against the live policy.
func TestPolicyInConsole(t *testing.T) {
	chromiumPath(t)
	s := testcluster.Start(t, 1, testcluster.Options{FirstIP: 128}).Servers[0]
	doc := `{
	// the console test's
	"rules": [
		{"name": "no-ssh", "clients": ["*"], "domains": ["*"], "ports": ["tcp:22"], "action": "deny"},
		{"name": "no-secret", "clients": ["id-prefix:guest-"], "domains": ["secret.example"], "action": "deny"},
	],
}`
	poll.Until(t, 30*time.Second, "PUT /v1/policy", func() bool {
		status, _, err := s.Do(t.Context(), http.MethodPut, "/v1/policy", []byte(doc))
		return err == nil && status == http.StatusOK
	})
	if status, e, _ := do(t, s, http.MethodPost, "/v1/clients/guest-1/domains/secret.example", nil); status != http.StatusForbidden {
		t.Fatalf("a denied allocation: %d %+v", status, e)
	}
	b := newBrowser(t, artifactDir(t, "policy-console"))
	b.open(s.URL() + "/ui/policy")
	b.waitFor("the rules with their hits", `(() => {
		const rows = [...document.querySelectorAll('#rules tbody tr')].map(r => [...r.cells].map(c => c.textContent).join('|'));
		return rows.length === 3 && rows[1] === '2|no-secret|deny|1' && rows[2] === '|default|allow|0' &&
			document.getElementById('policy-text').textContent.includes('// the console test');
	})()`, 15*time.Second)
	b.fill("#pt-client", "alice")
	b.fill("#pt-domain", "git.example")
	b.fill("#pt-port", "22")
	b.click("#policy-test button[type=submit]")
	b.waitFor("the test's answer", `document.getElementById('pt-result').textContent.startsWith('no-ssh: deny')`, 15*time.Second)
	b.shot("policy")
}
