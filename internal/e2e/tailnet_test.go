package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"tailscale.com/ipn"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/net/netns"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/tstest/integration"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/logger"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/wire"
)

// The tailnet test runs a whole tailnet on this machine, on loopback only:
// Tailscale's own test control server and DERP relay with STUN in this
// process (as tsnet's own tests do), three `ippool serve --tailnet`
// processes as the connector's cluster, and two client nodes (tsnet in this
// process). The upstream DNS and the domains' TCP servers are on loopback
// too; the servers are told they may dial them (--connector-allow), which
// the connector's guard otherwise refuses: on one machine every upstream is
// the machine's own.

const (
	tailnetTag    = "tag:ippool"
	tailnetOpsTag = "tag:ops"
	// Inside 100.64.0.0/10, the tailnet's own range, as natc users run
	// it (clear of the test control server's node addresses); the v6
	// prefix outside Tailscale's 4via6 range, whose addresses the tailnet
	// would not deliver.
	tailnetPool   = "100.80.0.0/24"
	tailnetV6     = "fd7a:115c:a1e0:a99c::/96"
	tailnetAuth   = "tskey-ippool-e2e"
	tailnetDomain = "tail-scale.ts.net"
	clusterPort   = 7481
	appPort       = 8443
)

// tailnetHTTP is the client of every request the tailnet tests make to a
// server's API: a request that is never answered fails the test within
// the timeout instead of holding it until `go test -timeout` (a DELETE
// once hung 11 minutes).
var tailnetHTTP = &http.Client{Timeout: 20 * time.Second}

// tsProc is one ippool server on the tailnet.
type tsProc struct {
	id, httpAddr, dataDir string
	cmd                   *exec.Cmd
	log                   string
	exited                chan struct{}
}

func (p *tsProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *tsProc) status(t *testing.T) (wire.Status, bool) {
	var st wire.Status
	resp, err := tailnetHTTP.Get("http://" + p.httpAddr + "/v1/cluster")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&st) == nil
}

func (p *tsProc) metric(name string) string {
	resp, err := tailnetHTTP.Get("http://" + p.httpAddr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return v
		}
	}
	return ""
}

// startTailnetServer starts `ippool serve --tailnet` as a process; the test
// kills it by its PID when it ends.
func startTailnetServer(t *testing.T, controlURL, upstream string, i int, extra ...string) *tsProc {
	t.Helper()
	ip := fmt.Sprintf("127.0.0.%d", 164+i)
	p := &tsProc{id: fmt.Sprintf("ts%d", i+1), dataDir: filepath.Join(t.TempDir(), "data"), exited: make(chan struct{})}
	p.httpAddr = testcluster.FreePort(t, ip)
	p.log = filepath.Join(t.TempDir(), p.id+".log")
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(testcluster.Binary(t), "serve", "--tailnet", "--cluster-tag", tailnetTag, "--control-url", controlURL,
		"--id", p.id, "--data-dir", p.dataDir, "--http-addr", p.httpAddr, "--cluster-addr", fmt.Sprintf("127.0.0.1:%d", clusterPort),
		"--bootstrap-expect", "3", "--pool", tailnetPool, "--v6-prefix", tailnetV6,
		"--dns-upstream", upstream, "--dns-domains", "test", "--connector-allow", "127.0.0.162/31",
		"--tailnet-http-allow", tailnetOpsTag, "--log-level", "debug")
	p.cmd.Args = append(p.cmd.Args, extra...)
	p.cmd.Env = append(os.Environ(), "TS_AUTHKEY="+tailnetAuth)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// Killed with the test binary even when it ends without running the
	// cleanup below (a `go test -timeout` panic).
	if err := testcluster.StartProcess(p.cmd); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		state := "still running at the end (killed now)"
		select {
		case <-p.exited:
			state = "had exited by itself: " + p.cmd.ProcessState.String()
		default:
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			lines := strings.Split(string(b), "\n")
			t.Logf("%s (pid %d) %s; last lines of its log:\n%s", p.id, p.cmd.Process.Pid, state, strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	return p
}

// startTestControl runs Tailscale's test control server, with a DERP relay
// and STUN, in this process on loopback. It hands out MagicDNS names under
// tail-scale.ts.net and the tags a node asks for.
func startTestControl(t *testing.T) *testcontrol.Server {
	t.Helper()
	// As tsnet's tests: the in-process nodes must not mark their sockets
	// for a tailscaled's routing rules, which this machine does not have.
	netns.SetEnabled(false)
	t.Cleanup(func() { netns.SetEnabled(true) })
	derpMap := integration.RunDERPAndSTUN(t, logger.Discard, "127.0.0.1")
	control := &testcontrol.Server{
		DERPMap:        derpMap,
		DNSConfig:      &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain: tailnetDomain,
		RequireAuthKey: tailnetAuth,
		// Non-nil: a node registering with tags gets them, as an auth key
		// made with those tags would give them.
		TagOwners: map[string][]string{tailnetTag: nil, tailnetOpsTag: nil},
		AllOnline: true,
		Logf:      logger.Discard,
	}
	control.HTTPTestServer = httptest.NewUnstartedServer(control)
	control.HTTPTestServer.Start()
	t.Cleanup(control.HTTPTestServer.Close)
	return control
}

// startAppServer serves TCP on addr: it greets with name, then echoes.
func startAppServer(t *testing.T, addr, name string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				io.Copy(c, c)
			}()
		}
	}()
}

// startTailnetClient brings up a client node in this process.
func startTailnetClient(t *testing.T, ctx context.Context, controlURL, name string, tags ...string) *tsnet.Server {
	t.Helper()
	s := &tsnet.Server{
		Dir: filepath.Join(t.TempDir(), name), ControlURL: controlURL, Hostname: name,
		Store: new(mem.Store), Ephemeral: true, AuthKey: tailnetAuth, AdvertiseTags: tags, UserLogf: t.Logf,
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Up(ctx); err != nil {
		t.Fatal(err)
	}
	lc, err := s.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	// Accept the subnet routes others advertise, as `tailscale set
	// --accept-routes` does.
	if _, err := lc.EditPrefs(ctx, &ipn.MaskedPrefs{Prefs: ipn.Prefs{RouteAll: true}, RouteAllSet: true}); err != nil {
		t.Fatal(err)
	}
	return s
}

// resolve asks the ippool server at dnsIP for name's A record, through the
// client's tailnet.
func resolve(ctx context.Context, c *tsnet.Server, dnsIP netip.Addr, name string) (netip.Addr, error) {
	return resolveType(ctx, c, dnsIP, name, dns.TypeA)
}

func resolveType(ctx context.Context, c *tsnet.Server, dnsIP netip.Addr, name string, qtype uint16) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, "udp", netip.AddrPortFrom(dnsIP, 53).String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	dc := &dns.Conn{Conn: conn}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	if err := dc.WriteMsg(q); err != nil {
		return netip.Addr{}, err
	}
	r, err := dc.ReadMsg()
	if err != nil {
		return netip.Addr{}, err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return netip.Addr{}, fmt.Errorf("%s: %s", name, r)
	}
	var ip net.IP
	switch rr := r.Answer[0].(type) {
	case *dns.A:
		ip = rr.A
	case *dns.AAAA:
		ip = rr.AAAA
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%s: %s", name, r)
	}
	if qtype == dns.TypeA {
		addr = addr.Unmap()
	}
	return addr, nil
}

// greeting connects through the client's tailnet and returns the first
// line the far end sends.
func greeting(ctx context.Context, c *tsnet.Server, dst netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, "tcp", dst.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(conn, "ping\n"); err != nil {
		return "", err
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	echo, err := br.ReadString('\n')
	if err != nil || echo != "ping\n" {
		return "", fmt.Errorf("echo %q, %v", echo, err)
	}
	return strings.TrimSpace(line), nil
}

func TestTailnetConnectorHA(t *testing.T) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	control := startTestControl(t)
	controlURL := control.HTTPTestServer.URL

	// The domains: app1.test and app2.test on loopback, same port.
	zone := map[string]string{"app1.test.": "127.0.0.162", "app2.test.": "127.0.0.163"}
	for name, ip := range zone {
		startAppServer(t, net.JoinHostPort(ip, fmt.Sprint(appPort)), strings.TrimSuffix(name, ".test."))
	}
	upstream := testcluster.StartUpstream(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		ip, ok := zone[strings.ToLower(q.Name)]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP(ip)})
		}
		w.WriteMsg(m)
	}))

	procs := make([]*tsProc, 3)
	for i := range procs {
		procs[i] = startTailnetServer(t, controlURL, upstream, i)
	}
	// One cluster of three, found through the tag: every server knows the
	// same leader and all three servers.
	var leader *tsProc
	poll.Until(t, 2*time.Minute, "the three tailnet servers to form one cluster", func() bool {
		leader = nil
		for _, p := range procs {
			st, ok := p.status(t)
			if !ok || st.LeaderID == "" || len(st.Servers) != 3 {
				return false
			}
			if st.LeaderID == p.id {
				leader = p
			}
		}
		return leader != nil
	})
	t.Logf("cluster formed after %v; leader %s", time.Since(start).Round(time.Millisecond), leader.id)

	// Each server advertises the pool and the v6 prefix as subnet routes;
	// the control server must approve them. testcontrol approves what the
	// test sets (SetSubnetRoutes) and makes every approved router the
	// primary for its routes, with no failover of its own, so the test
	// approves one router, the leader, and after killing it moves the
	// routes to a survivor, as the real control server's failover does
	// when a primary subnet router goes offline.
	nodes := map[string]*tailcfg.Node{}
	wantRoutes := []netip.Prefix{netip.MustParsePrefix(tailnetPool), netip.MustParsePrefix(tailnetV6)}
	poll.Until(t, time.Minute, "every server to advertise the pool and the v6 prefix", func() bool {
		for _, n := range control.AllNodes() {
			if !n.Hostinfo.Valid() {
				continue
			}
			if r := n.Hostinfo.RoutableIPs(); slices.Equal(r.AsSlice(), wantRoutes) {
				nodes[n.Hostinfo.Hostname()] = n
			}
		}
		return len(nodes) == 3
	})
	for id, n := range nodes {
		if !slices.Contains(n.Tags, tailnetTag) {
			t.Fatalf("%s lacks the cluster tag: %v", id, n.Tags)
		}
	}
	tailIP := func(id string) netip.Addr { return nodes[id].Addresses[0].Addr() }
	control.SetSubnetRoutes(nodes[leader.id].Key, wantRoutes)

	clientA := startTailnetClient(t, ctx, controlURL, "client-a", tailnetOpsTag)
	clientB := startTailnetClient(t, ctx, controlURL, "client-b")
	t.Logf("clients up after %v", time.Since(start).Round(time.Millisecond))

	// A asks for app1 then app2, B for app2 only, each through another
	// server: every client has the whole pool, so A's first address is
	// app1's and B's is app2's, the same address for other domains.
	var follower *tsProc
	for _, p := range procs {
		if p != leader {
			follower = p
		}
	}
	ask := func(c *tsnet.Server, via *tsProc, name string) netip.Addr {
		t.Helper()
		var a netip.Addr
		poll.Until(t, time.Minute, name+" through "+via.id+"'s tailnet DNS", func() bool {
			var err error
			a, err = resolve(ctx, c, tailIP(via.id), name)
			return err == nil
		})
		return a
	}
	a1 := ask(clientA, follower, "app1.test")
	a2 := ask(clientA, leader, "app2.test")
	b2 := ask(clientB, follower, "app2.test")
	if a1 != b2 || a1 == a2 {
		t.Fatalf("A: app1 %v, app2 %v; B: app2 %v: want each client's first name at the pool's first address", a1, a2, b2)
	}
	flow := func(c *tsnet.Server, dst netip.Addr, want, what string) {
		t.Helper()
		var got string
		var err error
		poll.Until(t, time.Minute, what, func() bool {
			got, err = greeting(ctx, c, netip.AddrPortFrom(dst, appPort))
			return err == nil && got == want
		})
	}
	flow(clientA, a1, "app1", "client A's flow to "+a1.String()+" to reach app1")
	flow(clientB, b2, "app2", "client B's flow to the same address to reach app2")
	flow(clientA, a2, "app2", "client A's flow to "+a2.String()+" to reach app2")
	// AAAA is the pool address in the v6 prefix, and its flows are
	// carried too (the prefix is a subnet route as well).
	a1v6, err := resolveType(ctx, clientA, tailIP(follower.id), "app1.test", dns.TypeAAAA)
	if err != nil {
		t.Fatal(err)
	}
	if b := a1v6.As16(); !netip.MustParsePrefix(tailnetV6).Contains(a1v6) || netip.AddrFrom4([4]byte(b[12:])) != a1 {
		t.Fatalf("AAAA of app1.test for A: %v, want %v in %s", a1v6, a1, tailnetV6)
	}
	flow(clientA, a1v6, "app1", "client A's flow to "+a1v6.String()+" to reach app1")
	t.Logf("flows carried after %v", time.Since(start).Round(time.Millisecond))

	// Separate mappings, kept by each client's stable node ID.
	stA, _ := clientA.Up(ctx)
	stB, _ := clientB.Up(ctx)
	idA, idB := string(stA.Self.ID), string(stB.Self.ID)
	for _, tc := range []struct{ client, addr, domain string }{{idA, a1.String(), "app1.test"}, {idA, a2.String(), "app2.test"}, {idB, b2.String(), "app2.test"}} {
		resp, err := tailnetHTTP.Get("http://" + follower.httpAddr + "/v1/clients/" + tc.client + "/ips/" + tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		var m mapping
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if m.Domain != tc.domain {
			t.Fatalf("client %s, %s: %+v, want %s", tc.client, tc.addr, m, tc.domain)
		}
	}

	// Nodes without the cluster tag are refused at the cluster port: B
	// (untagged) and A (tag:ops only).
	for _, c := range []*tsnet.Server{clientA, clientB} {
		conn, err := c.Dial(ctx, "tcp", netip.AddrPortFrom(tailIP(follower.id), clusterPort).String())
		if err != nil {
			t.Fatalf("dialing the cluster port: %v", err)
		}
		conn.Write([]byte{'C'})
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(make([]byte, 1))
		conn.Close()
		if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("an untagged node's cluster connection was not closed: %d, %v", n, err)
		}
	}
	poll.Until(t, 10*time.Second, "the refusals to be counted", func() bool {
		return follower.metric("ippool_cluster_peers_refused_total") == "2"
	})

	// The HTTP API on the tailnet answers tag:ops (A) and refuses B.
	for c, want := range map[*tsnet.Server]int{clientA: 200, clientB: 403} {
		hc := c.HTTPClient()
		hc.Timeout = 5 * time.Second
		_, port, _ := net.SplitHostPort(follower.httpAddr)
		resp, err := hc.Get("http://" + net.JoinHostPort(tailIP(follower.id).String(), port) + "/v1/cluster")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("tailnet HTTP API: %d, want %d", resp.StatusCode, want)
		}
	}

	// A policy by tag: tag:ops (A) may have app1.test, no other node may.
	// A's DNS and flow go on; B, untagged, gets NXDOMAIN for it. The tags
	// come from WhoIs, as the client IDs do.
	setTailnetPolicy := func(doc string) {
		t.Helper()
		poll.Until(t, 30*time.Second, "PUT /v1/policy", func() bool {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+follower.httpAddr+"/v1/policy", strings.NewReader(doc))
			resp, err := tailnetHTTP.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	setTailnetPolicy(`{"rules": [
		{"name": "ops-app1", "clients": ["` + tailnetOpsTag + `"], "domains": ["app1.test"], "action": "allow"},
		{"name": "no-app1", "clients": ["*"], "domains": ["app1.test"], "action": "deny"},
	]}`)
	poll.Until(t, 30*time.Second, "B to get NXDOMAIN for app1.test", func() bool {
		_, err := resolve(ctx, clientB, tailIP(follower.id), "app1.test")
		return err != nil && strings.Contains(err.Error(), "NXDOMAIN")
	})
	if got := ask(clientA, follower, "app1.test"); got != a1 {
		t.Fatalf("A's app1.test under the policy: %v, want %v", got, a1)
	}
	flow(clientA, a1, "app1", "client A's (tag:ops) flow to app1 under the policy")
	setTailnetPolicy(`{}`)

	// Kill the leader (SIGKILL); the routes move to a survivor, and both
	// clients' next flows, and their DNS, go through the survivors.
	leader.kill()
	killedAt := time.Now()
	control.SetSubnetRoutes(nodes[leader.id].Key, nil)
	control.SetSubnetRoutes(nodes[follower.id].Key, wantRoutes)
	flow(clientA, a1, "app1", "client A's flow to app1 after the leader died")
	flow(clientB, b2, "app2", "client B's flow to app2 after the leader died")
	if got := ask(clientB, follower, "app2.test"); got != b2 {
		t.Fatalf("B's app2 after the failover: %v, want %v", got, b2)
	}
	t.Logf("flows through the survivors %v after the kill; whole test %v", time.Since(killedAt).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// Removal works as on plain networks: the dead server is removed
	// through a survivor's API, and the two left still allocate.
	// It is sent about a second after the kill, when the survivors may
	// not have a new leader yet: the server then answers no_quorum within
	// its write timeout, and the request is sent again.
	var removal string
	if !poll.Wait(time.Minute, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, "http://"+follower.httpAddr+"/v1/cluster/servers/"+leader.id, nil)
		resp, err := tailnetHTTP.Do(req)
		if err != nil {
			removal = err.Error()
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		removal = fmt.Sprintf("%d %s", resp.StatusCode, b)
		return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent
	}) {
		t.Fatalf("removing %s through %s: %s", leader.id, follower.id, removal)
	}
	poll.Until(t, time.Minute, "the cluster to list two servers", func() bool {
		resp, err := tailnetHTTP.Get("http://" + follower.httpAddr + "/v1/cluster")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Servers []struct{ ID string } `json:"servers"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.Servers) != 2 {
			return false
		}
		for _, sv := range st.Servers {
			if sv.ID == leader.id {
				return false
			}
		}
		return true
	})
	if got := ask(clientB, follower, "app1.test"); !got.IsValid() || got == b2 {
		t.Fatalf("B's new name after the removal: %v, want a new pool address", got)
	}
}

// TestTailnetJoinByName: servers told whom to join by tailnet name (a host
// name, and a MagicDNS name), rather than finding each other by the tag,
// form one cluster and take writes. The names resolve through the tailnet's
// own map of its nodes, as `ippool serve --tailnet --join` documents.
func TestTailnetJoinByName(t *testing.T) {
	control := startTestControl(t)
	upstream := testcluster.StartUpstream(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		w.WriteMsg(m)
	}))
	join := fmt.Sprintf("ts1:%d,ts2.%s:%d,ts3:%d", clusterPort, tailnetDomain, clusterPort, clusterPort)
	procs := make([]*tsProc, 3)
	for i := range procs {
		procs[i] = startTailnetServer(t, control.HTTPTestServer.URL, upstream, i, "--join", join)
	}
	poll.Until(t, 2*time.Minute, "the three servers to form one cluster through --join by name", func() bool {
		leaders := map[string]bool{}
		for _, p := range procs {
			st, ok := p.status(t)
			if !ok || st.LeaderID == "" || len(st.Servers) != 3 {
				return false
			}
			leaders[st.LeaderID] = true
		}
		return len(leaders) == 1
	})
	for i, p := range procs {
		resp, err := tailnetHTTP.Post(fmt.Sprintf("http://%s/v1/clients/node%d/domains/app.example", p.httpAddr, i), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("allocation through %s: %d %s", p.id, resp.StatusCode, b)
		}
	}
}
