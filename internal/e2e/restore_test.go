package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/testcluster"
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
