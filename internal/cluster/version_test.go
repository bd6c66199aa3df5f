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
