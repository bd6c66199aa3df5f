package pool

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"net/netip"
	"time"

	"go4.org/netipx"
)

// OpKind names a write to the state.
type OpKind uint8

const (
	OpAllocate      OpKind = 1 // Client, Domain
	OpMarkUsed      OpKind = 2 // Client, Addr, Domain
	OpRelease       OpKind = 3 // Client, Domain
	OpReleaseClient OpKind = 4 // Client
	OpSetConfig     OpKind = 5 // Config
	// OpUnhold gives a released address back to its client once ReuseHold
	// has passed; only a leader proposes it.
	OpUnhold OpKind = 6 // Client, Addr
)

func (k OpKind) String() string {
	switch k {
	case OpAllocate:
		return "allocate"
	case OpMarkUsed:
		return "mark-used"
	case OpRelease:
		return "release"
	case OpReleaseClient:
		return "release-client"
	case OpSetConfig:
		return "set-config"
	case OpUnhold:
		return "unhold"
	}
	return "unknown"
}

// Op is one write, as carried in the Raft log. Time is chosen by the server
// that proposes it (S9).
type Op struct {
	Kind   OpKind
	ID     RequestID
	Time   time.Time
	Client string
	Domain string
	Addr   netip.Addr
	Config Config
}

// Result is the outcome of one applied Op.
type Result struct {
	// Addr is the allocated address (OpAllocate).
	Addr netip.Addr
	// Count is what the op changed: mappings released; 1 when a mark or a
	// release took effect; 1 when an allocation made a new mapping and 0
	// when it returned the client's existing one.
	Count int
	// Reused is set when an allocation took an expired mapping's address.
	Reused bool
	Err    error
}

// commandVersion is the first byte of every log entry this package writes.
// A reader refuses versions it does not know rather than guessing. Version 2
// ends with a CRC-32C of everything before it: raft-wal checks only the
// batch it wrote last, so without it a byte of an older entry that decayed
// on one server's disk would be applied there, and that server alone would
// hold another state. Version 1 entries (no checksum) are still read.
const (
	commandVersion   = 2
	commandVersionV1 = 1
	checksumLen      = 4
)

// MaxOpsPerCommand bounds a batch so that a corrupt count cannot make the
// decoder allocate without limit.
const MaxOpsPerCommand = 1 << 16

const (
	flagHasID   = 0x80
	maxRanges   = 1 << 12
	maxDomainSz = 253
)

// EncodeCommand appends the log entry for a batch of ops to dst.
//
// Layout (integers are unsigned varints unless said otherwise):
//
//	version byte, op count, then per op:
//	kind byte (|0x80 when a request ID follows), [origin uint64 LE, seq],
//	time (signed varint, Unix ns), then the kind's fields: strings as
//	length+bytes, addresses as 4 bytes, a config as its range lists and
//	lifetime; last, CRC-32C (Castagnoli) of all the entry's bytes before
//	it, uint32 LE.
func EncodeCommand(dst []byte, ops []Op) ([]byte, error) {
	start := len(dst)
	dst, err := encodeBody(append(dst, commandVersion), ops)
	if err != nil {
		return dst[:start], err
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli)), nil
}

// encodeBody appends the op count and the ops.
func encodeBody(dst []byte, ops []Op) ([]byte, error) {
	if len(ops) == 0 || len(ops) > MaxOpsPerCommand {
		return dst, errorf(CodeBadCommand, "a command carries 1 to %d ops, not %d", MaxOpsPerCommand, len(ops))
	}
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
		dst = binary.AppendVarint(dst, op.Time.UnixNano())
		switch op.Kind {
		case OpAllocate, OpRelease:
			dst = appendString(dst, op.Client)
			dst = appendString(dst, op.Domain)
		case OpMarkUsed:
			if !op.Addr.Is4() {
				return dst, errorf(CodeBadCommand, "mark-used needs an IPv4 address, not %v", op.Addr)
			}
			dst = appendString(dst, op.Client)
			dst = binary.BigEndian.AppendUint32(dst, addrToU32(op.Addr))
			dst = appendString(dst, op.Domain)
		case OpReleaseClient:
			dst = appendString(dst, op.Client)
		case OpSetConfig:
			dst = appendConfig(dst, op.Config)
		case OpUnhold:
			if !op.Addr.Is4() {
				return dst, errorf(CodeBadCommand, "unhold needs an IPv4 address, not %v", op.Addr)
			}
			dst = appendString(dst, op.Client)
			dst = binary.BigEndian.AppendUint32(dst, addrToU32(op.Addr))
		default:
			return dst, errorf(CodeBadCommand, "unknown op kind %d", op.Kind)
		}
	}
	return dst, nil
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

// DecodeCommand decodes a log entry written by EncodeCommand. Every field is
// validated as the API would validate it, so an entry that decodes can be
// applied; anything else is an error, never a panic (S10).
func DecodeCommand(b []byte) ([]Op, error) {
	d := decoder{b: b}
	switch v := d.byte(); {
	case d.err != nil:
		return nil, d.err
	case v == commandVersion:
		if len(b) < 1+checksumLen {
			return nil, errorf(CodeBadCommand, "log entry of %d bytes is too short for its checksum", len(b))
		}
		body := len(b) - checksumLen
		if crc32.Checksum(b[:body], castagnoli) != binary.LittleEndian.Uint32(b[body:]) {
			return nil, errorf(CodeCorruptEntry, "log entry of %d bytes fails its checksum: it was damaged after it was written", len(b))
		}
		d.b = b[1:body]
	case v != commandVersionV1:
		return nil, errorf(CodeBadCommand, "log entry has command version %d; this server reads versions %d and %d", v, commandVersionV1, commandVersion)
	}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > MaxOpsPerCommand) {
		return nil, errorf(CodeBadCommand, "log entry claims %d ops; 1 to %d are allowed", n, MaxOpsPerCommand)
	}
	// Each op takes at least two bytes, which caps the allocation below by
	// the entry's own size.
	if d.err == nil && n > uint64(len(b)) {
		return nil, errorf(CodeBadCommand, "log entry claims %d ops in %d bytes", n, len(b))
	}
	if d.err != nil {
		return nil, d.err
	}
	ops := make([]Op, n)
	for i := range ops {
		if err := d.op(&ops[i]); err != nil {
			return nil, errorf(CodeBadCommand, "log entry op %d: %v", i, err)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		return nil, errorf(CodeBadCommand, "log entry has %d bytes after its last op", len(d.b))
	}
	return ops, d.err
}

// decoder reads from b; the first error sticks and later reads return zero.
type decoder struct {
	b   []byte
	err error
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

func (d *decoder) clientID() string {
	s := d.string(MaxClientIDLen)
	if d.err == nil {
		if err := ValidateClientID(s); err != nil {
			d.fail("%v", err)
		}
	}
	return s
}

// domain accepts only names already in normal form, as proposers write them.
func (d *decoder) domain() string {
	s := d.string(maxDomainSz)
	if d.err == nil {
		if n, err := NormalizeDomain(s); err != nil {
			d.fail("%v", err)
		} else if n != s {
			d.fail("domain %q is not in normal form", s)
		}
	}
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
	if d.err == nil {
		if err := c.Validate(); err != nil {
			d.fail("%v", err)
		}
	}
	return c
}

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
	op.Time = time.Unix(0, d.varint()).UTC()
	switch op.Kind {
	case OpAllocate, OpRelease:
		op.Client = d.clientID()
		op.Domain = d.domain()
	case OpMarkUsed:
		op.Client = d.clientID()
		op.Addr = u32ToAddr(d.uint32())
		op.Domain = d.domain()
	case OpReleaseClient:
		op.Client = d.clientID()
	case OpSetConfig:
		op.Config = d.config()
	case OpUnhold:
		op.Client = d.clientID()
		op.Addr = u32ToAddr(d.uint32())
	default:
		d.fail("unknown op kind %d", op.Kind)
	}
	return d.err
}

// Apply decodes a log entry and applies its ops in order, returning one
// Result per op. An entry that does not decode changes nothing and returns
// an error (S10).
func (s *State) Apply(entry []byte) ([]Result, error) {
	ops, err := DecodeCommand(entry)
	if err != nil {
		return nil, err
	}
	return s.ApplyOps(ops), nil
}

// ApplyOps applies decoded ops; see Apply. A retried op whose request ID
// already succeeded returns the remembered result and changes nothing.
func (s *State) ApplyOps(ops []Op) []Result {
	results := make([]Result, len(ops))
	for i := range ops {
		results[i] = s.applyOp(&ops[i])
	}
	return results
}

func (s *State) applyOp(op *Op) Result {
	if r, ok := s.dedup.lookup(op.ID); ok {
		return r.result()
	}
	now := op.Time.UnixNano()
	var res Result
	switch op.Kind {
	case OpAllocate:
		a, how, err := s.allocate(op.Client, op.Domain, now)
		if err != nil {
			return Result{Err: err}
		}
		count := min(how, 1)
		s.dedup.remember(op.ID, dedupResult{addr: a, count: uint32(count), hasAddr: true})
		return Result{Addr: u32ToAddr(a), Count: count, Reused: how == allocReused}
	case OpMarkUsed:
		if s.markUsed(op.Client, addrToU32(op.Addr), op.Domain, now) {
			res.Count = 1
		}
	case OpRelease:
		if s.release(op.Client, op.Domain, now) {
			res.Count = 1
		}
	case OpReleaseClient:
		res.Count = s.releaseClient(op.Client, now)
	case OpUnhold:
		if s.unhold(op.Client, addrToU32(op.Addr), now) {
			res.Count = 1
		}
	case OpSetConfig:
		n, err := s.SetConfig(op.Config, op.Time)
		if err != nil {
			return Result{Err: err}
		}
		res.Count = n
	default:
		return Result{Err: errorf(CodeBadCommand, "unknown op kind %d", op.Kind)}
	}
	s.dedup.remember(op.ID, dedupResult{count: uint32(min(res.Count, math.MaxUint32))})
	return res
}
