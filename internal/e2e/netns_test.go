//go:build linux

package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ippool/ippool/internal/testcluster"
)

// Network namespaces for the connector's tests. Each test makes its own,
// with names unique to the run, and deletes them (and the processes it
// started in them) when it ends; every address is a 10.x address inside
// them or a pool address, so no packet leaves them.

// netnsLab is one test's set of namespaces.
type netnsLab struct {
	t      testing.TB
	prefix string // unique per lab: names are prefix + role
	mu     sync.Mutex
	procs  []*labProc
	logDir string
}

// newLab makes a lab, or skips the test where namespaces cannot be made
// (not root, no ip(8)); under CI=true that is a failure instead.
func newLab(t testing.TB) *netnsLab {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	lab := &netnsLab{t: t, prefix: "ipc" + hex.EncodeToString(b)}
	probe := lab.prefix + "probe"
	if out, err := testcluster.Command(t, 30*time.Second, "ip", "netns", "add", probe).CombinedOutput(); err != nil {
		msg := fmt.Sprintf("cannot create network namespaces (needs root and iproute2): %v: %s", err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	testcluster.Command(t, 30*time.Second, "ip", "netns", "del", probe).Run()
	for _, tool := range []string{"nft", "dig"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := tool + " not found: ./test.sh installs nftables and dnsutils when run as root"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	t.Cleanup(lab.teardown)
	return lab
}

// ns makes a namespace with loopback up and returns its name.
func (l *netnsLab) ns(role string) string {
	l.t.Helper()
	name := l.prefix + role
	l.ip("netns", "add", name)
	l.ip("-n", name, "link", "set", "lo", "up")
	// No duplicate address detection: it holds new IPv6 addresses, link
	// local ones included, for a second or more before they can be used.
	for _, k := range []string{"all", "default"} {
		if out, err := testcluster.Command(l.t, 30*time.Second, "ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf."+k+".accept_dad=0").CombinedOutput(); err != nil {
			l.t.Logf("sysctl accept_dad in %s: %v: %s", name, err, out)
		}
	}
	return name
}

// ip runs ip(8) and fails the test on error.
func (l *netnsLab) ip(args ...string) {
	l.t.Helper()
	if out, err := testcluster.Command(l.t, 30*time.Second, "ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// link joins two namespaces with a veth pair and gives each end its
// addresses (prefixes like 10.1.2.3/24 or fd00::1/64).
func (l *netnsLab) link(a, b string, aAddrs, bAddrs []string) {
	l.t.Helper()
	ifa, ifb := "v"+strings.TrimPrefix(b, l.prefix), "v"+strings.TrimPrefix(a, l.prefix)
	l.ip("link", "add", ifa, "netns", a, "type", "veth", "peer", "name", ifb, "netns", b)
	for _, x := range []struct {
		ns, dev string
		addrs   []string
	}{{a, ifa, aAddrs}, {b, ifb, bAddrs}} {
		for _, ad := range x.addrs {
			args := []string{"-n", x.ns, "addr", "add", ad, "dev", x.dev}
			if strings.Contains(ad, ":") {
				args = append(args, "nodad")
			}
			l.ip(args...)
		}
		l.ip("-n", x.ns, "link", "set", x.dev, "up")
	}
}

// bridge makes a namespace holding a bridge and returns a function that
// plugs another namespace into it with the given addresses.
func (l *netnsLab) bridge(role string) func(ns string, addrs ...string) {
	hub := l.ns(role)
	l.ip("-n", hub, "link", "add", "br0", "type", "bridge")
	l.ip("-n", hub, "link", "set", "br0", "up")
	return func(ns string, addrs ...string) {
		l.t.Helper()
		l.link(ns, hub, addrs, nil)
		l.ip("-n", hub, "link", "set", "v"+strings.TrimPrefix(ns, l.prefix), "master", "br0")
	}
}

// in runs f on an OS thread inside namespace ns. Sockets made there stay in
// ns for good, so a listener or connection made in f is used from anywhere.
func (l *netnsLab) in(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocked on failure: the thread, left in another namespace,
		// then dies with the goroutine instead of serving others.
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("back to the test's namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// dial connects from ns; local may be empty.
func (l *netnsLab) dial(ns, network, local, remote string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := l.in(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		if local != "" {
			switch network {
			case "udp", "udp4", "udp6":
				d.LocalAddr, _ = net.ResolveUDPAddr(network, net.JoinHostPort(local, "0"))
			default:
				d.LocalAddr, _ = net.ResolveTCPAddr(network, net.JoinHostPort(local, "0"))
			}
		}
		var err error
		c, err = d.Dial(network, remote)
		return err
	})
	return c, err
}

// listen opens a TCP listener in ns.
func (l *netnsLab) listen(ns, addr string) net.Listener {
	l.t.Helper()
	var ln net.Listener
	if err := l.in(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		l.t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	l.t.Cleanup(func() { ln.Close() })
	return ln
}

// listenUDP opens a UDP socket in ns.
func (l *netnsLab) listenUDP(ns, addr string) net.PacketConn {
	l.t.Helper()
	var pc net.PacketConn
	if err := l.in(ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return }); err != nil {
		l.t.Fatalf("listen udp %s in %s: %v", addr, ns, err)
	}
	l.t.Cleanup(func() { pc.Close() })
	return pc
}

// httpClient reaches HTTP servers inside ns.
func (l *netnsLab) httpClient(ns string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.dial(ns, network, "", addr, 5*time.Second)
		},
	}}
}

// metric reads one sample of a Prometheus metric from the server's
// /metrics, for example `ippool_connector_flows_total{proto="tcp",result="relayed"}`.
func (l *netnsLab) metric(ns, httpAddr, sample string) float64 {
	l.t.Helper()
	resp, err := l.httpClient(ns).Get("http://" + httpAddr + "/metrics")
	if err != nil {
		l.t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

// labProc is a process started inside a namespace.
type labProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs a program in ns; `ip netns exec` execs it, so the process's
// PID is the program's own and a SIGKILL reaches it.
func (l *netnsLab) start(name, ns string, args ...string) *labProc {
	l.t.Helper()
	// Not t.TempDir: that is removed before the lab's cleanup shows logs.
	l.mu.Lock()
	if l.logDir == "" {
		l.logDir, _ = os.MkdirTemp("", l.prefix)
	}
	l.mu.Unlock()
	logPath := filepath.Join(l.logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := testcluster.StartProcess(cmd); err != nil {
		f.Close()
		l.t.Fatal(err)
	}
	p := &labProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p
}

func (p *labProc) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// wait waits for the process to exit and reports whether it did in time.
func (p *labProc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (p *labProc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// teardown kills what the lab started, shows their logs if the test
// failed, and deletes its namespaces (their interfaces go with them).
func (l *netnsLab) teardown() {
	l.mu.Lock()
	procs := l.procs
	l.mu.Unlock()
	for _, p := range procs {
		p.signal(syscall.SIGKILL)
		p.wait(10 * time.Second)
		if l.t.Failed() {
			out := p.output()
			var keep []string
			for _, line := range strings.Split(out, "\n") {
				if !strings.Contains(line, "level=DEBUG") || strings.Contains(line, "msg=flow") {
					keep = append(keep, line)
				}
			}
			out = strings.Join(keep, "\n")
			if len(out) > 12000 {
				out = "...\n" + out[len(out)-12000:]
			}
			l.t.Logf("---- %s ----\n%s", p.name, out)
		}
	}
	// A cleanup, so no testcluster.Command (whose own cleanup would come
	// after this one): a context bounds each command.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], l.prefix) {
			exec.CommandContext(ctx, "ip", "netns", "del", f[0]).Run()
		}
	}
	if l.logDir != "" {
		os.RemoveAll(l.logDir)
	}
	dirs, _ := filepath.Glob(filepath.Join("/etc/netns", l.prefix+"*"))
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// resolvConf makes server the DNS server of programs run in ns with `ip
// netns exec`, which mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf.
func (l *netnsLab) resolvConf(ns, server string) {
	l.t.Helper()
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+server+"\noptions timeout:2 attempts:1\n"), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// readAll reads until EOF or the deadline.
func readAll(c net.Conn, d time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(d))
	return io.ReadAll(c)
}
