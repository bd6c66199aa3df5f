package e2e

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

// runScript runs one of the examples/ scripts from the repository root and
// returns what it printed.
func runScript(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := testcluster.Command(t, 10*time.Minute, "bash", args...)
	cmd.Dir = "../.."
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// processesWith lists the PIDs of processes whose command line mentions s.
func processesWith(s string) []string {
	var pids []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	return pids
}

// TestClusterScriptLeavesNothingRunning follows the README's cluster tour:
// start, kill the leader, restart what was killed, stop. Every server must
// come back, and after stop no ippool process of the script is left and its
// ports are free.
func TestClusterScriptLeavesNothingRunning(t *testing.T) {
	data := t.TempDir()
	env := []string{"DATA=" + data}
	t.Cleanup(func() {
		for _, pid := range processesWith(data) {
			if n, err := strconv.Atoi(pid); err == nil {
				syscall.Kill(n, syscall.SIGKILL)
			}
		}
	})
	runScript(t, env, "examples/cluster.sh", "start")
	out := runScript(t, env, "examples/cluster.sh", "kill-leader")
	m := regexp.MustCompile(`SIGKILL leader (s\d)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("kill-leader does not say which server it killed:\n%s", out)
	}
	// Restarting a server that runs must not start a second one.
	others := map[string]bool{"s1": true, "s2": true, "s3": true}
	delete(others, m[1])
	for id := range others {
		if out := runScript(t, env, "examples/cluster.sh", "restart", id); !strings.Contains(out, "already running") {
			t.Fatalf("restart %s of a running server:\n%s", id, out)
		}
		break
	}
	out = runScript(t, env, "examples/cluster.sh", "restart")
	if !strings.Contains(out, "started "+m[1]) {
		t.Fatalf("restart did not start the killed %s:\n%s", m[1], out)
	}
	if n := len(processesWith(data)); n != 3 {
		t.Fatalf("%d server processes after the restart, want 3", n)
	}
	bin := filepath.Join(data, "ippool")
	var status []byte
	if !poll.Wait(30*time.Second, func() bool {
		var err error
		status, err = testcluster.Command(t, 10*time.Second, bin, "--addr", "127.0.0.1:7480,127.0.0.1:7482,127.0.0.1:7484", "cluster", "status").CombinedOutput()
		return err == nil && voterRowsReachable(string(status)) == 3
	}) {
		t.Fatalf("the cluster did not come back whole:\n%s", status)
	}

	runScript(t, env, "examples/cluster.sh", "stop")
	if pids := processesWith(data); len(pids) > 0 {
		t.Fatalf("processes left after stop: %v", pids)
	}
	for _, port := range []string{"7480", "7481", "7482", "7483", "7484", "7485"} {
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatalf("port %s still taken after stop: %v", port, err)
		}
		ln.Close()
	}
}

// TestDNSDemoRunsOffline runs examples/dns-demo.sh, which brings its own
// upstream, and checks each answer it shows.
func TestDNSDemoRunsOffline(t *testing.T) {
	requireDig(t)
	out := runScript(t, nil, "examples/dns-demo.sh")
	t.Logf("dns-demo.sh:\n%s", out)
	answers := map[string]string{}
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "$ dig ") && i+1 < len(lines) {
			q := strings.TrimPrefix(l, "$ dig @127.0.0.1 -p 5353 +short ")
			if _, seen := answers[q]; seen {
				q += " (again)"
			}
			answers[q] = lines[i+1]
		}
	}
	first, err := netip.ParseAddr(answers["A example.com"])
	if err != nil || !netip.MustParsePrefix("100.64.0.0/24").Contains(first) {
		t.Fatalf("A example.com = %q, want a pool address", answers["A example.com"])
	}
	if again := answers["A example.com (again)"]; again != first.String() {
		t.Errorf("asked again: %q, want the same %v", again, first)
	}
	if a, err := netip.ParseAddr(answers["A www.example.org"]); err != nil || a == first || !netip.MustParsePrefix("100.64.0.0/24").Contains(a) {
		t.Errorf("A www.example.org = %q, want another pool address", answers["A www.example.org"])
	}
	v6, err := netip.ParseAddr(answers["AAAA example.com"])
	if err != nil || !netip.MustParsePrefix("fd7a:115c:a1e0:b1a::/96").Contains(v6) || [4]byte(v6.AsSlice()[12:]) != first.As4() {
		t.Errorf("AAAA example.com = %q, want %v inside the /96", answers["AAAA example.com"], first)
	}
	if got := answers["A nosuch.example.com"]; got != "(status: NXDOMAIN)" {
		t.Errorf("A nosuch.example.com = %q, want NXDOMAIN", got)
	}
	if got := answers["A example.net"]; got != "(status: REFUSED)" {
		t.Errorf("A example.net = %q, want REFUSED", got)
	}
}

// voterRowsReachable counts the rows of `ippool cluster status`'s server
// table that say the server votes and answers.
func voterRowsReachable(status string) int {
	n := 0
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.HasPrefix(f[0], "s") && f[3] == "yes" && f[4] == "yes" {
			n++
		}
	}
	return n
}
