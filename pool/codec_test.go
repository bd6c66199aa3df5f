package pool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"go4.org/netipx"
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

func TestEntryRoundTrip(t *testing.T) {
	ops := sampleOps()
	quotas := Quotas{MaxMappings: 9_000_000, MaxMappingsPerClient: 65_536, MaxDomainBytes: MaxDomainBytesLimit}
	for _, e := range []Entry{
		{Version: EntryVersion, Time: ops[0].Time, MaxClients: 1_000_000, Quotas: quotas, Ops: ops},
		{Version: EntryVersion, Time: ops[0].Time, Ops: ops},
		// What a leader writes while some server reads no newer version.
		{Version: 3, Time: ops[0].Time, MaxClients: 1_000_000, Ops: ops},
	} {
		b, err := EncodeEntry(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		if int(b[0]) != e.Version {
			t.Fatalf("entry written as version %d, asked for %d", b[0], e.Version)
		}
		got, err := DecodeEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
		}
	}
	// Version 0 is the newest; a version 3 entry cannot carry quotas, and
	// no other version is written.
	if b, err := EncodeEntry(nil, Entry{Time: ops[0].Time, Ops: ops}); err != nil || b[0] != EntryVersion {
		t.Fatalf("default version: %v, %v", b, err)
	}
	for _, e := range []Entry{
		{Version: 3, Time: ops[0].Time, Quotas: Quotas{MaxMappings: 1}, Ops: ops},
		{Version: 2, Time: ops[0].Time, Ops: ops},
		{Version: EntryVersion + 1, Time: ops[0].Time, Ops: ops},
		{Time: ops[0].Time, Quotas: Quotas{MaxMappings: -1}, Ops: ops},
		{Time: ops[0].Time, Quotas: Quotas{MaxMappingsPerClient: MaxMappingsLimit + 1}, Ops: ops},
		{Time: ops[0].Time, Quotas: Quotas{MaxDomainBytes: MaxDomainBytesLimit + 1}, Ops: ops},
	} {
		if _, err := EncodeEntry(nil, e); !errors.Is(err, ErrBadCommand) {
			t.Errorf("version %d, quotas %+v: %v, want bad_command", e.Version, e.Quotas, err)
		}
	}
	// An allocation is compact: a few bytes beyond its strings, 4 of them
	// the checksum and up to 15 the bounds (once per entry, not per op).
	one, _ := EncodeEntry(nil, Entry{Time: ops[1].Time, MaxClients: 1_000_000, Quotas: quotas, Ops: ops[1:2]})
	if overhead := len(one) - len("node-1") - len("example.com"); overhead > 45 {
		t.Fatalf("allocation entry has %d bytes of overhead", overhead)
	}
}

// legacyBody is the op count and ops as versions 1 and 2 wrote them, each
// op with its own time, unchecked.
func legacyBody(ops []Op) []byte {
	b := binary.AppendUvarint(nil, uint64(len(ops)))
	for i := range ops {
		one := appendOps(nil, ops[i:i+1])[1:]
		head := 1
		if !ops[i].ID.IsZero() {
			_, n := binary.Uvarint(one[9:])
			head = 9 + n
		}
		b = append(b, one[:head]...)
		b = binary.AppendVarint(b, ops[i].Time.UnixNano())
		b = append(b, one[head:]...)
	}
	return b
}

// asV1 is the version 1 entry of ops (no checksum), and withChecksum turns
// a version 1 entry into a version 2 entry, checksum and all, whatever its
// body holds.
func asV1(ops []Op) []byte { return append([]byte{1}, legacyBody(ops)...) }

func withChecksum(v1 []byte) []byte {
	b := append([]byte{2}, v1[1:]...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// rawV3 is a version 3 entry with whatever e holds, unchecked, with a
// good checksum: what a server without the encoder's checks would write.
func rawV3(e Entry) []byte {
	b := []byte{3}
	b = binary.AppendVarint(b, e.Time.UnixNano())
	b = binary.AppendUvarint(b, uint64(e.MaxClients))
	b = appendOps(b, e.Ops)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// rawV4 is a version 4 entry with whatever e holds, unchecked, with a
// good checksum.
func rawV4(e Entry) []byte {
	b := []byte{4}
	b = binary.AppendVarint(b, e.Time.UnixNano())
	b = binary.AppendUvarint(b, uint64(e.MaxClients))
	b = binary.AppendUvarint(b, uint64(e.Quotas.MaxMappings))
	b = binary.AppendUvarint(b, uint64(e.Quotas.MaxMappingsPerClient))
	b = binary.AppendUvarint(b, uint64(e.Quotas.MaxDomainBytes))
	b = appendOps(b, e.Ops)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// A version 4 entry's quotas are held to their limits by the decoder as by
// the encoder.
func TestDecodeEntryRefusesQuotasPastTheirLimits(t *testing.T) {
	ops := []Op{{Kind: OpReleaseClient, Client: "n"}}
	for _, q := range []Quotas{
		{MaxMappings: MaxMappingsLimit + 1},
		{MaxMappingsPerClient: MaxMappingsLimit + 1},
		{MaxDomainBytes: MaxDomainBytesLimit + 1},
	} {
		if _, err := DecodeEntry(rawV4(Entry{Time: t0, Quotas: q, Ops: ops})); !errors.Is(err, ErrBadCommand) {
			t.Errorf("quotas %+v: %v, want bad_command", q, err)
		}
	}
	q := Quotas{MaxMappings: 1, MaxMappingsPerClient: 2, MaxDomainBytes: 3}
	e, err := DecodeEntry(rawV4(Entry{Time: t0, MaxClients: 4, Quotas: q, Ops: ops}))
	if err != nil || e.Quotas != q || e.MaxClients != 4 || e.Version != 4 {
		t.Fatalf("decoded %+v, %v", e, err)
	}
}

// Entries of versions 1 and 2 are read with the rules they were written
// under: a time per op, no client bound, a pool configuration held only to
// Validate.
func TestDecodeReadsVersions1And2(t *testing.T) {
	ops := sampleOps()
	for i := range ops {
		ops[i].Time = ops[i].Time.Add(time.Duration(i) * time.Second)
	}
	ops[0].Time = ops[0].Time.Add(time.Hour) // not the last op, the latest
	legacy, _ := ParseConfig("127.0.0.0/30", "", time.Nanosecond)
	ops = append(ops, Op{Kind: OpSetConfig, Time: ops[1].Time, Config: legacy})
	for _, b := range [][]byte{asV1(ops), withChecksum(asV1(ops))} {
		got, err := DecodeEntry(b)
		if err != nil {
			t.Fatalf("version %d entry: %v", b[0], err)
		}
		want := Entry{Version: int(b[0]), Time: ops[0].Time, Ops: ops}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("version %d entry:\n got %+v\nwant %+v", b[0], got, want)
		}
	}
	if _, err := DecodeEntry(rawV3(Entry{Time: ops[0].Time, Ops: ops[len(ops)-1:]})); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("version 3 entry with a 1ns loopback pool: %v, want bad_command", err)
	}
}

// TestEncoderRefusesWhatDecoderRefuses: the encoder and the decoder hold
// ops to one set of rules, so nothing the leader appends is refused at
// apply on every server (4,500 exclude ranges, say).
func TestEncoderRefusesWhatDecoderRefuses(t *testing.T) {
	var many []string
	for i := range 4500 {
		many = append(many, fmt.Sprintf("10.%d.%d.1", i/256, i%256))
	}
	huge := Config{Pool: []netipx.IPRange{netipx.MustParseIPRange("10.0.0.0-10.255.255.255")}, Lifetime: time.Hour}
	for _, x := range many {
		huge.Exclude = append(huge.Exclude, netipx.MustParseIPRange(x+"-"+x))
	}
	sortRanges(huge.Exclude)
	cfgOf := func(p, x string, l time.Duration) Config {
		c, err := ParseConfig(p, x, l)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := netip.MustParseAddr("10.0.0.1")
	at := time.Unix(1_700_000_000, 0)
	for name, op := range map[string]Op{
		"bad client":          {Kind: OpAllocate, Client: "node 1", Domain: "a.com"},
		"empty client":        {Kind: OpReleaseClient},
		"upper domain":        {Kind: OpAllocate, Client: "n", Domain: "A.com"},
		"trailing dot":        {Kind: OpRelease, Client: "n", Domain: "a.com."},
		"mark bad domain":     {Kind: OpMarkUsed, Client: "n", Addr: a, Domain: "a..com"},
		"unhold bad client":   {Kind: OpUnhold, Client: "", Addr: a},
		"unknown kind":        {Kind: 42, Client: "n"},
		"4,500 exclusions":    {Kind: OpSetConfig, Config: huge},
		"loopback pool":       {Kind: OpSetConfig, Config: cfgOf("127.0.0.0/8", "", time.Hour)},
		"unspecified address": {Kind: OpSetConfig, Config: cfgOf("0.0.0.0", "", time.Hour)},
		"multicast pool":      {Kind: OpSetConfig, Config: cfgOf("224.0.0.0/4", "", time.Hour)},
		"broadcast address":   {Kind: OpSetConfig, Config: cfgOf("255.255.255.255", "", time.Hour)},
		"link-local pool":     {Kind: OpSetConfig, Config: cfgOf("169.254.0.0/16", "", time.Hour)},
		"1ns lifetime":        {Kind: OpSetConfig, Config: cfgOf("10.0.0.0/24", "", time.Nanosecond)},
		"no pool":             {Kind: OpSetConfig, Config: Config{Lifetime: time.Hour}},
	} {
		op.Time = at
		if _, err := EncodeEntry(nil, Entry{Time: at, Ops: []Op{op}}); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: encoder: %v, want bad_command", name, err)
		}
		if op.Kind == OpSetConfig && len(op.Config.Exclude) > maxRanges {
			// The encoder's own bytes would carry more ranges than the
			// decoder reads; it refuses the count before reading them.
			continue
		}
		if _, err := DecodeEntry(rawV3(Entry{Time: at, Ops: []Op{op}})); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: decoder: %v, want bad_command", name, err)
		}
	}
	many4097 := huge
	many4097.Exclude = huge.Exclude[:maxRanges+1]
	if _, err := DecodeEntry(rawV3(Entry{Time: at, Ops: []Op{{Kind: OpSetConfig, Config: many4097}}})); !errors.Is(err, ErrBadCommand) {
		t.Errorf("%d exclusions: decoder: %v", maxRanges+1, err)
	}
	for name, e := range map[string]Entry{
		"no ops":         {Time: at},
		"negative bound": {Time: at, MaxClients: -1, Ops: []Op{{Kind: OpReleaseClient, Client: "n"}}},
		"huge bound":     {Time: at, MaxClients: MaxClientsLimit + 1, Ops: []Op{{Kind: OpReleaseClient, Client: "n"}}},
	} {
		if _, err := EncodeEntry(nil, e); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: encoder: %v", name, err)
		}
	}
	if _, err := DecodeEntry(rawV3(Entry{Time: at, MaxClients: MaxClientsLimit + 1, Ops: []Op{{Kind: OpReleaseClient, Client: "n"}}})); !errors.Is(err, ErrBadCommand) {
		t.Errorf("huge bound: decoder: %v", err)
	}
}

// TestDecodeEntryDetectsDamage: any byte changed, and any cut, is caught
// by the checksum and reported as a damaged entry, not as a bad command.
func TestDecodeEntryDetectsDamage(t *testing.T) {
	good, _ := EncodeEntry(nil, Entry{Time: sampleOps()[0].Time, Ops: sampleOps()})
	for i := range good {
		b := append([]byte(nil), good...)
		b[i] ^= 0x20
		if _, err := DecodeEntry(b); !errors.Is(err, ErrCorruptEntry) {
			t.Errorf("byte %d flipped: %v", i, err)
		}
	}
	for n := 1; n < len(good); n++ {
		if _, err := DecodeEntry(good[:n]); err == nil {
			t.Errorf("cut to %d bytes: decoded", n)
		}
	}
	// A body that is wrong but checksummed is a bad command, refused alike
	// on every server.
	bad := withChecksum(bytes.Replace(asV1(sampleOps()[1:2]), []byte("node-1"), []byte("node 1"), 1))
	if _, err := DecodeEntry(bad); !errors.Is(err, ErrBadCommand) {
		t.Errorf("checksummed bad client: %v", err)
	}
}

func TestDecodeEntryRefusesGarbage(t *testing.T) {
	good, alloc := asV1(sampleOps()), asV1(sampleOps()[1:2])
	cases := map[string][]byte{
		"empty":        nil,
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
		e, err := DecodeEntry(b)
		if err == nil {
			t.Errorf("%s: decoded %+v", name, e)
			continue
		}
		if !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: error %v is not a bad-command error", name, err)
		}
	}
	// A version no build of this one's knows is either a newer build's
	// entry, checksummed, or a damaged one; never a bad command to skip.
	for name, b := range map[string][]byte{
		"version 4": append([]byte{4}, good[1:]...),
		"json":      []byte(`{"Name":"checkoutAddr"}`),
	} {
		if _, err := DecodeEntry(b); !errors.Is(err, ErrCorruptEntry) {
			t.Errorf("%s: error %v is not a damaged-entry error", name, err)
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
	good, _ := EncodeEntry(nil, Entry{Time: t0, Ops: []Op{{Kind: OpAllocate, Client: "n", Domain: "b.com"}}})
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
	entry, _ := EncodeEntry(nil, Entry{Time: t0, Ops: ops})
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

// A version past EntryVersion is another build's entry, not a bad one:
// DecodeEntry says so with a FutureEntryError (the FSM stops on it), whose
// code tells a client to retry once the cluster is upgraded; a version that
// no build ever wrote stays a bad entry.
func TestDecodeEntryTellsFutureVersionsFromBadOnes(t *testing.T) {
	for v := EntryVersion + 1; v < 0x100; v += 17 {
		b := []byte{byte(v), 1, 2, 3, 4, 5}
		_, err := DecodeEntry(binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)))
		fe, ok := errors.AsType[*FutureEntryError](err)
		if !ok || int(fe.Version) != v {
			t.Fatalf("version %d: %v, want a FutureEntryError", v, err)
		}
		if CodeOf(err) != CodeFeatureUnavailable {
			t.Errorf("version %d: code %s", v, CodeOf(err))
		}
	}
	if _, err := DecodeEntry([]byte{0, 1, 2}); !errors.Is(err, ErrBadCommand) {
		t.Errorf("version 0: %v, want bad_command", err)
	}
	if _, err := DecodeEntry([]byte{EntryVersion + 1, 1, 2, 3, 4, 5}); !errors.Is(err, ErrCorruptEntry) {
		t.Errorf("version %d without its checksum: %v, want corrupt_entry", EntryVersion+1, err)
	}
}
