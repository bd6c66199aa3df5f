package main

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/ippool/ippool/internal/cluster"
)

// flagEnvs is every flag of the command line with the environment
// variables it reads, as kong builds them.
func flagEnvs(t *testing.T) map[string][]string {
	t.Helper()
	var cli CLI
	p, err := newParser(&cli)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	var walk func(n *kong.Node, path string)
	walk = func(n *kong.Node, path string) {
		for _, f := range n.Flags {
			out[path+" --"+f.Name] = f.Envs
		}
		for _, c := range n.Children {
			walk(c, path+" "+c.Name)
		}
	}
	walk(p.Model.Node, "ippool")
	return out
}

// Every serve flag is IPPOOL_<FLAG>, which DESIGN.md promises and
// deployments rely on, and the defaults taken from package constants are
// what the flags had before they were.
func TestServeFlagsReadTheirEnvironmentVariable(t *testing.T) {
	envs := flagEnvs(t)
	n := 0
	for flag, env := range envs {
		name, ok := strings.CutPrefix(flag, "ippool serve --")
		if !ok || name == "help" {
			continue
		}
		n++
		want := "IPPOOL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if !slices.Equal(env, []string{want}) {
			t.Errorf("serve --%s reads %v, want [%s]", name, env, want)
		}
	}
	if n < 70 {
		t.Errorf("only %d serve flags found", n)
	}
	for flag, want := range map[string][]string{
		"ippool --ca-cert": {"IPPOOL_CACERT"}, "ippool --addr": {"IPPOOL_ADDR"}, "ippool --token": {"IPPOOL_TOKEN"},
		"ippool pool set --pool": nil, "ippool pool set --exclude": nil, "ippool pool set --lifetime": nil,
	} {
		if got := envs[flag]; !slices.Equal(got, want) {
			t.Errorf("%s reads %v, want %v", flag, got, want)
		}
	}
	if os.Getenv("IPPOOL_DUMP_FLAGS") != "" {
		for flag, env := range envs {
			fmt.Println(flag, env)
		}
	}
}

func TestFlagDefaultsFromConstants(t *testing.T) {
	var cli CLI
	p, err := newParser(&cli)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"serve"}); err != nil {
		t.Fatal(err)
	}
	s := cli.Serve
	got := fmt.Sprintln(s.HTTPAddr, s.ClusterAddr, s.RaftTimeout, s.SnapshotThreshold, s.MaxRestoreBytes, s.HTTPBodyTimeout, s.DNSTTL, s.DNSCacheMaxTTL,
		len(s.DNSAllow), s.ConnectorPort, s.ConnectorMark, s.ConnectorTable, s.ConnectorMaxFlows, s.ConnectorClientRate, s.ConnectorHalfCloseTimeout)
	want := fmt.Sprintln("127.0.0.1:7480", "127.0.0.1:7481", 500*time.Millisecond, uint64(16384), int64(4<<30), 2*time.Minute, time.Minute, time.Hour, 7, 7490, uint32(0x1b1), 7490, 16384, 200.0, time.Minute)
	if got != want {
		t.Errorf("serve's defaults %s, want %s", got, want)
	}
	if s.MaxMappings != cluster.DefaultMaxMappings || s.MaxMappingsPerClient != cluster.DefaultMaxMappingsPerClient || s.MaxDomainBytes != cluster.DefaultMaxDomainBytes {
		t.Errorf("quota defaults %d %d %d", s.MaxMappings, s.MaxMappingsPerClient, s.MaxDomainBytes)
	}
}

// A wrong pool flag is named alone.
func TestPoolFlagErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		pool, exclude string
		lifetime      time.Duration
		want          string
	}{
		{"10.0.0.0/33", "", time.Hour, `--pool "10.0.0.0/33"`},
		{"10.0.0.0/24", "10.0.0.x", time.Hour, `--exclude "10.0.0.x"`},
		{"10.0.0.0/24", "", time.Millisecond, "--lifetime 1ms is under the minimum"},
		{"127.0.0.0/24", "", time.Hour, `--pool "127.0.0.0/24" with --exclude ""`},
	} {
		_, err := parsePoolFlags(tc.pool, tc.exclude, tc.lifetime)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q %q %v: %v, want it to start %q", tc.pool, tc.exclude, tc.lifetime, err, tc.want)
		}
	}
	if _, err := parsePoolFlags("10.0.0.0/24", "10.0.0.1", time.Hour); err != nil {
		t.Error(err)
	}
}

// serve --config: the file's settings apply where neither a flag nor an
// IPPOOL_ variable says otherwise; lists are arrays; a key that names no
// flag is refused.
func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/ippool.json"
	os.WriteFile(file, []byte(`{"http_addr": "127.0.0.1:9999", "cluster_addr": "127.0.0.1:9998", "join": ["10.0.0.2:7481", "10.0.0.3:7481"],
		"max_clients": 5, "acl": true, "data_dir": "from-file", "raft_timeout": "2s"}`), 0o600)
	t.Setenv("IPPOOL_DATA_DIR", "from-env")
	var cli CLI
	p, err := newParser(&cli)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"serve", "--config", file, "--cluster-addr", "127.0.0.1:7000"}); err != nil {
		t.Fatal(err)
	}
	s := cli.Serve
	got := fmt.Sprintln(s.HTTPAddr, s.ClusterAddr, s.Join, s.MaxClients, s.ACL, s.DataDir, s.RaftTimeout)
	want := fmt.Sprintln("127.0.0.1:9999", "127.0.0.1:7000", []string{"10.0.0.2:7481", "10.0.0.3:7481"}, 5, true, "from-env", 2*time.Second)
	if got != want {
		t.Errorf("settings %s want %s", got, want)
	}

	os.WriteFile(file, []byte(`{"http_adr": "127.0.0.1:9999"}`), 0o600)
	var cli2 CLI
	p2, _ := newParser(&cli2)
	if _, err := p2.Parse([]string{"serve", "--config", file}); err == nil || !strings.Contains(err.Error(), "http_adr names no flag") {
		t.Errorf("a misspelt key: %v", err)
	}
}

// The quota flags reach the cluster's configuration, 0 meaning no bound,
// and a negative one is refused naming its flag.
func TestQuotaFlagsReachTheCluster(t *testing.T) {
	parse := func(args ...string) (cluster.Config, error) {
		t.Helper()
		var cli CLI
		p, err := newParser(&cli)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Parse(append([]string{"serve", "--data-dir", t.TempDir()}, args...)); err != nil {
			t.Fatal(err)
		}
		return cli.Serve.clusterConfig(slog.New(slog.DiscardHandler))
	}
	cfg, err := parse("--max-mappings", "7", "--max-mappings-per-client", "0", "--max-domain-bytes", "9")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxMappings != 7 || cfg.MaxMappingsPerClient != -1 || cfg.MaxDomainBytes != 9 {
		t.Fatalf("cluster config %d %d %d, want 7 -1 (no bound) 9", cfg.MaxMappings, cfg.MaxMappingsPerClient, cfg.MaxDomainBytes)
	}
	if _, err := parse("--max-domain-bytes=-5"); err == nil || !strings.Contains(err.Error(), "--max-domain-bytes -5") {
		t.Fatalf("a negative bound: %v", err)
	}
	if cfg, err = parse("--max-clients", "0"); err != nil || cfg.MaxClients != -1 {
		t.Fatalf("--max-clients 0: %d, %v; want -1 (no bound)", cfg.MaxClients, err)
	}
	if cfg, err = parse("--max-clients", "12"); err != nil || cfg.MaxClients != 12 {
		t.Fatalf("--max-clients 12: %d, %v", cfg.MaxClients, err)
	}
	if _, err := parse("--max-clients=-1"); err == nil || !strings.Contains(err.Error(), "--max-clients -1") {
		t.Fatalf("a negative client bound: %v", err)
	}
}

func TestMemoryLimitRatioIsAShare(t *testing.T) {
	for ratio, ok := range map[string]bool{"0": true, "0.9": true, "1": true, "1.5": false, "-0.1": false} {
		var cli CLI
		p, err := newParser(&cli)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Parse([]string{"serve", "--data-dir", t.TempDir(), "--memory-limit-ratio=" + ratio}); err != nil {
			t.Fatal(err)
		}
		_, err = cli.Serve.config()
		if refused := err != nil && strings.Contains(err.Error(), "--memory-limit-ratio"); refused == ok {
			t.Errorf("--memory-limit-ratio %s: %v", ratio, err)
		}
	}
}
