package pool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleOps() []Op {
	cfg, _ := ParseConfig("10.0.0.0/24,10.1.0.1-10.1.0.9", "10.0.0.7", time.Hour)
	at := time.Unix(0, 1_700_000_000_123_456_789).UTC()
	return []Op{
		{Kind: OpSetConfig, ID: RequestID{Origin: 7, Seq: 1}, Time: at, Config: cfg},
		{Kind: OpAllocate, ID: RequestID{Origin: 7, Seq: 2}, Time: at, Client: "node-1", Domain: "example.com"},
		{Kind: OpMarkUsed, Time: at, Client: "node-1", Domain: "example.com", Addr: netip.MustParseAddr("10.0.0.0")},
		{Kind: OpRelease, ID: RequestID{Origin: 9, Seq: 1 << 40}, Time: at, Client: "node-1", Domain: "example.com"},
		{Kind: OpReleaseClient, ID: RequestID{Origin: 9, Seq: 3}, Time: at, Client: "node-1"},
		{Kind: OpUnhold, Time: at, Client: "node-1", Addr: netip.MustParseAddr("10.0.0.0")},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	ops := sampleOps()
	b, err := EncodeCommand(nil, ops)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ops) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, ops)
	}
	// An allocation is compact: a few bytes beyond its strings, 4 of them
	// the checksum.
	one, _ := EncodeCommand(nil, ops[1:2])
	if overhead := len(one) - len("node-1") - len("example.com"); overhead > 28 {
		t.Fatalf("allocation entry has %d bytes of overhead", overhead)
	}
}

// asV1 turns a version 2 entry into the version 1 entry of the same ops (no
// checksum), so that the decoder's checks of the body are reached.
func asV1(b []byte) []byte { return append([]byte{1}, b[1:len(b)-4]...) }

// withChecksum turns a version 1 entry into a version 2 entry, checksum and
// all, whatever its body holds.
func withChecksum(v1 []byte) []byte {
	b := append([]byte{2}, v1[1:]...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func TestDecodeCommandReadsVersion1(t *testing.T) {
	b, _ := EncodeCommand(nil, sampleOps())
	got, err := DecodeCommand(asV1(b))
	if err != nil || !reflect.DeepEqual(got, sampleOps()) {
		t.Fatalf("version 1 entry: %+v, %v", got, err)
	}
}

// TestDecodeCommandDetectsDamage: any byte changed, and any cut, is caught
// by the checksum and reported as a damaged entry, not as a bad command.
func TestDecodeCommandDetectsDamage(t *testing.T) {
	good, _ := EncodeCommand(nil, sampleOps())
	for i := range good {
		b := append([]byte(nil), good...)
		b[i] ^= 0x20
		if _, err := DecodeCommand(b); !errors.Is(err, ErrCorruptEntry) && !(i == 0 && errors.Is(err, ErrBadCommand)) {
			t.Errorf("byte %d flipped: %v", i, err)
		}
	}
	for n := 1; n < len(good); n++ {
		if _, err := DecodeCommand(good[:n]); err == nil {
			t.Errorf("cut to %d bytes: decoded", n)
		}
	}
	// A body that is wrong but checksummed is a bad command, refused alike
	// on every server.
	alloc, _ := EncodeCommand(nil, sampleOps()[1:2])
	bad := withChecksum(bytes.Replace(asV1(alloc), []byte("node-1"), []byte("node 1"), 1))
	if _, err := DecodeCommand(bad); !errors.Is(err, ErrBadCommand) {
		t.Errorf("checksummed bad client: %v", err)
	}
}

func TestDecodeCommandRefusesGarbage(t *testing.T) {
	good, _ := EncodeCommand(nil, sampleOps())
	alloc, _ := EncodeCommand(nil, sampleOps()[1:2])
	good, alloc = asV1(good), asV1(alloc)
	cases := map[string][]byte{
		"empty":        nil,
		"json":         []byte(`{"Name":"checkoutAddr"}`),
		"version 3":    append([]byte{3}, good[1:]...),
		"zero ops":     {1, 0},
		"huge count":   {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"unknown kind": {1, 1, 42, 0},
		"truncated":    good[:len(good)-3],
		"trailing":     append(append([]byte{}, good...), 0),
		"bad client":   bytes.Replace(alloc, []byte("node-1"), []byte("node 1"), 1),
		"upper domain": bytes.Replace(alloc, []byte("example"), []byte("EXAMPLE"), 1),
		"zero flagged": {1, 1, 0x80 | 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'a'},
		"long string":  {1, 1, 4, 0, 0xff, 0x01},
	}
	for name, b := range cases {
		ops, err := DecodeCommand(b)
		if err == nil {
			t.Errorf("%s: decoded %+v", name, ops)
			continue
		}
		if !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: error %v is not a bad-command error", name, err)
		}
	}
}

func TestApplyGarbageChangesNothing(t *testing.T) {
	s := newTestState(t, "10.0.0.0/24", time.Hour)
	mustAlloc(t, s, "n", "a.com", t0)
	before := snapshotBytes(t, s)
	if _, err := s.Apply([]byte("not a command")); err == nil {
		t.Fatal("garbage applied")
	}
	// A batch whose last op is bad is refused whole.
	good, _ := EncodeCommand(nil, []Op{{Kind: OpAllocate, Time: t0, Client: "n", Domain: "b.com"}})
	bad := append([]byte{1, 2}, good[2:]...)
	bad = append(bad, 99)
	if _, err := s.Apply(bad); err == nil {
		t.Fatal("a batch with a bad op applied")
	}
	if !bytes.Equal(before, snapshotBytes(t, s)) {
		t.Fatal("a refused entry changed the state")
	}
}

func TestApplyBatchGivesEachOpItsResult(t *testing.T) {
	s := newTestState(t, "10.0.0.0/31", time.Hour)
	var ops []Op
	for i, d := range []string{"a.com", "b.com", "c.com", "a.com"} {
		ops = append(ops, Op{Kind: OpAllocate, ID: RequestID{1, uint64(i + 1)}, Time: t0, Client: "n", Domain: d})
	}
	entry, _ := EncodeCommand(nil, ops)
	res, err := s.Apply(entry)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0", "10.0.0.1", "", "10.0.0.0"}
	for i, r := range res {
		if want[i] == "" {
			if !errors.Is(r.Err, ErrPoolExhausted) {
				t.Errorf("op %d: %+v, want exhausted", i, r)
			}
		} else if r.Err != nil || r.Addr.String() != want[i] {
			t.Errorf("op %d: %+v, want %s", i, r, want[i])
		}
	}
}

func TestSnapshotRoundTripAndCorruption(t *testing.T) {
	s := newTestState(t, "10.0.0.0/16", time.Hour)
	for c := range 40 {
		for d := range 500 {
			mustAlloc(t, s, clientName(c), domainName(d), t0.Add(time.Duration(c*d)*time.Millisecond))
		}
	}
	s.ApplyOps([]Op{{Kind: OpAllocate, ID: RequestID{3, 4}, Time: t0, Client: "x", Domain: "y.z"}})
	snap := snapshotBytes(t, s)
	if len(snap) < 2*frameTarget {
		t.Fatalf("snapshot of %d bytes is too small to test frame boundaries", len(snap))
	}
	r, err := ReadSnapshot(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap, snapshotBytes(t, r)) {
		t.Fatal("round trip changed the snapshot")
	}
	if err := r.checkInvariants(); err != nil {
		t.Fatal(err)
	}
	// The dedup window survives: a retried request is still answered once.
	res := r.ApplyOps([]Op{{Kind: OpAllocate, ID: RequestID{3, 4}, Time: t0, Client: "x", Domain: "y.z"}})
	if res[0].Err != nil || res[0].Addr != netip.MustParseAddr("10.0.0.0") {
		t.Fatalf("retry after restore: %+v", res[0])
	}

	for _, n := range []int{0, 5, len(snapshotMagic) + 3, len(snap) / 2, len(snap) - 5, len(snap) - 1} {
		if _, err := ReadSnapshot(bytes.NewReader(snap[:n])); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("truncated to %d bytes: %v", n, err)
		}
	}
	for _, off := range []int{len(snapshotMagic) + 6, len(snap) / 3, len(snap) - 20} {
		bad := bytes.Clone(snap)
		bad[off] ^= 0x10
		if _, err := ReadSnapshot(bytes.NewReader(bad)); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("bit flip at %d: %v", off, err)
		}
	}
	if _, err := ReadSnapshot(bytes.NewReader(append(bytes.Clone(snap), 0))); err == nil {
		t.Error("trailing byte accepted")
	}
	if _, err := ReadSnapshot(strings.NewReader(`{"json": true}`)); err == nil || !strings.Contains(err.Error(), "not an ippool snapshot") {
		t.Errorf("json accepted: %v", err)
	}
}

func TestSnapshotOfEmptyState(t *testing.T) {
	for _, s := range []*State{NewState(), newTestState(t, "10.0.0.0/8", time.Hour)} {
		snap := snapshotBytes(t, s)
		r, err := ReadSnapshot(bytes.NewReader(snap))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(snap, snapshotBytes(t, r)) {
			t.Fatal("round trip changed the snapshot")
		}
		cfg, ok := r.Config()
		want, wantOK := s.Config()
		if ok != wantOK || !cfg.Equal(want) {
			t.Fatalf("config %v %v, want %v %v", cfg, ok, want, wantOK)
		}
	}
}
