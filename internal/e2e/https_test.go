package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcerts"
	"github.com/ippool/ippool/internal/testcluster"
)

// startHTTPS starts one server on 127.0.0.<octet> with the given HTTPS
// flags and waits until /readyz answers over HTTPS to a client with cfg.
func startHTTPS(t *testing.T, octet int, cfg *tls.Config, args ...string) *testcluster.Server {
	t.Helper()
	s := testcluster.New(t, 1, testcluster.Options{FirstIP: octet, Args: args}).Servers[0]
	s.Start()
	hc := httpsClient(cfg)
	var err error
	if !poll.Wait(30*time.Second, func() bool {
		var resp *http.Response
		if resp, err = hc.Get(httpsURL(s) + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
		if !s.Running() {
			t.Fatalf("the HTTPS server exited (last: %v)", err)
		}
		return false
	}) {
		t.Fatalf("the HTTPS server is not ready (last: %v)", err)
	}
	return s
}

func httpsURL(s *testcluster.Server) string { return "https://" + s.HTTPAddr }

// httpsClient opens a new connection for every request, so each one is a
// new handshake with the server's current certificates.
func httpsClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

// get fetches url and returns its status, or the error.
func get(hc *http.Client, url string) (int, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// cliEnv runs a verb of the binary with the given IPPOOL_ variables (and no
// others) and returns stdout, stderr and exit code.
func cliEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := testcluster.Command(t, time.Minute, testcluster.Binary(t), args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), 0
}

// HTTPS without client certificates: the CLI trusting the CA allocates and
// looks up; plain HTTP, and clients that do not trust the CA, get nothing.
func TestHTTPSServesTheAPIAndTheCLI(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	srv := ca.Server(t, dir, "server", "127.0.0.81")
	s := startHTTPS(t, 81, testcerts.ClientConfig(ca), "--http-tls-cert", srv.CertFile, "--http-tls-key", srv.KeyFile)
	for _, want := range []string{`http=` + httpsURL(s), "curl --cacert CA.pem -X POST " + httpsURL(s) + "/v1/clients/node1/domains/example.com"} {
		if !strings.Contains(s.Log(), want) {
			t.Errorf("the startup output does not say %q:\n%s", want, s.Log())
		}
	}

	out, errOut, code := cliEnv(t, []string{"IPPOOL_ADDR=" + httpsURL(s), "IPPOOL_CACERT=" + ca.CertFile}, "alloc", "node1", "example.com")
	if code != 0 || strings.TrimSpace(out) != "198.18.0.0" {
		t.Fatalf("IPPOOL_ADDR=https://... IPPOOL_CACERT=... ippool alloc: exit %d, %q %s", code, out, errOut)
	}
	out, errOut, code = cliEnv(t, nil, "--addr", httpsURL(s), "--ca-cert", ca.CertFile, "lookup", "node1", "198.18.0.0")
	if code != 0 || strings.TrimSpace(out) != "example.com" {
		t.Fatalf("ippool --ca-cert ... lookup: exit %d, %q %s", code, out, errOut)
	}

	// The CLI trusting only the system's roots, or another CA, is refused
	// at once, saying why.
	other := testcerts.NewCA(t, dir, "other")
	for _, args := range [][]string{
		{"--addr", httpsURL(s), "alloc", "node1", "b.example"},
		{"--addr", httpsURL(s), "--ca-cert", other.CertFile, "alloc", "node1", "b.example"},
	} {
		start := time.Now()
		_, errOut, code := cliEnv(t, nil, args...)
		if code != 1 || !strings.Contains(errOut, "certificate signed by unknown authority") {
			t.Errorf("ippool %s: exit %d, %s; want 1 and the certificate refused", strings.Join(args, " "), code, errOut)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("ippool %s took %v to fail", strings.Join(args, " "), d)
		}
	}
	for _, c := range []struct {
		name string
		hc   *http.Client
		url  string
	}{
		{"plain HTTP", &http.Client{Timeout: 5 * time.Second}, "http://" + s.HTTPAddr + "/healthz"},
		{"a client trusting the system's roots", httpsClient(nil), httpsURL(s) + "/healthz"},
		{"a client trusting another CA", httpsClient(testcerts.ClientConfig(other)), httpsURL(s) + "/healthz"},
	} {
		if status, err := get(c.hc, c.url); err == nil {
			t.Errorf("%s: answered %d, want no answer", c.name, status)
		}
	}
	// Nothing of the refused allocations got through.
	if out, _, code := cliEnv(t, nil, "--addr", httpsURL(s), "--ca-cert", ca.CertFile, "list", "node1"); code != 0 || strings.Contains(out, "b.example") {
		t.Errorf("list: exit %d\n%s", code, out)
	}
}

// With --http-client-ca the server wants a certificate from that CA: none,
// or one from another CA, fails the handshake.
func TestHTTPSRequiresClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	clientCA := testcerts.NewCA(t, dir, "clients")
	srv := ca.Server(t, dir, "server", "127.0.0.82")
	good := clientCA.Client(t, dir, "good")
	wrong := ca.Client(t, dir, "wrong") // signed, but not by the client CA
	s := startHTTPS(t, 82, testcerts.ClientConfig(ca, good),
		"--http-tls-cert", srv.CertFile, "--http-tls-key", srv.KeyFile, "--http-client-ca", clientCA.CertFile)
	if want := "curl --cacert CA.pem --cert CLIENT.pem --key CLIENT-KEY.pem -X POST " + httpsURL(s); !strings.Contains(s.Log(), want) {
		t.Errorf("the startup output does not say %q:\n%s", want, s.Log())
	}

	if _, err := get(httpsClient(testcerts.ClientConfig(ca)), httpsURL(s)+"/healthz"); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("without a client certificate: %v, want the handshake refused", err)
	}
	if _, err := get(httpsClient(testcerts.ClientConfig(ca, wrong)), httpsURL(s)+"/healthz"); err == nil {
		t.Error("a client certificate from another CA was taken")
	}
	if status, err := get(httpsClient(testcerts.ClientConfig(ca, good)), httpsURL(s)+"/healthz"); err != nil || status != 200 {
		t.Errorf("with a client certificate: %d %v", status, err)
	}

	out, errOut, code := cliEnv(t, []string{"IPPOOL_CLIENT_CERT=" + good.CertFile, "IPPOOL_CLIENT_KEY=" + good.KeyFile},
		"--addr", httpsURL(s), "--ca-cert", ca.CertFile, "alloc", "node1", "example.com")
	if code != 0 || strings.TrimSpace(out) != "198.18.0.0" {
		t.Fatalf("ippool alloc with a client certificate: exit %d, %q %s", code, out, errOut)
	}
	_, errOut, code = cliEnv(t, nil, "--addr", httpsURL(s), "--ca-cert", ca.CertFile, "alloc", "node1", "example.com")
	if code != 1 || !strings.Contains(errOut, "certificate required") {
		t.Errorf("ippool alloc without a client certificate: exit %d, %s", code, errOut)
	}
	_, errOut, code = cliEnv(t, nil, "--addr", httpsURL(s), "--ca-cert", ca.CertFile, "--client-cert", good.CertFile, "alloc", "node1", "example.com")
	if code != 1 || !strings.Contains(errOut, "--client-cert and --client-key go together") {
		t.Errorf("ippool alloc with --client-cert alone: exit %d, %s", code, errOut)
	}
}

// SIGHUP replaces the certificate and the client CA without dropping the
// listener or open connections; a reload from broken files keeps them.
func TestHTTPSReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2 := testcerts.NewCA(t, dir, "ca1"), testcerts.NewCA(t, dir, "ca2")
	client1, client2 := ca1.Client(t, dir, "client1"), ca2.Client(t, dir, "client2")
	live := testcerts.Pair{CertFile: filepath.Join(dir, "live.pem"), KeyFile: filepath.Join(dir, "live-key.pem")}
	ca1.Server(t, dir, "server1", "127.0.0.83").Install(t, live)
	clientCA := filepath.Join(dir, "client-ca.pem")
	copyFile(t, ca1.CertFile, clientCA)
	old := testcerts.ClientConfig(ca1, client1)
	s := startHTTPS(t, 83, old, "--http-tls-cert", live.CertFile, "--http-tls-key", live.KeyFile, "--http-client-ca", clientCA)

	// A client that keeps its connection open across the reload.
	kept := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: old}}
	reused := func() (bool, error) {
		var r bool
		req, _ := http.NewRequest(http.MethodGet, httpsURL(s)+"/healthz", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { r = i.Reused }}))
		resp, err := kept.Do(req)
		if err != nil {
			return false, err
		}
		io.Copy(io.Discard, resp.Body) // else the connection is not kept
		resp.Body.Close()
		return r, nil
	}
	if _, err := reused(); err != nil {
		t.Fatal(err)
	}
	next := httpsClient(testcerts.ClientConfig(ca2, client2))
	if _, err := get(next, httpsURL(s)+"/healthz"); err == nil {
		t.Fatal("a client of ca2 was served before the reload")
	}

	ca2.Server(t, dir, "server2", "127.0.0.83").Install(t, live)
	copyFile(t, ca2.CertFile, clientCA)
	syscall.Kill(s.PID(), syscall.SIGHUP)
	var status int
	var err error
	if !poll.Wait(10*time.Second, func() bool {
		status, err = get(next, httpsURL(s)+"/healthz")
		return err == nil && status == 200
	}) {
		t.Fatalf("a client of ca2 is still refused 10s after SIGHUP: %d %v", status, err)
	}
	if !strings.Contains(s.Log(), "reloaded the HTTPS certificates") {
		t.Errorf("the reload was not logged:\n%s", s.Log())
	}
	if _, err := get(httpsClient(old), httpsURL(s)+"/healthz"); err == nil {
		t.Error("a new connection of ca1's client was served after the reload")
	}
	if r, err := reused(); err != nil || !r {
		t.Errorf("the connection opened before the reload: reused %v, %v", r, err)
	}

	// Broken files: the error is logged, the server keeps serving ca2's.
	if err := os.WriteFile(live.CertFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(s.PID(), syscall.SIGHUP)
	if !poll.Wait(10*time.Second, func() bool { return strings.Contains(s.Log(), "reloading the HTTPS certificates failed") }) {
		t.Fatalf("no error logged 10s after a SIGHUP with a broken certificate:\n%s", s.Log())
	}
	if status, err := get(next, httpsURL(s)+"/healthz"); err != nil || status != 200 {
		t.Errorf("after a failed reload, ca2's client: %d %v", status, err)
	}
	if !s.Running() {
		t.Error("the server stopped")
	}
}

// runRefused runs `ippool serve` with args, expecting it to refuse to start;
// it returns the exit status and the output. A server that starts anyway
// is killed by PID.
func runRefused(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(testcluster.Binary(t), append([]string{"serve"}, args...)...)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := testcluster.StartProcess(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("ippool serve %s did not refuse to start:\n%s", strings.Join(args, " "), out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// An HTTP address other machines can reach needs --acl and HTTPS (or
// --insecure for plain HTTP); without them serve says what to add and
// starts nothing.
func TestServeRefusesAnExposedHTTPAddrWithoutACLAndHTTPS(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"0.0.0.0", nil, []string{"--http-addr 0.0.0.0:0 is not loopback", "Add --acl (then bootstrap with `ippool acl bootstrap`) and either --http-tls-cert/--http-tls-key or, to serve plain HTTP, --insecure"}},
		{"0.0.0.0 with --insecure", []string{"--insecure"}, []string{"--http-addr 0.0.0.0:0 is not loopback", "Add --acl"}},
		{"0.0.0.0 with --acl", []string{"--acl"}, []string{"--http-addr 0.0.0.0:0 is not loopback", "Add --http-tls-cert/--http-tls-key or, to serve plain HTTP, --insecure"}},
	} {
		dataDir := filepath.Join(t.TempDir(), "data")
		args := append([]string{"--data-dir", dataDir, "--http-addr", "0.0.0.0:0", "--cluster-addr", "127.0.0.84:0"}, c.args...)
		code, out := runRefused(t, args...)
		if code != 1 {
			t.Errorf("%s: exit status %d, want 1:\n%s", c.name, code, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: the error does not say %q:\n%s", c.name, w, out)
			}
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Errorf("%s: the refused start made its data dir (%v)", c.name, err)
		}
	}
}

// On a loopback server, a request naming another host (a web page after DNS
// rebinding) is refused before anything runs: the fast path's allocation,
// a request the mux answers, and /healthz.
func TestRebindingHostIsRefused(t *testing.T) {
	s := testcluster.Start(t, 1, testcluster.Options{FirstIP: 85}).Servers[0]
	hc := &http.Client{Timeout: 5 * time.Second}
	do := func(host, method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.URL()+path, nil)
		req.Host = host
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Code string }
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Code
	}
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/clients/node1/domains/example.com"},
		{"GET", "/v1/cluster"},
		{"GET", "/healthz"},
	} {
		if status, code := do("attacker.example", r.method, r.path); status != 403 || code != "bad_host" {
			t.Errorf("Host attacker.example, %s %s: %d %q, want 403 bad_host", r.method, r.path, status, code)
		}
	}
	if status, code := do("localhost", "GET", "/v1/clients/node1/domains/example.com"); status != 404 {
		t.Errorf("the refused allocation: GET with Host localhost answered %d %q, want 404", status, code)
	}
	if status, _ := do(s.HTTPAddr, "GET", "/healthz"); status != 200 {
		t.Errorf("Host %s: %d", s.HTTPAddr, status)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
