package cluster

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
)

// Access to the cluster port and the data dir (issue 13): the automatic CA,
// certificate issuing, joins that would replace a live server, and
// owner-only files.

// ownerOnly fails the test for any directory under root that is not 0700 or
// file that is not 0600.
func ownerOnly(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, info.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// verifies reports whether the certificate in certFile is signed by the CA
// in caFile for ServerName.
func verifies(t *testing.T, caFile, certFile string) error {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: ServerName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

func TestInitTLSKeepsTheCAKeyApartAndNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	written, err := InitTLS(dir, 2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var rel []string
	for _, p := range written {
		r, _ := filepath.Rel(dir, p)
		rel = append(rel, r)
	}
	want := "ca/ca.pem ca/ca-key.pem server-1/ca.pem server-1/cert.pem server-1/key.pem server-2/ca.pem server-2/cert.pem server-2/key.pem"
	if got := strings.Join(rel, " "); got != want {
		t.Fatalf("InitTLS wrote %s, want %s", got, want)
	}
	ownerOnly(t, dir)
	for _, s := range []string{"server-1", "server-2"} {
		if err := verifies(t, filepath.Join(dir, "ca", "ca.pem"), filepath.Join(dir, s, "cert.pem")); err != nil {
			t.Errorf("%s's certificate: %v", s, err)
		}
		if _, err := ServerTLSFiles(filepath.Join(dir, s)).Load(); err != nil {
			t.Errorf("%s's directory does not load: %v", s, err)
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca", "ca-key.pem"))
	if _, err := InitTLS(dir, 2, time.Hour); err == nil || !strings.Contains(err.Error(), "never overwritten") {
		t.Fatalf("a second InitTLS into the same dir: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca", "ca-key.pem")); !bytes.Equal(before, after) {
		t.Fatal("the second InitTLS changed the CA key")
	}
}

func TestIssueTLSFromEveryKindOfCADir(t *testing.T) {
	root := t.TempDir()
	initDir := filepath.Join(root, "init")
	if _, err := InitTLS(initDir, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(root, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := makeAutoTLS(dataDir, "s1"); err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct{ from, ca string }{
		{filepath.Join(initDir, "ca"), filepath.Join(initDir, "ca", "ca.pem")},
		{initDir, filepath.Join(initDir, "ca", "ca.pem")},
		{dataDir, filepath.Join(dataDir, "tls", "ca.pem")},
		{filepath.Join(dataDir, "tls"), filepath.Join(dataDir, "tls", "ca.pem")},
	} {
		out := filepath.Join(root, "out", string(rune('a'+i)))
		if _, err := IssueTLS(c.from, out, time.Hour); err != nil {
			t.Fatalf("issuing from %s: %v", c.from, err)
		}
		ownerOnly(t, out)
		if err := verifies(t, c.ca, filepath.Join(out, "cert.pem")); err != nil {
			t.Errorf("issued from %s: %v", c.from, err)
		}
		caCopy, _ := os.ReadFile(filepath.Join(out, "ca.pem"))
		caOrig, _ := os.ReadFile(c.ca)
		if !bytes.Equal(caCopy, caOrig) {
			t.Errorf("issued from %s: out/ca.pem is not the CA's certificate", c.from)
		}
		if _, err := os.Stat(filepath.Join(out, "ca-key.pem")); err == nil {
			t.Errorf("issued from %s: the CA key was copied out", c.from)
		}
		if _, err := IssueTLS(c.from, out, time.Hour); err == nil || !strings.Contains(err.Error(), "never overwritten") {
			t.Errorf("issuing into a used dir: %v", err)
		}
	}
	if _, err := IssueTLS(root, filepath.Join(root, "x"), time.Hour); err == nil || !strings.Contains(err.Error(), "no CA key") {
		t.Fatalf("issuing from a dir without a CA: %v", err)
	}
}

func TestNewSingleServerMakesItsOwnCAAndKeepsIt(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{ID: "solo", DataDir: dir, ClusterAddr: freeAddr(t), Logger: testLogger(t)}
	n := startSolo(t, cfg)
	if n.cfg.TLS == nil {
		t.Fatal("a new single server without TLS files runs plain TCP")
	}
	ca := filepath.Join(dir, "tls", "ca.pem")
	if err := verifies(t, ca, filepath.Join(dir, "tls", "server.pem")); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(ca)
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
	if again, _ := os.ReadFile(ca); !bytes.Equal(first, again) {
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
	if _, err := IssueTLS(first.cfg.DataDir, out, time.Hour); err != nil {
		t.Fatal(err)
	}
	conf, err := ServerTLSFiles(out).Load()
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
	body := []byte(`{"id":"other","addr":"` + addr + `"}`)
	err = leader.rpc.call(context.Background(), leader.ClusterAddr(), rpcJoin, body, &Info{})
	if !errors.Is(err, pool.ErrInvalidConfig) || !strings.Contains(err.Error(), "ippool cluster remove "+id) {
		t.Fatalf("a join at a live server's address: %v", err)
	}
	// And the leader's own ID.
	body = []byte(`{"id":"` + leader.ID() + `","addr":"127.0.0.1:1"}`)
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
	ownerOnly(t, dir)
}
