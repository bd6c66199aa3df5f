package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/ca"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcerts"
	"github.com/ippool/ippool/pool"
)

// Access to the cluster port and the data dir (issue 13): the automatic CA,
// certificate issuing, joins that would replace a live server, and
// owner-only files.

func TestNewSingleServerMakesItsOwnCAAndKeepsIt(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{ID: "solo", DataDir: dir, ClusterAddr: freeAddr(t), Logger: testLogger(t)}
	n := startSolo(t, cfg)
	if n.cfg.TLS == nil {
		t.Fatal("a new single server without TLS files runs plain TCP")
	}
	caFile := filepath.Join(dir, "tls", "ca.pem")
	if err := testcerts.VerifiesServer(t, caFile, filepath.Join(dir, "tls", "server.pem"), ca.ServerName); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(caFile)
	n.Shutdown()
	// Restarted, even with --join (a first server whose later servers are
	// now given to it as peers), it keeps its CA: the servers it issued
	// certificates to still trust it.
	cfg.Join = []string{freeAddr(t)}
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown() // Shutdown is idempotent
	if again, _ := os.ReadFile(caFile); !bytes.Equal(first, again) {
		t.Fatal("the restart made a new CA")
	}
	if n.cfg.TLS == nil {
		t.Fatal("the restart runs plain TCP")
	}
	poll.Until(t, 10*time.Second, "the restarted server to lead", n.IsLeader)
	n.Shutdown()
	// Insecure does not turn a data dir's CA off either.
	cfg.Insecure = true
	again, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Shutdown()
	if again.cfg.TLS == nil {
		t.Fatal("with Insecure, a server whose data dir has a CA runs plain TCP")
	}
	// And Insecure on a new data dir is plain TCP, with no CA made.
	plain := startSolo(t, Config{ID: "plain", DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Insecure: true, Logger: testLogger(t)})
	defer plain.Shutdown()
	if plain.cfg.TLS != nil || hasAutoTLS(plain.cfg.DataDir) {
		t.Fatal("an insecure new server made a CA")
	}
}

func TestJoinWithoutTLSRefusesToStart(t *testing.T) {
	for _, c := range []Config{
		{Join: []string{"127.0.0.1:1"}},
		{Join: []string{"127.0.0.1:1", "127.0.0.1:2"}, BootstrapExpect: 3},
	} {
		c.ID, c.DataDir, c.ClusterAddr, c.Logger = "s2", filepath.Join(t.TempDir(), "data"), freeAddr(t), testLogger(t)
		n, err := Start(c)
		if err == nil {
			n.Shutdown()
			t.Fatalf("join=%v bootstrap-expect=%d without TLS started", c.Join, c.BootstrapExpect)
		}
		for _, want := range []string{"ippool tls issue", "ippool tls init", "--tls-ca", "--tls-cert", "--tls-key", "--insecure"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the refusal does not mention %s: %v", want, err)
			}
		}
		if _, err := os.Stat(c.DataDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the refused server made its data dir (%v)", err)
		}
	}
}

// TestServerWithACertificateFromTheFirstServersCAJoins is the way a cluster
// grows from one server started without flags.
func TestServerWithACertificateFromTheFirstServersCAJoins(t *testing.T) {
	first := startSolo(t, Config{ID: "s1", DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Logger: testLogger(t), RaftTimeout: 300 * time.Millisecond})
	defer first.Shutdown()
	out := filepath.Join(t.TempDir(), "s2-tls")
	if _, err := ca.Issue(first.cfg.DataDir, out, time.Hour); err != nil {
		t.Fatal(err)
	}
	conf, err := ca.ServerFiles(out).Load()
	if err != nil {
		t.Fatal(err)
	}
	second, err := Start(Config{ID: "s2", DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Join: []string{first.ClusterAddr()}, TLS: conf,
		Logger: testLogger(t), RaftTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Shutdown()
	tc := &testCluster{t: t, nodes: []*Node{first, second}}
	tc.waitReady(2)
	res, err := second.Propose(context.Background(), []pool.Op{allocOp(second, "c", "a.example")})
	if err != nil || res[0].Err != nil {
		t.Fatalf("a write through the joined server: %v %v", err, res)
	}
}

func serverAddr(t *testing.T, n *Node, id string) string {
	t.Helper()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(id) {
			return string(s.Address)
		}
	}
	return ""
}

func TestJoinReplacingALiveServerIsRefused(t *testing.T) {
	tc := startCluster(t, 3, nil)
	leader := tc.waitReady(3)
	var victim int
	for i, n := range tc.nodes {
		if n != leader {
			victim = i
		}
	}
	id, addr := tc.cfgs[victim].ID, tc.cfgs[victim].ClusterAddr

	// A server with a live server's ID at another address.
	impostor, err := Start(Config{ID: id, DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Join: []string{leader.ClusterAddr()},
		Insecure: true, Logger: testLogger(t), RaftTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer impostor.Shutdown()
	select {
	case err := <-impostor.Fatal():
		for _, want := range []string{"live", "ippool cluster remove " + id, addr} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the refusal does not say %q: %v", want, err)
			}
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the server joining with a live server's ID was neither admitted nor refused")
	}
	// Another ID at a live server's address, asked of the leader directly
	// (no second process can listen there).
	body := []byte(`{"id":"other","addr":"` + addr + `","entry_versions":[` + fmt.Sprint(pool.EntryVersion) + `]}`)
	err = leader.rpc.call(context.Background(), leader.ClusterAddr(), rpcJoin, body, &Info{})
	if !errors.Is(err, pool.ErrInvalidConfig) || !strings.Contains(err.Error(), "ippool cluster remove "+id) {
		t.Fatalf("a join at a live server's address: %v", err)
	}
	// And the leader's own ID.
	body = []byte(`{"id":"` + leader.ID() + `","addr":"127.0.0.1:1","entry_versions":[` + fmt.Sprint(pool.EntryVersion) + `]}`)
	if err := leader.rpc.call(context.Background(), leader.ClusterAddr(), rpcJoin, body, &Info{}); !errors.Is(err, pool.ErrInvalidConfig) {
		t.Fatalf("a join with the leader's ID: %v", err)
	}
	if got := serverAddr(t, leader, id); got != addr {
		t.Fatalf("%s is now at %q in the configuration, want %s", id, got, addr)
	}
	if f := leader.raft.GetConfiguration(); len(f.Configuration().Servers) != 3 {
		t.Fatalf("the configuration has %d servers", len(f.Configuration().Servers))
	}
}

func TestJoinReplacingADeadServerIsAllowed(t *testing.T) {
	tc := startCluster(t, 3, nil)
	leader := tc.waitReady(3)
	var victim int
	for i, n := range tc.nodes {
		if n != leader {
			victim = i
		}
	}
	tc.nodes[victim].Shutdown()
	tc.nodes[victim] = nil
	// It comes back with an empty data dir at a new address, as after
	// losing its disk and its host.
	cfg := tc.cfgs[victim]
	cfg.DataDir, cfg.ClusterAddr, cfg.Join, cfg.BootstrapExpect = t.TempDir(), freeAddr(t), []string{leader.ClusterAddr()}, 0
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.nodes[victim], tc.cfgs[victim] = n, cfg
	poll.Until(t, 15*time.Second, "the replacement to be in the configuration", func() bool {
		select {
		case err := <-n.Fatal():
			t.Fatalf("the replacement was refused: %v", err)
		default:
		}
		return serverAddr(t, leader, cfg.ID) == cfg.ClusterAddr
	})
	tc.waitReady(3)
}

func TestRecordWriteRoundTripsAndLeavesNoTempFile(t *testing.T) {
	dir := t.TempDir()
	p, _ := pool.ParseConfig("10.0.0.0/24", "", time.Hour)
	n := &Node{cfg: Config{ID: "s1", DataDir: dir, ClusterAddr: "127.0.0.1:7481"}}
	for _, r := range []record{{ID: "s1", ClusterAddr: "127.0.0.1:7481"}, {ID: "s1", ClusterAddr: "127.0.0.1:7481", PoolConfig: &p}} {
		if err := n.writeRecord(r); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 || entries[0].Name() != recordFile {
			t.Fatalf("the data dir holds %v after writing the record, want only %s", entries, recordFile)
		}
		info, err := os.Stat(filepath.Join(dir, recordFile))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Fatalf("the record has mode %v, want 0600", info.Mode().Perm())
		}
		n.cfg.Pool = r.PoolConfig
		if err := n.checkRecord(); err != nil {
			t.Fatalf("the record written does not read back: %v", err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, recordFile))
	if !strings.Contains(string(b), "10.0.0.0/24") {
		t.Fatalf("the record lost the pool: %s", b)
	}
}

func TestDataDirIsMadeOwnerOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	// As systemd's StateDirectory, an older binary or a library left it.
	if err := os.MkdirAll(filepath.Join(dir, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "note"), filepath.Join(dir, "old", "file")} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	cfg := Config{ID: "solo", DataDir: dir, ClusterAddr: freeAddr(t), Logger: testLogger(t)}
	startSolo(t, cfg).Shutdown()
	// Files the libraries made while it ran (without `ippool serve`'s
	// umask) are fixed by the next start.
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	testcerts.OwnerOnly(t, dir)
}

// A new server whose cluster address is taken says which flag to change and
// leaves its data dir without a CA: it binds before it makes one.
func TestClusterAddrInUseLeavesNoCA(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	_, err = Start(Config{ID: "solo", DataDir: dir, ClusterAddr: ln.Addr().String(), Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "--cluster-addr "+ln.Addr().String()+" is in use") {
		t.Fatalf("starting on a taken address: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tls")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a CA was made before the bind failed: %v", err)
	}
}
