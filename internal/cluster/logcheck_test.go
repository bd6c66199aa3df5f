package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
)

// writeWAL stores n entries of size bytes in a raft-wal log in dir.
func writeWAL(t testing.TB, dir string, n, size int) {
	t.Helper()
	w, err := wal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var batch []*raft.Log
	for i := 1; i <= n; i++ {
		batch = append(batch, &raft.Log{Index: uint64(i), Term: 1, Type: raft.LogCommand, Data: make([]byte, size)})
		if len(batch) == 64 || i == n {
			if err := w.StoreLogs(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

func TestCheckLogNamesTheDamagedSegment(t *testing.T) {
	dir := t.TempDir()
	writeWAL(t, dir, 200, 100)
	w, err := wal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkLog(w, "/data", dir); err != nil {
		t.Fatalf("an intact log: %v", err)
	}
	w.Close()

	// Overwrite the first entry's payload (after the 32-byte segment header
	// and its 8-byte frame header): its index varint now overflows.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	copy(b[40:], strings.Repeat("\xff", 10))
	if err := os.WriteFile(segs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err = wal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	err = checkLog(w, "/data", dir)
	var damaged *DamagedDataError
	if !errors.As(err, &damaged) {
		t.Fatalf("checkLog on a damaged entry = %v, want a DamagedDataError", err)
	}
	if damaged.File != segs[0] || !strings.Contains(damaged.What, "entry 1 ") {
		t.Fatalf("error names %q, %q; want %s and entry 1", damaged.File, damaged.What, segs[0])
	}
	if msg := err.Error(); !strings.Contains(msg, "move /data aside") {
		t.Fatalf("error does not say what to do: %s", msg)
	}
}

func TestSegmentFileIsTheLastStartingAtOrBefore(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"00000000000000000001-0000000000000000.wal", "00000000000000000100-0000000000000001.wal", "00000000000000001000-0000000000000002.wal"} {
		os.WriteFile(filepath.Join(dir, name), nil, 0o600)
	}
	for idx, want := range map[uint64]string{1: "00000000000000000001-", 99: "00000000000000000001-", 100: "00000000000000000100-", 999: "00000000000000000100-", 5000: "00000000000000001000-"} {
		if got := filepath.Base(segmentFile(dir, idx)); !strings.HasPrefix(got, want) {
			t.Errorf("entry %d: %s, want %s...", idx, got, want)
		}
	}
}

// BenchmarkCheckLog reads a log as large as the defaults let it grow: a
// snapshot threshold (16384) plus the trailing logs (10240) of 1 KiB
// entries. It is what checkLog adds to a server's start.
func BenchmarkCheckLog(b *testing.B) {
	dir := b.TempDir()
	writeWAL(b, dir, 16384+10240, 1024)
	w, err := wal.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	b.ResetTimer()
	for range b.N {
		if err := checkLog(w, dir, dir); err != nil {
			b.Fatal(err)
		}
	}
}

// Every kind of entry this build writes is one it starts on: a pool entry
// of its version, an ACL command and a policy command; a pool entry of a
// newer version is not.
func TestFutureEntryVersionKnowsEveryKind(t *testing.T) {
	if policy.EntryVersion > pool.EntryVersion {
		t.Fatalf("policy entries need entry version %d, past the %d this build says it reads", policy.EntryVersion, pool.EntryVersion)
	}
	poolEntry, err := pool.EncodeEntry(nil, pool.Entry{Ops: []pool.Op{{Kind: pool.OpReleaseClient, Client: "c1"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, tok, _ := acl.NewToken(acl.RoleRead, "t", time.Unix(1e9, 0))
	aclEntry, err := acl.EncodeCommand(acl.Command{Op: acl.OpCreate, Token: &tok})
	if err != nil {
		t.Fatal(err)
	}
	policyEntry, err := policy.EncodeCommand(policy.Command{Text: `{"rules": []}`})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"pool": poolEntry, "acl": aclEntry, "policy": policyEntry} {
		if v, err := futureEntryVersion(&raft.Log{Type: raft.LogCommand, Data: data}); v != 0 || err != nil {
			t.Errorf("a %s entry: version %d, %v; want one this build reads", name, v, err)
		}
	}
	future := bytes.Clone(poolEntry)
	future[0] = pool.EntryVersion + 1
	body := len(future) - 4
	binary.LittleEndian.PutUint32(future[body:], crc32.Checksum(future[:body], crc32.MakeTable(crc32.Castagnoli)))
	if v, err := futureEntryVersion(&raft.Log{Type: raft.LogCommand, Data: future}); v != pool.EntryVersion+1 || err != nil {
		t.Errorf("a newer pool entry: version %d, %v", v, err)
	}
}
