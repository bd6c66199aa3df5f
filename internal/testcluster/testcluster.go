// Package testcluster runs real `ippool serve` processes for tests: each
// server on its own 127.0.0.x address with its own data dir, started,
// killed, paused and restarted by PID. Every process a test starts is
// stopped when the test ends.
package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/ca"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/wire"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds ./cmd/ippool once per test process and returns its path.
// With IPPOOL_TEST_RACE set it builds with the race detector, so that the
// end-to-end tests check the real server's concurrency under real traffic;
// GORACE=halt_on_error=1 then makes a race end the server, which fails the
// test that met it.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		// A deadline even for the build: the race-built server takes
		// minutes on a loaded machine, never this long.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = err
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "ippool-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "ippool")
		args := []string{"build", "-o", binPath}
		if os.Getenv("IPPOOL_TEST_RACE") != "" {
			args = append(args, "-race")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/ippool")...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, b)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Server is one `ippool serve` process.
type Server struct {
	ID          string
	IP          string
	HTTPAddr    string
	ClusterAddr string
	DataDir     string
	// TLSDir holds the server's ca.pem, cert.pem and key.pem; empty with
	// Options.Insecure or NoTLSFlags.
	TLSDir string
	Args   []string

	t       testing.TB
	bin     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	// token is sent by Status and Do (SetToken).
	token string
}

// Options shape a cluster.
type Options struct {
	// Args are added to every server's command line.
	Args []string
	// FirstIP is the last octet of the first server's 127.0.0.x address.
	FirstIP int
	// Insecure runs the servers in plain TCP between each other
	// (--insecure) instead of mutual TLS with certificates made for the
	// cluster.
	Insecure bool
	// NoTLSFlags gives the servers neither certificates nor --insecure, as
	// an operator starting one without flags: a lone server makes its own
	// CA in its data dir, and one that is to join others refuses to start.
	NoTLSFlags bool
}

// Cluster is a set of servers started with --bootstrap-expect, with mutual
// TLS between them unless Options.Insecure or NoTLSFlags.
type Cluster struct {
	t       testing.TB
	Servers []*Server
}

// freePort finds a free TCP port on ip.
// FreePort returns an address on ip whose port is free for TCP and UDP.
func FreePort(t testing.TB, ip string) string {
	t.Helper()
	// Below the kernel's ephemeral range when it leaves room: a port the
	// kernel handed out for ":0" can be handed again, between this probe
	// and the server's bind, to one of the many outgoing connections the
	// servers and the fault suite make from the same address (it was, and
	// a server failed to start with "address already in use").
	if lo := ephemeralLow(); lo > 12000 {
		for range 100 {
			addr := net.JoinHostPort(ip, strconv.Itoa(10000+rand.IntN(lo-10000)))
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			pc, err := net.ListenPacket("udp", addr)
			ln.Close()
			if err == nil {
				pc.Close()
				return addr
			}
		}
	}
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("no free port on %s: %v", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ephemeralLow is the first port of the kernel's ephemeral range, 0 if
// unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, _ := strconv.Atoi(f[0])
	return lo
}

// New prepares n servers (not started).
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	bin := Binary(t)
	if opts.FirstIP == 0 {
		opts.FirstIP = 11
	}
	root := t.TempDir()
	c := &Cluster{t: t}
	var clusterAddrs []string
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", opts.FirstIP+i)
		s := &Server{
			ID: fmt.Sprintf("s%d", i+1), IP: ip,
			HTTPAddr: FreePort(t, ip), ClusterAddr: FreePort(t, ip),
			DataDir: filepath.Join(root, fmt.Sprintf("s%d", i+1)),
			t:       t, bin: bin, logPath: filepath.Join(root, fmt.Sprintf("s%d.log", i+1)),
		}
		clusterAddrs = append(clusterAddrs, s.ClusterAddr)
		c.Servers = append(c.Servers, s)
	}
	if !opts.Insecure && !opts.NoTLSFlags {
		// One CA per cluster, made the way an operator would (ippool tls
		// init), so every server runs mutual TLS on the cluster port.
		tlsRoot := filepath.Join(root, "tls")
		if _, err := ca.Init(tlsRoot, n, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		for i, s := range c.Servers {
			s.TLSDir = filepath.Join(tlsRoot, fmt.Sprintf("server-%d", i+1))
		}
	}
	for _, s := range c.Servers {
		s.Args = append([]string{"serve", "--id", s.ID, "--data-dir", s.DataDir, "--http-addr", s.HTTPAddr,
			"--cluster-addr", s.ClusterAddr, "--log-level", "debug"}, opts.Args...)
		if s.TLSDir != "" {
			f := ca.ServerFiles(s.TLSDir)
			s.Args = append(s.Args, "--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key)
		} else if opts.Insecure {
			s.Args = append(s.Args, "--insecure")
		}
		if n > 1 {
			s.Args = append(s.Args, "--join", strings.Join(clusterAddrs, ","), "--bootstrap-expect", fmt.Sprint(n))
		}
	}
	t.Cleanup(c.StopAll)
	return c
}

// Start starts n servers at once and waits until they serve writes.
func Start(t testing.TB, n int, opts Options) *Cluster {
	c := New(t, n, opts)
	for _, s := range c.Servers {
		s.Start()
	}
	c.WaitReady(30 * time.Second)
	return c
}

// Start launches the process; its output goes to a log file shown when the
// test fails.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, s.Args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := StartProcess(cmd); err != nil {
		logf.Close()
		s.t.Fatal(err)
	}
	s.cmd = cmd
	exited := make(chan struct{})
	s.exited = exited
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
}

// Running reports whether the process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// PID returns the process ID, 0 when not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) signal(sig syscall.Signal) {
	if pid := s.PID(); pid != 0 {
		syscall.Kill(pid, sig)
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (s *Server) Kill() { s.signal(syscall.SIGKILL); s.Wait(10 * time.Second) }

// Stop sends SIGTERM and waits for a graceful stop (SIGKILL after timeout).
func (s *Server) Stop(timeout time.Duration) {
	s.signal(syscall.SIGCONT)
	s.signal(syscall.SIGTERM)
	if !s.Wait(timeout) {
		s.Kill()
	}
}

// Pause sends SIGSTOP; Resume sends SIGCONT.
func (s *Server) Pause()  { s.signal(syscall.SIGSTOP) }
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Wait waits for the process to exit and reports whether it did.
func (s *Server) Wait(timeout time.Duration) bool {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// ExitCode returns the exit code of a stopped process.
func (s *Server) ExitCode() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.ProcessState == nil {
		return -1
	}
	return s.cmd.ProcessState.ExitCode()
}

// Log returns what the process printed.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// URL returns the base URL of the HTTP API.
func (s *Server) URL() string { return "http://" + s.HTTPAddr }

// SetToken makes every server's Status and Do send the ACL token.
func (c *Cluster) SetToken(token string) {
	for _, s := range c.Servers {
		s.mu.Lock()
		s.token = token
		s.mu.Unlock()
	}
}

func (s *Server) authorize(req *http.Request) {
	s.mu.Lock()
	token := s.token
	s.mu.Unlock()
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
}

// StopAll kills every process still running, and on failure prints their logs.
func (c *Cluster) StopAll() {
	for _, s := range c.Servers {
		if s.Running() {
			s.signal(syscall.SIGCONT)
			s.Kill()
		}
	}
	if c.t.Failed() {
		for _, s := range c.Servers {
			log := s.Log()
			if len(log) > 8000 {
				log = "...\n" + log[len(log)-8000:]
			}
			c.t.Logf("---- %s log ----\n%s", s.ID, log)
		}
	}
}

// Status is GET /v1/cluster's answer.
type Status = wire.Status

var httpClient = &http.Client{Timeout: 3 * time.Second}

// Status asks one server for its view.
func (s *Server) Status() (Status, error) {
	var st Status
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/v1/cluster", nil)
	s.authorize(req)
	resp, err := httpClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("%s: %s", s.ID, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// Ready reports whether /readyz answers 200.
func (s *Server) Ready() bool {
	resp, err := httpClient.Get(s.URL() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// Leader returns the server every running server agrees leads, or nil.
func (c *Cluster) Leader() *Server {
	var leader string
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		st, err := s.Status()
		if err != nil || st.LeaderID == "" || (leader != "" && st.LeaderID != leader) {
			return nil
		}
		leader = st.LeaderID
	}
	for _, s := range c.Servers {
		if s.ID == leader && s.Running() {
			return s
		}
	}
	return nil
}

// WaitReady waits until every running server is ready and they agree on a
// leader.
func (c *Cluster) WaitReady(timeout time.Duration) *Server {
	c.t.Helper()
	var leader *Server
	poll.Until(c.t, timeout, "every running server ready, with one leader", func() bool {
		for _, s := range c.Servers {
			if s.Running() && !s.Ready() {
				return false
			}
		}
		leader = c.Leader()
		return leader != nil
	})
	return leader
}

// Running returns the servers whose process is alive.
func (c *Cluster) Running() []*Server {
	var out []*Server
	for _, s := range c.Servers {
		if s.Running() {
			out = append(out, s)
		}
	}
	return out
}

// Do sends a request to a server and returns status and body.
func (s *Server) Do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	s.authorize(req)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), nil
}
