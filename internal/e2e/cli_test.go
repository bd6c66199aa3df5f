package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ippool/ippool/internal/buildinfo"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// zeroFlagServer runs `ippool serve` with no flags and no IPPOOL_ variables
// in dir, as a new user would, and stops it by PID when the test ends.
type zeroFlagServer struct {
	t   *testing.T
	bin string
	dir string
	cmd *exec.Cmd
	out *syncBuffer
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const zeroFlagURL = "http://127.0.0.1:7480"

// httpc is the client of requests a test makes itself, with a deadline on
// each: a server that stopped answering fails the request, not the whole
// run at `go test -timeout`.
var httpc = &http.Client{Timeout: 10 * time.Second}

func startZeroFlag(t *testing.T, bin, dir string) *zeroFlagServer {
	t.Helper()
	z := &zeroFlagServer{t: t, bin: bin, dir: dir, out: &syncBuffer{}}
	z.cmd = exec.Command(bin, "serve")
	z.cmd.Dir = dir
	z.cmd.Env = cleanEnv()
	z.cmd.Stdout, z.cmd.Stderr = z.out, z.out
	if err := testcluster.StartProcess(z.cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if z.cmd.ProcessState == nil {
			z.cmd.Process.Kill()
			z.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("serve output:\n%s", z.out.String())
		}
	})
	poll.Until(t, 20*time.Second, "ippool serve to be ready", func() bool {
		resp, err := httpc.Get(zeroFlagURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return z
}

// stop sends SIGTERM and requires a clean exit.
func (z *zeroFlagServer) stop() {
	z.t.Helper()
	z.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- z.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			z.t.Fatalf("serve exited with %v after SIGTERM:\n%s", err, z.out.String())
		}
	case <-time.After(15 * time.Second):
		z.t.Fatal("serve did not stop within 15s of SIGTERM")
	}
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IPPOOL_") {
			env = append(env, kv)
		}
	}
	return env
}

// cli runs a verb of the binary and returns stdout, stderr and exit code.
func cli(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := testcluster.Command(t, time.Minute, bin, args...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func mustCLI(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, bin, args...)
	if code != 0 {
		t.Fatalf("ippool %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

type apiCase struct {
	name   string
	method string
	path   string
	body   []byte
	status int
	code   string
}

func doAPI(t *testing.T, method, path string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, zeroFlagURL+path, bytes.NewReader(body))
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestZeroFlagServerCLIAndAPI(t *testing.T) {
	bin := testcluster.Binary(t)
	dir := t.TempDir()
	z := startZeroFlag(t, bin, dir)
	if !strings.Contains(z.out.String(), "curl -X POST http://127.0.0.1:7480/v1/clients/") {
		t.Errorf("serve did not print a line to try:\n%s", z.out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "ippool-data", "server.json")); err != nil {
		t.Fatalf("no state in ./ippool-data: %v", err)
	}

	// CLI verbs.
	ip := strings.TrimSpace(mustCLI(t, bin, "alloc", "node1", "Example.COM."))
	if ip != "198.18.0.0" {
		t.Fatalf("alloc printed %q, want the pool's first address", ip)
	}
	if again := strings.TrimSpace(mustCLI(t, bin, "alloc", "node1", "example.com")); again != ip {
		t.Fatalf("second alloc gave %s, first %s", again, ip)
	}
	ip2 := strings.TrimSpace(mustCLI(t, bin, "alloc", "node1", "other.example"))
	if got := strings.TrimSpace(mustCLI(t, bin, "lookup", "node1", ip)); got != "example.com" {
		t.Fatalf("lookup printed %q", got)
	}
	if _, _, code := cli(t, bin, "lookup", "node1", "198.18.9.9"); code != 2 {
		t.Fatalf("lookup of an unmapped address exited %d, want 2", code)
	}
	var list struct {
		Mappings []struct{ Domain, IP string } `json:"mappings"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, bin, "list", "node1", "--json")), &list); err != nil || len(list.Mappings) != 2 {
		t.Fatalf("list --json: %+v %v", list, err)
	}
	if out := mustCLI(t, bin, "list", "node1"); !strings.Contains(out, "other.example") || !strings.Contains(out, ip2) {
		t.Fatalf("list:\n%s", out)
	}
	if out := mustCLI(t, bin, "cluster", "status"); !strings.Contains(out, "leader") || !strings.Contains(out, buildinfo.Version+", reads log entry versions "+buildinfo.Get().Reads()) {
		t.Fatalf("cluster status:\n%s", out)
	}
	var status wire.Status
	if err := json.Unmarshal([]byte(mustCLI(t, bin, "cluster", "status", "--json")), &status); err != nil || len(status.Servers) != 1 {
		t.Fatalf("cluster status --json: %+v %v", status, err)
	}
	if s := status.Servers[0]; status.Version != buildinfo.Version || s.Version != buildinfo.Version || len(s.EntryVersions) == 0 || status.ClusterEntryVersion != pool.EntryVersion {
		t.Fatalf("cluster status --json says version %q, server %q reading %v, cluster entry version %d", status.Version, s.Version, s.EntryVersions, status.ClusterEntryVersion)
	}
	if _, errOut, code := cli(t, bin, "alloc", "node1", ""); code == 0 || !strings.Contains(errOut, `domain "" is empty`) {
		t.Errorf("alloc of an empty domain: exit %d %s", code, errOut)
	}
	idn := strings.TrimSpace(mustCLI(t, bin, "alloc", "node1", "bücher.de"))
	if out := strings.TrimSpace(mustCLI(t, bin, "lookup", "node1", idn)); out != "xn--bcher-kva.de" {
		t.Errorf("bücher.de was given %s, which stands for %q; want its ASCII form xn--bcher-kva.de", idn, out)
	}
	if resp, err := httpc.Post("http://127.0.0.1:7480/v1/clients/node1/domains/B%C3%BCcher.DE", "", nil); err != nil {
		t.Error(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"domain":"xn--bcher-kva.de"`) || !strings.Contains(string(body), idn) {
			t.Errorf("the API's Bücher.DE: %d %s, want %s as xn--bcher-kva.de", resp.StatusCode, body, idn)
		}
	}
	// Completion: the script calls the binary back with COMP_LINE.
	if out := mustCLI(t, bin, "completion", "bash"); !strings.HasPrefix(out, "complete -C /") || !strings.HasSuffix(out, " ippool\n") {
		t.Errorf("completion bash: %q", out)
	}
	for line, want := range map[string]string{"ippool clu": "cluster", "ippool pool set --dr": "--dry-run", "ippool serve --http-a": "--http-addr"} {
		cmd := testcluster.Command(t, time.Minute, bin)
		cmd.Env = append(cleanEnv(), "COMP_LINE="+line)
		out, err := cmd.Output()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("completing %q: %q, %v; want %s", line, out, err, want)
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		if out := mustCLI(t, bin, args...); !strings.HasPrefix(out, "ippool "+buildinfo.Version+" ") || !strings.Contains(out, fmt.Sprintf("log entry versions %s, writes %d", buildinfo.Get().Reads(), pool.EntryVersion)) {
			t.Errorf("ippool %s: %q", strings.Join(args, " "), out)
		}
	}
	if _, errOut, code := cli(t, bin, "cluster", "remove", "no-such-server"); code == 0 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("cluster remove of an unknown server: exit %d %s", code, errOut)
	}
	if out := mustCLI(t, bin, "pool", "show"); !strings.Contains(out, "198.18.0.0/15") {
		t.Fatalf("pool show:\n%s", out)
	}
	if out := mustCLI(t, bin, "version"); !strings.Contains(out, "go1.") {
		t.Fatalf("version:\n%s", out)
	}
	tlsDir := filepath.Join(dir, "tls")
	mustCLI(t, bin, "tls", "init", "--dir", tlsDir, "--servers", "2")
	for _, f := range []string{"ca/ca.pem", "ca/ca-key.pem", "server-1/ca.pem", "server-1/cert.pem", "server-2/key.pem"} {
		if _, err := os.Stat(filepath.Join(tlsDir, f)); err != nil {
			t.Fatalf("tls init did not write %s", f)
		}
	}
	// The CA key stays in ca/, away from what is copied to the servers.
	if m, _ := filepath.Glob(filepath.Join(tlsDir, "server-*", "ca-key.pem")); len(m) > 0 {
		t.Fatalf("tls init put the CA key in a server's directory: %v", m)
	}
	if _, _, code := cli(t, bin, "tls", "init", "--dir", tlsDir, "--servers", "2"); code == 0 {
		t.Fatal("tls init overwrote an existing CA")
	}
	var bench struct {
		Overall struct {
			Count int `json:"count"`
		} `json:"overall"`
	}
	benchOut := mustCLI(t, bin, "bench", "--ops", "300", "--concurrency", "4", "--clients", "3", "--domains", "50", "--json")
	if err := json.Unmarshal([]byte(benchOut), &bench); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, benchOut)
	}
	// The run released what it made.
	var left struct {
		Mappings []any `json:"mappings"`
	}
	for k := range 3 {
		if err := json.Unmarshal([]byte(mustCLI(t, bin, "list", fmt.Sprintf("bench-%d", k), "--json")), &left); err != nil || len(left.Mappings) != 0 {
			t.Errorf("bench-%d holds %d mappings after the run (%v)", k, len(left.Mappings), err)
		}
	}

	// Snapshot save, inspect, release, restore.
	backup := filepath.Join(dir, "backup.snap")
	saved := mustCLI(t, bin, "snapshot", "save", backup)
	if fi, err := os.Stat(backup); err != nil {
		t.Error(err)
	} else if !strings.Contains(saved, fmt.Sprintf(": %d bytes,", fi.Size())) {
		t.Errorf("snapshot save said %q; the file has %d bytes", saved, fi.Size())
	}
	if out := mustCLI(t, bin, "snapshot", "inspect", backup); !strings.Contains(out, "198.18.0.0/15") {
		t.Fatalf("snapshot inspect:\n%s", out)
	}
	if out := mustCLI(t, bin, "release", "node1", "example.com"); !strings.Contains(out, "released") {
		t.Fatalf("release:\n%s", out)
	}
	if _, _, code := cli(t, bin, "lookup", "node1", ip); code != 2 {
		t.Fatalf("lookup after release exited %d, want 2", code)
	}
	mustCLI(t, bin, "snapshot", "restore", backup)
	if got := strings.TrimSpace(mustCLI(t, bin, "lookup", "node1", ip)); got != "example.com" {
		t.Fatalf("after restore, lookup printed %q", got)
	}
	corrupt, _ := os.ReadFile(backup)
	corrupt[len(corrupt)-10] ^= 0xff
	os.WriteFile(backup+".bad", corrupt, 0o644)
	if _, _, code := cli(t, bin, "snapshot", "inspect", backup+".bad"); code == 0 {
		t.Fatal("inspect accepted a corrupt backup")
	}
	if _, _, code := cli(t, bin, "snapshot", "restore", backup+".bad"); code == 0 {
		t.Fatal("restore accepted a corrupt backup")
	}

	// Every endpoint, and every error with its status and code.
	big := bytes.Repeat([]byte("x"), 1<<20)
	for _, c := range []apiCase{
		{"alloc", "POST", "/v1/clients/node2/domains/a.example", nil, 200, ""},
		{"get", "GET", "/v1/clients/node2/domains/a.example", nil, 200, ""},
		{"get missing", "GET", "/v1/clients/node2/domains/none.example", nil, 404, "not_found"},
		{"lookup", "GET", "/v1/clients/node2/ips/198.18.0.0", nil, 200, ""},
		{"lookup missing", "GET", "/v1/clients/node2/ips/198.18.0.77", nil, 404, "not_found"},
		{"bad client", "POST", "/v1/clients/bad%20id/domains/a.example", nil, 400, "invalid_client"},
		{"long client", "POST", "/v1/clients/" + strings.Repeat("c", 129) + "/domains/a.example", nil, 400, "invalid_client"},
		{"bad domain", "POST", "/v1/clients/node2/domains/a..example", nil, 400, "invalid_domain"},
		{"bad domain chars", "POST", "/v1/clients/node2/domains/a%21b.example", nil, 400, "invalid_domain"},
		{"malformed address", "GET", "/v1/clients/node2/ips/198.18.0.999", nil, 400, "invalid_address"},
		{"ipv6 address", "GET", "/v1/clients/node2/ips/fd00::1", nil, 400, "invalid_address"},
		{"outside the pool", "GET", "/v1/clients/node2/ips/8.8.8.8", nil, 400, "invalid_address"},
		{"oversized body", "POST", "/v1/clients/node2/domains/b.example", big, 413, "body_too_large"},
		{"oversized pool body", "PUT", "/v1/pool", big, 413, "body_too_large"},
		{"bad pool", "PUT", "/v1/pool", []byte(`{"pool":"10.0.0.1/24"}`), 400, "invalid_config"},
		{"unknown endpoint", "GET", "/v1/nothing", nil, 404, "not_found"},
		{"list", "GET", "/v1/clients/node2?consistent=true", nil, 200, ""},
		{"cluster", "GET", "/v1/cluster", nil, 200, ""},
		{"pool", "GET", "/v1/pool", nil, 200, ""},
		{"healthz", "GET", "/healthz", nil, 200, ""},
		{"readyz", "GET", "/readyz", nil, 200, ""},
		{"release", "DELETE", "/v1/clients/node2/domains/a.example", nil, 200, ""},
		{"release client", "DELETE", "/v1/clients/node2", nil, 200, ""},
		{"remove unknown server", "DELETE", "/v1/cluster/servers/nope", nil, 404, "not_found"},
	} {
		status, body := doAPI(t, c.method, c.path, c.body)
		if status != c.status || (c.code != "" && body["code"] != c.code) {
			t.Errorf("%s: %s %s = %d %v, want %d %s", c.name, c.method, c.path, status, body, c.status, c.code)
		}
		if c.code != "" && (body["error"] == nil || body["error"] == "") {
			t.Errorf("%s: error body has no sentence: %v", c.name, body)
		}
	}
	// The oversized request changed nothing.
	if status, _ := doAPI(t, "GET", "/v1/clients/node2/domains/b.example", nil); status != 404 {
		t.Errorf("the oversized allocation left a mapping (status %d)", status)
	}

	// An exhausted pool: shrink it to a /31 through the API.
	if status, body := doAPI(t, "PUT", "/v1/pool", []byte(`{"pool":"10.9.0.0/31","lifetime":"1h"}`)); status != 200 {
		t.Fatalf("set pool: %d %v", status, body)
	}
	for i, want := range []int{200, 200, 409} {
		status, body := doAPI(t, "POST", fmt.Sprintf("/v1/clients/small/domains/d%d.example", i), nil)
		if status != want || (want == 409 && (body["code"] != "pool_exhausted" || !strings.Contains(fmt.Sprint(body["error"]), "small"))) {
			t.Fatalf("allocation %d on a /31: %d %v, want %d", i, status, body, want)
		}
	}
	// Back to the first pool: the /31's two mappings would go, so the
	// change is refused without --yes, and --dry-run only says so.
	if _, errOut, code := cli(t, bin, "pool", "set", "--pool", "198.18.0.0/15", "--lifetime", "48h"); code == 0 || !strings.Contains(errOut, "would release 2 mappings of 1 client") || !strings.Contains(errOut, "--yes") {
		t.Fatalf("pool set releasing mappings without --yes: exit %d %s", code, errOut)
	}
	if out := mustCLI(t, bin, "pool", "set", "--pool", "198.18.0.0/15", "--lifetime", "48h", "--dry-run"); !strings.Contains(out, "would release  2 mappings of 1 client") {
		t.Fatalf("pool set --dry-run:\n%s", out)
	}
	if status, _ := doAPI(t, "GET", "/v1/clients/small/domains/d0.example", nil); status != 200 {
		t.Fatalf("a refused or dry-run pool change released a mapping (status %d)", status)
	}
	if out := mustCLI(t, bin, "pool", "set", "--pool", "198.18.0.0/15", "--lifetime", "48h", "--yes"); !strings.Contains(out, "released  2 mappings") {
		t.Fatalf("pool set --yes:\n%s", out)
	}
	// The change released every mapping outside the /31.
	if _, _, code := cli(t, bin, "lookup", "node1", ip2); code != 2 {
		t.Fatalf("a mapping outside the changed pool survived (exit %d)", code)
	}
	kept := strings.TrimSpace(mustCLI(t, bin, "alloc", "node1", "kept.example"))

	// Metrics parse as Prometheus text and count what happened.
	resp, err := httpc.Get(zeroFlagURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	// Legacy validation: names a Prometheus of any age accepts.
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	for _, name := range []string{"ippool_allocations_total", "ippool_exhaustions_total", "ippool_lookups_total", "ippool_raft_state", "ippool_raft_applied_index", "ippool_write_batch_seconds", "ippool_mappings", "ippool_raft_commitTime", "ippool_raft_leader_dispatchLog"} {
		if families[name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	if f := families["ippool_exhaustions_total"]; f != nil && f.GetMetric()[0].GetCounter().GetValue() < 1 {
		t.Error("ippool_exhaustions_total did not count the exhaustion")
	}
	if f := families["ippool_raft_state"]; f != nil && model.SampleValue(f.GetMetric()[0].GetGauge().GetValue()) != 2 {
		t.Error("ippool_raft_state is not leader (2) on a single server")
	}

	// A restart with the same data dir keeps the mappings.
	z.stop()
	startZeroFlag(t, bin, dir)
	if got := strings.TrimSpace(mustCLI(t, bin, "lookup", "node1", kept)); got != "kept.example" {
		t.Fatalf("after restart, lookup printed %q", got)
	}
}
