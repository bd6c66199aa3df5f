package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
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
	// What a build writing the next entry version would append: only its
	// first byte and its checksum trailer matter to this one.
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
	for _, want := range []string{fmt.Sprintf("version %d", pool.EntryVersion+1), "newer ippool", fmt.Sprintf("reads log entry versions 1 to %d", pool.EntryVersion), "upgrade this server"} {
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
	for _, want := range []string{fmt.Sprintf("log entry version %d", pool.EntryVersion+1), "newer ippool", fmt.Sprintf("reads versions 1 to %d", pool.EntryVersion), "does not start"} {
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
	for _, want := range []string{fmt.Sprintf("the policy needs every server to read log entry version %d", pool.EntryVersion+1), "s1 (", "s2 (", "s3 (", fmt.Sprintf("reads up to %d", pool.EntryVersion), "retry once every server is upgraded"} {
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

// The leader writes the newest entry version only while every member is
// known to read it: a member that never answered, or reads less, holds it
// back, naming itself; one that stops answering keeps what it said; a
// server let in to join counts at once, before the membership the next
// refresh reads has it; and leadership lost forgets it all.
func TestEntryWritesFollowsTheOldestMember(t *testing.T) {
	w := newEntryWrites()
	if v, why := w.current(); v != baselineEntryVersion || why == "" {
		t.Fatalf("before any answer: %d %q", v, why)
	}
	newest := []int{1, 2, 3, pool.EntryVersion}
	s := func(id string, reachable bool, reads []int) ServerStatus {
		return ServerStatus{ID: id, Reachable: reachable, EntryVersions: reads}
	}
	w.update([]ServerStatus{s("s1", true, newest), s("s2", true, newest), s("s3", false, nil)})
	if v, why := w.current(); v != baselineEntryVersion || !strings.Contains(why, "s3 did not answer") {
		t.Fatalf("one member never answered: %d %q", v, why)
	}
	w.update([]ServerStatus{s("s1", true, newest), s("s2", true, newest), s("s3", true, []int{1, 2, 3})})
	if v, why := w.current(); v != 3 || !strings.Contains(why, "s3 reads up to 3") {
		t.Fatalf("an old member: %d %q", v, why)
	}
	if !w.update([]ServerStatus{s("s1", true, newest), s("s2", true, newest), s("s3", true, newest)}) {
		t.Fatal("the version did not change once the last member was upgraded")
	}
	if v, why := w.current(); v != pool.EntryVersion || why != "" {
		t.Fatalf("every member upgraded: %d %q", v, why)
	}
	if w.update([]ServerStatus{s("s1", true, newest), s("s2", true, newest), s("s3", false, nil)}) {
		t.Fatal("a member that stopped answering changed the version")
	}
	// An old server asking to join is refused once the cluster writes
	// what it cannot read.
	if err := w.admit("s4", []int{1, 2, 3}, "0.3.0"); err == nil {
		t.Fatal("an old server was let join a cluster writing the newest version")
	}
	if err := w.admit("s4", newest, "0.4.0"); err != nil {
		t.Fatal(err)
	}
	// A removed member no longer counts.
	w.update([]ServerStatus{s("s1", true, newest), s("s2", true, newest), s("s3", true, []int{1, 2, 3})})
	w.update([]ServerStatus{s("s1", true, newest), s("s2", true, newest)})
	if v, _ := w.current(); v != pool.EntryVersion {
		t.Fatalf("after the old member left: %d", v)
	}
	// While it writes version 3, an old server may join, and from then on
	// counts even before the membership shows it.
	w.update([]ServerStatus{s("s1", true, newest), s("s2", true, newest), s("s3", true, []int{1, 2, 3})})
	if err := w.admit("s5", nil, ""); err != nil {
		t.Fatalf("a server before 0.3.0 joining a cluster that writes 3: %v", err)
	}
	w.update([]ServerStatus{s("s1", true, newest), s("s2", true, newest)})
	if v, _ := w.current(); v != baselineEntryVersion {
		t.Fatalf("a server admitted a moment ago did not count: %d", v)
	}
	w.reset()
	if v, _ := w.current(); v != baselineEntryVersion {
		t.Fatalf("after reset: %d", v)
	}
}

// A leader whose every server reads version 4 writes it with its mapping
// quotas, and applying them refuses what passes one; /v1/cluster's status
// says they are enforced, shows the usage and raises an alarm.
func TestLeaderStampsMappingQuotas(t *testing.T) {
	cfg := Config{ID: "solo", DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Insecure: true, Logger: testLogger(t), MaxMappingsPerClient: 2, MaxMappings: 3}
	n := startSolo(t, cfg)
	t.Cleanup(func() { n.Shutdown() })
	poll.Until(t, 20*time.Second, "the leader to write version 4", func() bool {
		v, _ := n.writes.current()
		return v == pool.EntryVersion
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	alloc := func(client, domain string) error {
		res, err := n.Propose(ctx, []pool.Op{{Kind: pool.OpAllocate, ID: n.NextRequestID(), Client: client, Domain: domain}})
		if err != nil {
			t.Fatal(err)
		}
		return res[0].Err
	}
	for _, d := range []string{"a.example", "b.example"} {
		if err := alloc("c1", d); err != nil {
			t.Fatal(err)
		}
	}
	if err := alloc("c1", "c.example"); pool.QuotaOf(err) != "mappings_per_client" {
		t.Fatalf("a third mapping for c1: %v", err)
	}
	if err := alloc("c2", "a.example"); err != nil {
		t.Fatal(err)
	}
	if err := alloc("c3", "a.example"); pool.QuotaOf(err) != "mappings" {
		t.Fatalf("a fourth mapping: %v", err)
	}
	st := n.Status(ctx)
	if !st.QuotasEnforced || st.Usage == nil || st.Usage.Mappings != 3 || st.Limits.MaxMappings != 3 {
		t.Fatalf("status: enforced %v, usage %+v, limits %+v", st.QuotasEnforced, st.Usage, st.Limits)
	}
	var quotas []string
	for _, a := range st.Alarms {
		quotas = append(quotas, a.Quota)
	}
	if !slices.Contains(quotas, "mappings") || !slices.Contains(quotas, "mappings_per_client") {
		t.Fatalf("alarms %+v", st.Alarms)
	}
}
