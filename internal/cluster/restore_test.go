package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/snapshot"
	"github.com/ippool/ippool/pool"
)

// A restore is decoded once on the leader: its FSM installs the state the
// check decoded, while each follower decodes the snapshot Raft sends it.
// Through a follower, which passes the upload on unread, a corrupt
// snapshot is refused by the leader with bad_snapshot and changes nothing.
func TestRestoreIsDecodedOnceOnTheLeader(t *testing.T) {
	tc := startCluster(t, 3, nil)
	leader := tc.waitReady(3)
	var follower *Node
	for _, n := range tc.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string]string{}
	for i := range 20 {
		d := fmt.Sprintf("d%d.example", i)
		res, err := leader.Propose(ctx, []pool.Op{allocOp(leader, "gw", d)})
		if err == nil {
			err = res[0].Err
		}
		if err != nil {
			t.Fatal(err)
		}
		want[res[0].Addr.String()] = d
	}
	var backup bytes.Buffer
	leader.Read(func(s *pool.State) {
		if err := snapshot.Write(&backup, snapshot.Contents{Pool: s}); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := leader.Propose(ctx, []pool.Op{{Kind: pool.OpReleaseClient, ID: leader.NextRequestID(), Time: time.Now(), Client: "gw"}}); err != nil {
		t.Fatal(err)
	}
	decoded := func() (counts [3]uint64) {
		for i, n := range tc.nodes {
			counts[i] = n.fsm.restoresDecoded.Load()
		}
		return counts
	}
	before := decoded()

	corrupt := bytes.Clone(backup.Bytes())
	corrupt[len(corrupt)-10] ^= 0xff
	err := follower.Restore(ctx, bytes.NewReader(corrupt), int64(len(corrupt)))
	if pool.CodeOf(err) != pool.CodeBadSnapshot {
		t.Fatalf("a corrupt restore through a follower: %v (%s), want bad_snapshot", err, pool.CodeOf(err))
	}
	for ip := range want {
		var found bool
		leader.Read(func(s *pool.State) { _, found = s.Lookup("gw", netip.MustParseAddr(ip)) })
		if found {
			t.Fatal("the refused restore changed the state")
		}
	}

	if err := follower.Restore(ctx, bytes.NewReader(backup.Bytes()), int64(backup.Len())); err != nil {
		t.Fatal(err)
	}
	// Lookups alone would not say the restore arrived: a follower may not
	// have applied the release yet.
	followersDecoded := func() bool {
		after := decoded()
		for i, n := range tc.nodes {
			if n != leader && after[i] == before[i] {
				return false
			}
		}
		return true
	}
	poll.Until(t, 10*time.Second, "each follower to install the restore", followersDecoded)
	after := decoded()
	for i, n := range tc.nodes {
		got := after[i] - before[i]
		if n == leader && got != 0 {
			t.Errorf("the leader decoded the restore %d more times after its check, want 0", got)
		} else if n != leader && got != 1 {
			t.Errorf("follower %s decoded %d snapshots, want 1 (the one Raft sent)", n.ID(), got)
		}
	}
	for _, n := range tc.nodes {
		for ip, d := range want {
			poll.Until(t, 10*time.Second, fmt.Sprintf("%s to map %s to %s", n.ID(), ip, d), func() bool {
				var m pool.Mapping
				n.Read(func(s *pool.State) { m, _ = s.Lookup("gw", netip.MustParseAddr(ip)) })
				return m.Domain == d
			})
		}
	}
	leader.snaps.mu.Lock()
	held := leader.snaps.decoded != nil
	leader.snaps.mu.Unlock()
	if held {
		t.Error("the snapshot store still holds a decoded state after the restore")
	}
}

// The decoded contents go only to the FSM restore of the snapshot they
// were copied into, once.
func TestDecodedBodyTagsOnlyItsSnapshot(t *testing.T) {
	files, err := raft.NewFileSnapshotStore(t.TempDir(), 3, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	store := &snapshotStore{SnapshotStore: files}
	contents := &snapshot.Contents{Pool: pool.NewState()}
	create := func(body io.Reader) string {
		sink, err := store.Create(raft.SnapshotVersionMax, 1, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(sink, body); err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		return sink.ID()
	}
	plain := create(bytes.NewReader([]byte("plain")))
	tagged := create(&decodedBody{Reader: bytes.NewReader([]byte("tagged")), contents: contents})
	open := func(id string) *snapshot.Contents {
		_, rc, err := store.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		return store.takeDecoded()
	}
	if open(plain) != nil {
		t.Fatal("a snapshot copied from plain bytes came with decoded contents")
	}
	// Opened by another reader (replication) in between: the contents
	// stay for the restore of their own snapshot.
	for _, id := range []string{tagged, plain} {
		_, rc, err := store.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	if store.takeDecoded() != nil {
		t.Fatal("decoded contents were given for another snapshot than theirs")
	}
	if got := open(tagged); got != contents {
		t.Fatal("the restore's own snapshot did not come with its decoded contents")
	}
	if open(tagged) != nil {
		t.Fatal("the decoded contents were handed out twice")
	}
}
