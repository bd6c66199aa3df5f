package pool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"go4.org/netipx"
)

// Entry is one Raft log entry: a batch of ops and what the leader stamps on
// the whole batch when it appends it.
type Entry struct {
	// Time is every op's time. The leader sets it, never below the time of
	// the entry before, so that no server's clock but the leader's choice
	// decides when a client is forgotten (docs/design.md#clocks).
	Time time.Time
	// MaxClients bounds the clients the state may hold: an allocation that
	// would add a client past it fails with quota_exceeded. 0 is no bound,
	// as in entries from before version 3. It travels in the entry so that
	// every server applies the leader's bound alike.
	MaxClients int
	// Quotas bound the mappings and the domain text the state may hold;
	// only version 4 carries them, and in older entries they are 0: no
	// bound. Like MaxClients they are the leader's, so that every server
	// refuses the same allocations.
	Quotas Quotas
	// Version is the entry version: EncodeEntry writes it (0 is
	// EntryVersion), DecodeEntry says what it read. A leader writes an
	// older version while some server of its cluster reads no newer one.
	Version int
	Ops     []Op
}

// Quotas bound what callers can make the state hold; 0 is no bound. A
// mapping counts until it is released, reused or its client is forgotten;
// domain text is counted once per distinct name held, since the state
// stores each name once however many mappings share it.
type Quotas struct {
	// MaxMappings bounds the mappings of all clients together.
	MaxMappings int
	// MaxMappingsPerClient bounds the mappings of any one client.
	MaxMappingsPerClient int
	// MaxDomainBytes bounds the bytes of the distinct domain names held.
	MaxDomainBytes int64
}

// IsZero reports whether q bounds nothing.
func (q Quotas) IsZero() bool { return q == Quotas{} }

// check refuses a bound outside what an entry may carry.
func (q Quotas) check() error {
	switch {
	case q.MaxMappings < 0 || q.MaxMappings > MaxMappingsLimit:
		return errorf(CodeBadCommand, "a mapping bound of %d is outside 0 to %d", q.MaxMappings, MaxMappingsLimit)
	case q.MaxMappingsPerClient < 0 || q.MaxMappingsPerClient > MaxMappingsLimit:
		return errorf(CodeBadCommand, "a per-client mapping bound of %d is outside 0 to %d", q.MaxMappingsPerClient, MaxMappingsLimit)
	case q.MaxDomainBytes < 0 || q.MaxDomainBytes > MaxDomainBytesLimit:
		return errorf(CodeBadCommand, "a domain bytes bound of %d is outside 0 to %d", q.MaxDomainBytes, int64(MaxDomainBytesLimit))
	}
	return nil
}

// entryVersion is the first byte of every log entry this package writes.
// A reader refuses versions it does not know rather than guessing. Version 2
// ends with a CRC-32C of everything before it: raft-wal checks only the
// batch it wrote last, so without it a byte of an older entry that decayed
// on one server's disk would be applied there, and that server alone would
// hold another state. Version 3 carries one time and the client bound for
// the whole entry, both the leader's, instead of a time per op, and holds
// a pool configuration to the limits of Config.CheckNew. Version 4 adds the
// mapping quotas after the client bound: they change what applying does,
// so a server that ignored them would hold another state. Versions 1 (no
// checksum), 2 and 3 are still read, with the rules they were written
// under.
const (
	entryVersion   = 4
	entryVersionV3 = 3
	entryVersionV2 = 2
	entryVersionV1 = 1
	checksumLen    = 4
)

// EntryVersion is the log entry version this build writes, and
// OldestEntryVersion the oldest it still reads: it reads every version
// between them.
const (
	EntryVersion       = entryVersion
	OldestEntryVersion = entryVersionV1
)

// FutureEntryError is a log entry of a version this build does not know:
// only a newer ippool writes one. It is not a bad entry (S10), which every
// server refuses alike, but this server's inability to follow the log: the
// server must stop applying rather than skip it (docs/upgrading.md).
type FutureEntryError struct {
	Version byte
}

func (e *FutureEntryError) Error() string {
	return fmt.Sprintf("log entry has version %d, written by a newer ippool; this build reads versions %d to %d", e.Version, OldestEntryVersion, EntryVersion)
}

// MaxOpsPerCommand bounds a batch so that a corrupt count cannot make the
// decoder allocate without limit.
const MaxOpsPerCommand = 1 << 16

// MaxClientsLimit is the largest client bound an entry may carry, and
// MaxMappingsLimit and MaxDomainBytesLimit the largest mapping quotas.
const (
	MaxClientsLimit     = 1 << 31
	MaxMappingsLimit    = 1 << 31
	MaxDomainBytesLimit = 1 << 40
)

const (
	flagHasID   = 0x80
	maxRanges   = 1 << 12
	maxDomainSz = 253
)

// EncodeEntry appends the log entry for e to dst. It refuses anything
// DecodeEntry would refuse, by the same checks (Op.check), so an entry that
// reaches the log decodes on every server.
//
// Layout of version 4 (integers are unsigned varints unless said
// otherwise):
//
//	version byte, time (signed varint, Unix ns), client bound, mapping
//	bound, per-client mapping bound, domain bytes bound, op count,
//	then per op: kind byte (|0x80 when a request ID follows), [origin
//	uint64 LE, seq], then the kind's fields: strings as length+bytes,
//	addresses as 4 bytes, a config as its range lists and lifetime; last,
//	CRC-32C (Castagnoli) of all the entry's bytes before it, uint32 LE.
//
// Version 3 is the same without the three quotas; EncodeEntry writes it
// when e.Version is 3, and then refuses quotas, which it cannot carry.
func EncodeEntry(dst []byte, e Entry) ([]byte, error) {
	start := len(dst)
	v := e.Version
	if v == 0 {
		v = entryVersion
	}
	switch {
	case v != entryVersion && v != entryVersionV3:
		return dst, errorf(CodeBadCommand, "this build writes log entry versions %d and %d, not %d", entryVersionV3, entryVersion, v)
	case e.MaxClients < 0 || e.MaxClients > MaxClientsLimit:
		return dst, errorf(CodeBadCommand, "a client bound of %d is outside 0 to %d", e.MaxClients, MaxClientsLimit)
	case v < entryVersion && !e.Quotas.IsZero():
		return dst, errorf(CodeBadCommand, "a version %d log entry carries no mapping quotas", v)
	}
	if err := e.Quotas.check(); err != nil {
		return dst, err
	}
	dst = append(dst, byte(v))
	dst = binary.AppendVarint(dst, e.Time.UnixNano())
	dst = binary.AppendUvarint(dst, uint64(e.MaxClients))
	if v >= entryVersion {
		dst = binary.AppendUvarint(dst, uint64(e.Quotas.MaxMappings))
		dst = binary.AppendUvarint(dst, uint64(e.Quotas.MaxMappingsPerClient))
		dst = binary.AppendUvarint(dst, uint64(e.Quotas.MaxDomainBytes))
	}
	dst, err := encodeBody(dst, e.Ops)
	if err != nil {
		return dst[:start], err
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli)), nil
}

// encodeBody appends the op count and the ops, once every op passes the
// decoder's checks.
func encodeBody(dst []byte, ops []Op) ([]byte, error) {
	if len(ops) == 0 || len(ops) > MaxOpsPerCommand {
		return dst, errorf(CodeBadCommand, "a command carries 1 to %d ops, not %d", MaxOpsPerCommand, len(ops))
	}
	for i := range ops {
		if err := ops[i].check(entryVersion); err != nil {
			return dst, errorf(CodeBadCommand, "op %d (%s): %v", i, ops[i].Kind, err)
		}
	}
	return appendOps(dst, ops), nil
}

// appendOps writes the op count and the ops of a version 3 or 4 entry (the
// two write ops alike) as they are; encodeBody checks them first.
func appendOps(dst []byte, ops []Op) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ops)))
	for i := range ops {
		op := &ops[i]
		kind := byte(op.Kind)
		if !op.ID.IsZero() {
			kind |= flagHasID
		}
		dst = append(dst, kind)
		if !op.ID.IsZero() {
			dst = binary.LittleEndian.AppendUint64(dst, op.ID.Origin)
			dst = binary.AppendUvarint(dst, op.ID.Seq)
		}
		switch op.Kind {
		case OpAllocate, OpRelease:
			dst = appendString(dst, op.Client)
			dst = appendString(dst, op.Domain)
		case OpMarkUsed:
			dst = appendString(dst, op.Client)
			dst = binary.BigEndian.AppendUint32(dst, addrToU32(op.Addr))
			dst = appendString(dst, op.Domain)
		case OpReleaseClient:
			dst = appendString(dst, op.Client)
		case OpSetConfig:
			dst = appendConfig(dst, op.Config)
		case OpUnhold:
			dst = appendString(dst, op.Client)
			dst = binary.BigEndian.AppendUint32(dst, addrToU32(op.Addr))
		}
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendConfig(dst []byte, c Config) []byte {
	for _, list := range [][]netipx.IPRange{c.Pool, c.Exclude} {
		dst = binary.AppendUvarint(dst, uint64(len(list)))
		for _, r := range list {
			dst = binary.BigEndian.AppendUint32(dst, addrToU32(r.From()))
			dst = binary.BigEndian.AppendUint32(dst, addrToU32(r.To()))
		}
	}
	return binary.AppendVarint(dst, int64(c.Lifetime))
}

// DecodeEntry decodes a log entry written by EncodeEntry, or by an earlier
// version. Every field is validated as the API would validate it, so an
// entry that decodes can be applied; anything else is an error, never a
// panic (S10). Each op's Time is the entry's; in an entry from before
// version 3, whose ops carry their own, Time is the latest of them.
func DecodeEntry(b []byte) (Entry, error) {
	d := decoder{b: b}
	var e Entry
	v := d.byte()
	switch {
	case d.err != nil:
		return e, d.err
	case v == entryVersion || v == entryVersionV3 || v == entryVersionV2:
		if len(b) < 1+checksumLen {
			return e, errorf(CodeBadCommand, "log entry of %d bytes is too short for its checksum", len(b))
		}
		body := len(b) - checksumLen
		if crc32.Checksum(b[:body], castagnoli) != binary.LittleEndian.Uint32(b[body:]) {
			return e, errorf(CodeCorruptEntry, "log entry of %d bytes fails its checksum: it was damaged after it was written", len(b))
		}
		d.b = b[1:body]
	case v > entryVersion:
		// Every version from 2 on ends with the CRC-32C of what comes
		// before it, and later versions must keep that trailer, so that
		// an entry of an unknown version tells a newer build's entry from
		// this server's damaged copy of a known one.
		if len(b) < 1+checksumLen || crc32.Checksum(b[:len(b)-checksumLen], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-checksumLen:]) {
			return e, errorf(CodeCorruptEntry, "log entry of %d bytes has version %d, which this server does not know, and fails its checksum: it was damaged after it was written", len(b), v)
		}
		return e, &FutureEntryError{Version: v}
	case v != entryVersionV1:
		return e, errorf(CodeBadCommand, "log entry has version %d; this server reads versions %d to %d", v, entryVersionV1, entryVersion)
	}
	d.version = v
	e.Version = int(v)
	if v >= 3 {
		e.Time = time.Unix(0, d.varint()).UTC()
		e.MaxClients = int(d.bound("client bound", MaxClientsLimit))
	}
	if v >= 4 {
		e.Quotas.MaxMappings = int(d.bound("mapping bound", MaxMappingsLimit))
		e.Quotas.MaxMappingsPerClient = int(d.bound("per-client mapping bound", MaxMappingsLimit))
		e.Quotas.MaxDomainBytes = int64(d.bound("domain bytes bound", MaxDomainBytesLimit))
	}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > MaxOpsPerCommand) {
		return Entry{}, errorf(CodeBadCommand, "log entry claims %d ops; 1 to %d are allowed", n, MaxOpsPerCommand)
	}
	// Each op takes at least two bytes, which caps the allocation below by
	// the entry's own size.
	if d.err == nil && n > uint64(len(b)) {
		return Entry{}, errorf(CodeBadCommand, "log entry claims %d ops in %d bytes", n, len(b))
	}
	if d.err != nil {
		return Entry{}, d.err
	}
	e.Ops = make([]Op, n)
	for i := range e.Ops {
		op := &e.Ops[i]
		if err := d.op(op); err != nil {
			return Entry{}, errorf(CodeBadCommand, "log entry op %d: %v", i, err)
		}
		if v >= 3 {
			op.Time = e.Time
		} else if op.Time.After(e.Time) {
			e.Time = op.Time
		}
	}
	if d.err == nil && len(d.b) != 0 {
		return Entry{}, errorf(CodeBadCommand, "log entry has %d bytes after its last op", len(d.b))
	}
	if d.err != nil {
		return Entry{}, d.err
	}
	return e, nil
}

// decoder reads from b; the first error sticks and later reads return zero.
type decoder struct {
	b       []byte
	err     error
	version byte
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = errorf(CodeBadCommand, format, args...)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bound reads a bound of at most limit.
func (d *decoder) bound(what string, limit uint64) uint64 {
	v := d.uvarint()
	if d.err == nil && v > limit {
		d.fail("%s %d exceeds %d", what, v, limit)
		return 0
	}
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	if d.err != nil || len(d.b) < 4 {
		d.fail("truncated")
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) uint64le() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) string(max int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.fail("string of %d bytes exceeds its limit or the entry", n)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) ranges() []netipx.IPRange {
	n := d.uvarint()
	if d.err == nil && n > maxRanges {
		d.fail("%d ranges exceed the limit of %d", n, maxRanges)
	}
	if d.err != nil || n == 0 {
		return nil
	}
	out := make([]netipx.IPRange, 0, min(n, uint64(len(d.b)/8+1)))
	for range n {
		from, to := d.uint32(), d.uint32()
		if d.err != nil {
			return nil
		}
		out = append(out, netipx.IPRangeFrom(u32ToAddr(from), u32ToAddr(to)))
	}
	return out
}

func (d *decoder) config() Config {
	c := Config{Pool: d.ranges(), Exclude: d.ranges()}
	c.Lifetime = time.Duration(d.varint())
	return c
}

// op reads one op, whose fields the reads bound by size, then holds it to
// the rules the encoder also applies (Op.check).
func (d *decoder) op(op *Op) error {
	kind := d.byte()
	op.Kind = OpKind(kind &^ flagHasID)
	if kind&flagHasID != 0 {
		op.ID.Origin = d.uint64le()
		op.ID.Seq = d.uvarint()
		if d.err == nil && op.ID.IsZero() {
			d.fail("request ID is flagged but zero")
		}
	}
	if d.version < 3 {
		op.Time = time.Unix(0, d.varint()).UTC()
	}
	switch op.Kind {
	case OpAllocate, OpRelease:
		op.Client = d.string(MaxClientIDLen)
		op.Domain = d.string(maxDomainSz)
	case OpMarkUsed:
		op.Client = d.string(MaxClientIDLen)
		op.Addr = u32ToAddr(d.uint32())
		op.Domain = d.string(maxDomainSz)
	case OpReleaseClient:
		op.Client = d.string(MaxClientIDLen)
	case OpSetConfig:
		op.Config = d.config()
	case OpUnhold:
		op.Client = d.string(MaxClientIDLen)
		op.Addr = u32ToAddr(d.uint32())
	default:
		d.fail("unknown op kind %d", op.Kind)
	}
	if d.err == nil {
		if err := op.check(d.version); err != nil {
			d.fail("%v", err)
		}
	}
	return d.err
}
