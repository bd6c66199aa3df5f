package testcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// FaultChain is the iptables chain (in the filter and nat tables) that holds
// every rule a test adds. OUTPUT jumps to it; removing the jump and the
// chain removes every fault at once.
const FaultChain = "IPPOOL-FAULTS"

// Net injects network faults between servers with iptables. Servers dial
// their peers from their own 127.0.0.x address, so a rule on
// -s A -d B cuts exactly the traffic from server A to server B, and nothing
// else on the machine: only 127.0.0.0/8 addresses are ever named.
type Net struct {
	t  testing.TB
	mu sync.Mutex
}

var netMu sync.Mutex // one Net per test process at a time

// NewNet sets up the fault chains and removes them when the test ends. When
// iptables is missing it fails the test if the CI environment variable is
// set, and skips it otherwise.
func NewNet(t testing.TB) *Net {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil || os.Geteuid() != 0 {
		msg := "network fault tests need root and iptables (Debian package iptables): " + fmt.Sprint(err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	netMu.Lock()
	n := &Net{t: t}
	n.teardown() // from a run that died before its cleanup
	for _, table := range []string{"filter", "nat"} {
		if err := ipt(table, "-N", FaultChain); err != nil {
			netMu.Unlock()
			t.Fatal(err)
		}
		if err := ipt(table, "-I", "OUTPUT", "-j", FaultChain); err != nil {
			n.teardown()
			netMu.Unlock()
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		n.teardown()
		netMu.Unlock()
	})
	return n
}

func ipt(table string, args ...string) error {
	// -w waits for the xtables lock, which another user of iptables on
	// this machine may hold; the context bounds that wait.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", table}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables -t %s %s: %v: %s", table, strings.Join(args, " "), err, out)
	}
	return nil
}

func (n *Net) teardown() {
	for _, table := range []string{"filter", "nat"} {
		for ipt(table, "-D", "OUTPUT", "-j", FaultChain) == nil {
		}
		ipt(table, "-F", FaultChain)
		ipt(table, "-X", FaultChain)
	}
}

func (n *Net) add(table string, args ...string) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ipt(table, append([]string{"-A", FaultChain}, args...)...); err != nil {
		n.t.Fatal(err)
	}
}

func mustLoopback(n *Net, ips ...string) {
	for _, ip := range ips {
		if !strings.HasPrefix(ip, "127.") {
			n.t.Fatalf("refusing a network fault on non-loopback address %s", ip)
		}
	}
}

// Drop drops every packet from one server's address to another's: a one-way
// partition (TCP connections from either side stall).
func (n *Net) Drop(from, to string) {
	mustLoopback(n, from, to)
	n.add("filter", "-s", from, "-d", to, "-j", "DROP")
}

// Loss drops packets from one address to another with probability p.
func (n *Net) Loss(from, to string, p float64) {
	mustLoopback(n, from, to)
	n.add("filter", "-s", from, "-d", to, "-m", "statistic", "--mode", "random", "--probability", fmt.Sprintf("%.3f", p), "-j", "DROP")
}

// Partition cuts every server in a from every server in b, both ways.
func (n *Net) Partition(a, b []*Server) {
	for _, x := range a {
		for _, y := range b {
			n.Drop(x.IP, y.IP)
			n.Drop(y.IP, x.IP)
		}
	}
}

// Redirect sends new TCP connections from address `from` to the cluster
// address `to` (ip:port) to `via` (127.0.0.1:port) instead, e.g. a delaying
// proxy. Connections already open are not affected.
func (n *Net) Redirect(from, to, via string) {
	ip, port, _ := strings.Cut(to, ":")
	mustLoopback(n, from, ip, via)
	n.add("nat", "-s", from, "-d", ip, "-p", "tcp", "--dport", port, "-j", "DNAT", "--to-destination", via)
}

// Heal removes the packet-dropping rules (not the redirects).
func (n *Net) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ipt("filter", "-F", FaultChain); err != nil {
		n.t.Error(err)
	}
}

// HealAll removes every rule, redirects included.
func (n *Net) HealAll() {
	n.Heal()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ipt("nat", "-F", FaultChain); err != nil {
		n.t.Error(err)
	}
}
