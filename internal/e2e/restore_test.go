package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/snapgen"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// TestOfflineRestoreSeedsANewServer backs up a running server, seeds a new
// data dir from the backup with the server stopped (as etcdutl does), starts
// a server on it and finds every mapping.
func TestOfflineRestoreSeedsANewServer(t *testing.T) {
	bin := testcluster.Binary(t)
	src := testcluster.Start(t, 1, testcluster.Options{FirstIP: 51})
	s := src.Servers[0]
	ctx := context.Background()
	want := map[string]string{}
	for i := range 20 {
		d := fmt.Sprintf("d%d.example", i)
		ip, err := alloc(ctx, s, "gw", d)
		if err != nil {
			t.Fatal(err)
		}
		want[ip] = d
	}
	backup := filepath.Join(t.TempDir(), "backup.snap")
	mustCLI(t, bin, "--addr", s.HTTPAddr, "snapshot", "save", backup)
	s.Stop(10 * time.Second)

	dst := testcluster.New(t, 1, testcluster.Options{FirstIP: 52})
	n := dst.Servers[0]
	out := mustCLI(t, bin, "snapshot", "restore", "--data-dir", n.DataDir, "--id", n.ID, "--cluster-addr", n.ClusterAddr, backup)
	if !strings.Contains(out, "seeded") {
		t.Fatalf("restore printed %q", out)
	}
	if _, errOut, code := cli(t, bin, "snapshot", "restore", "--data-dir", n.DataDir, "--id", n.ID, backup); code == 0 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("seeding a used data dir: exit %d %s", code, errOut)
	}
	n.Start()
	dst.WaitReady(30 * time.Second)
	for ip, d := range want {
		got, status, err := lookup(ctx, n, "gw", ip)
		if err != nil || got != d {
			t.Fatalf("restored server: %s -> %q (%d, %v), want %s", ip, got, status, err, d)
		}
	}
	// It takes writes: the pool and the next free address came with the backup.
	ip, err := alloc(ctx, n, "gw", "new.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, taken := want[ip]; taken {
		t.Fatalf("restored server handed out %s, which the backup maps", ip)
	}
}

// TestGeneratedSnapshotRestores: `snapshot generate` writes a state that a
// running cluster takes through `snapshot restore` and answers, both ways,
// for a sample of its mappings: the ones the same generator, seed and pool
// give in this process.
func TestGeneratedSnapshotRestores(t *testing.T) {
	bin := testcluster.Binary(t)
	c := testcluster.Start(t, 3, testcluster.Options{FirstIP: 53})
	leader := c.WaitReady(30 * time.Second)
	file := filepath.Join(t.TempDir(), "generated.snap")
	out := mustCLI(t, bin, "snapshot", "generate", "--clients", "200", "--mappings-per-client", "30", "--domain-bytes", "64",
		"--pool", "198.18.0.0/15", "--seed", "7", "--out", file)
	if !strings.Contains(out, "200 clients, 6000 mappings") {
		t.Fatalf("generate printed %q", out)
	}
	mustCLI(t, bin, "--addr", leader.HTTPAddr, "snapshot", "restore", file)

	cfg, err := pool.ParseConfig("198.18.0.0/15", "", pool.DefaultLifetime)
	if err != nil {
		t.Fatal(err)
	}
	want, err := snapgen.Generate(snapgen.Config{Pool: cfg, Clients: 200, MappingsPerClient: 30, DomainBytes: 64, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	checked := 0
	for _, client := range []string{"10.0.0.0", "10.0.0.57", "10.0.0.199"} {
		for _, m := range want.Mappings(client) {
			s := c.Servers[checked%len(c.Servers)]
			var got string
			poll.Until(t, 30*time.Second, "a restored mapping on "+s.ID, func() bool {
				var err error
				got, _, err = lookup(ctx, s, client, m.Addr.String())
				return err == nil && got != ""
			})
			if got != m.Domain {
				t.Fatalf("%s: %s %v -> %q, want %s", s.ID, client, m.Addr, got, m.Domain)
			}
			checked++
		}
	}
	if checked != 90 {
		t.Fatalf("checked %d mappings, want 90", checked)
	}
	for _, s := range c.Servers {
		st := apiGet[wire.Status](t, s, "/v1/cluster")
		if st.Usage == nil || st.Usage.Mappings != 6000 || st.Usage.Clients != 200 {
			t.Fatalf("%s after the restore: usage %+v", s.ID, st.Usage)
		}
	}
}
