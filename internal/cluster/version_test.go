package cluster

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/pool"
)

// An entry of a version only a newer build reads is not a bad entry to skip
// (S10) but a log this server cannot follow: it stops applying before it,
// stops answering from local state, and exits naming both versions; started
// again on the same data dir it refuses to start, naming them again, instead
// of skipping the entry and answering as if it were not there.
func TestFutureEntryStopsTheServerAndItsRestart(t *testing.T) {
	cfg := Config{ID: "solo", DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Insecure: true, Logger: testLogger(t)}
	n := startSolo(t, cfg)
	ctx := t.Context()
	if _, err := n.Propose(ctx, []pool.Op{{Kind: pool.OpAllocate, ID: n.NextRequestID(), Time: n.Now(), Client: "c", Domain: "before.example"}}); err != nil {
		t.Fatal(err)
	}
	before := n.fsm.applied.Load()
	// What a build writing entry version 4 would append: only its first
	// byte and its checksum trailer matter to this one.
	future := binary.LittleEndian.AppendUint32([]byte{pool.EntryVersion + 1, 0}, crc32.Checksum([]byte{pool.EntryVersion + 1, 0}, crc32.MakeTable(crc32.Castagnoli)))
	if err := n.raft.Apply(future, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	var fatal error
	select {
	case fatal = <-n.Fatal():
	case <-time.After(30 * time.Second):
		t.Fatal("the server went on after an entry of a future version")
	}
	for _, want := range []string{"version 4", "newer ippool", "reads log entry versions 1 to 3", "upgrade this server"} {
		if !strings.Contains(fatal.Error(), want) {
			t.Errorf("the server stopped with %q, which does not say %q", fatal, want)
		}
	}
	if n.LocalReadOK() || n.CaughtUp() {
		t.Error("a server stopped before an entry it cannot read still answers from local state")
	}
	if got := n.fsm.applied.Load(); got != before {
		t.Errorf("applied index %d after the future entry, want %d (stopped before it)", got, before)
	}
	n.Shutdown()

	_, err := Start(cfg)
	if err == nil {
		t.Fatal("a server started on a data dir whose log holds an entry of a future version")
	}
	for _, want := range []string{"log entry version 4", "newer ippool", "reads versions 1 to 3", "does not start"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the restart refused with %q, which does not say %q", err, want)
		}
	}
}

// A feature that writes a newer entry version is refused, retryably and
// naming every server that cannot read it, until all of them can; one
// every server reads is not refused.
func TestRequireEntryVersionNamesTheOlderServers(t *testing.T) {
	tc := startCluster(t, 3, nil)
	n := tc.waitReady(3)
	ctx := t.Context()
	if err := n.RequireEntryVersion(ctx, pool.EntryVersion, "allocation"); err != nil {
		t.Fatalf("a version every server reads: %v", err)
	}
	err := n.RequireEntryVersion(ctx, pool.EntryVersion+1, "the policy")
	if pool.CodeOf(err) != pool.CodeFeatureUnavailable {
		t.Fatalf("a version no server reads: %v, want feature_unavailable", err)
	}
	for _, want := range []string{"the policy needs every server to read log entry version 4", "s1 (", "s2 (", "s3 (", "reads up to 3", "retry once every server is upgraded"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

// A server that cannot read what the cluster writes is refused at join,
// whichever side finds out, naming both versions; one that says nothing
// (a release before 0.3.0) reads the baseline.
func TestJoinRefusesAServerThatCannotReadTheLog(t *testing.T) {
	if err := checkCanRead("s4", []int{1, 2, 3}, 3, "0.3.0"); err != nil {
		t.Fatal(err)
	}
	if err := checkCanRead("s4", nil, 3, ""); err != nil {
		t.Fatalf("a release before 0.3.0 reads 1 to 3: %v", err)
	}
	err := checkCanRead("s4", []int{1, 2, 3}, 4, "0.3.0")
	for _, want := range []string{"s4 runs ippool 0.3.0", "up to 3", "writes version 4", "upgrade it"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not say %q", err, want)
		}
	}
	if err := checkCanRead("s4", nil, 4, ""); err == nil || !strings.Contains(err.Error(), "a release before 0.3.0") {
		t.Errorf("an old server joining a cluster that writes 4: %v", err)
	}
}
