package pool

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"strings"
	"unsafe"
)

// A snapshot is a stream of frames, each [length u32 LE][payload][CRC-32C of
// payload, u32 LE], after the 8-byte magic; a frame of length 0 ends it. The
// frames carry one byte stream, so records may cross frames, and a reader
// checks each frame before it parses a byte of it: a flipped bit or a torn
// write is found at once, and a truncated file lacks the end frame.
//
// The stream (integers are varints):
//
//	version; configured byte, [config as in a command];
//	dedup count, then per ID oldest first: origin u64 LE, seq, addr u32,
//	count<<1 | 1 when addr is an allocated address;
//	domain count, then each domain in sorted order, once however many
//	clients map it;
//	client count, then per client in sorted order: ID, last activity,
//	mapping count, then per mapping in address order: address minus the
//	previous one (the first minus zero), domain's rank in the domain list,
//	last activity minus last used; since version 2, then held count, then
//	per held address in order its difference from the previous one.
//
// Everything is sorted, so equal states give byte-identical snapshots (S9).
const snapshotMagic = "IPPOOLS1"

// Version 2 added held addresses; version 1 snapshots (no holds) are read.
const (
	snapshotVersion   = 2
	snapshotVersionV1 = 1
	frameTarget       = 64 << 10
	maxFrame          = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WriteSnapshot streams the state to w.
func (s *State) WriteSnapshot(w io.Writer) error {
	fw := &frameWriter{w: w, buf: make([]byte, 0, frameTarget+1024)}
	if _, err := io.WriteString(w, snapshotMagic); err != nil {
		return err
	}
	fw.uvarint(snapshotVersion)
	if s.configured {
		fw.put(1)
		fw.buf = appendConfig(fw.buf, s.cfg)
	} else {
		fw.put(0)
	}

	ids := s.dedup.ordered()
	fw.uvarint(uint64(len(ids)))
	for _, id := range ids {
		r := s.dedup.results[id]
		fw.buf = binary.LittleEndian.AppendUint64(fw.buf, id.Origin)
		fw.uvarint(id.Seq)
		fw.buf = binary.BigEndian.AppendUint32(fw.buf, r.addr)
		flag := uint64(0)
		if r.hasAddr {
			flag = 1
		}
		fw.uvarint(uint64(r.count)<<1 | flag)
		fw.maybeFlush()
	}

	// Domains by text; rank maps an internal index to its place in that order.
	order := make([]uint32, 0, s.domains.count())
	s.domains.forEach(func(id uint32) { order = append(order, id) })
	slices.SortFunc(order, func(a, b uint32) int { return cmp.Compare(s.domains.name(a), s.domains.name(b)) })
	rank := make([]uint32, len(s.domains.spans))
	fw.uvarint(uint64(len(order)))
	for r, id := range order {
		rank[id] = uint32(r)
		fw.str(s.domains.name(id))
		fw.maybeFlush()
	}

	clients := s.Clients()
	fw.uvarint(uint64(len(clients)))
	var byAddr []int32
	for _, cid := range clients {
		c := s.clients[cid]
		fw.str(c.id)
		fw.varint(c.lastActivity)
		fw.uvarint(uint64(len(c.slab)))
		byAddr = byAddr[:0]
		for i := range c.slab {
			byAddr = append(byAddr, int32(i))
		}
		slices.SortFunc(byAddr, func(a, b int32) int { return cmp.Compare(c.slab[a].addr, c.slab[b].addr) })
		prev := uint32(0)
		for _, i := range byAddr {
			m := &c.slab[i]
			fw.uvarint(uint64(m.addr - prev))
			fw.uvarint(uint64(rank[m.domain]))
			fw.uvarint(uint64(c.lastActivity - m.lastUsed))
			prev = m.addr
			fw.maybeFlush()
		}
		fw.uvarint(uint64(len(c.held)))
		prev = 0
		for _, a := range c.held {
			fw.uvarint(uint64(a - prev))
			prev = a
		}
		fw.maybeFlush()
		if fw.err != nil {
			return fw.err
		}
	}
	fw.flush()
	fw.flush() // the empty end frame
	return fw.err
}

type frameWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (f *frameWriter) put(b byte)       { f.buf = append(f.buf, b) }
func (f *frameWriter) uvarint(v uint64) { f.buf = binary.AppendUvarint(f.buf, v) }
func (f *frameWriter) varint(v int64)   { f.buf = binary.AppendVarint(f.buf, v) }
func (f *frameWriter) str(s string)     { f.buf = appendString(f.buf, s) }
func (f *frameWriter) maybeFlush() {
	if len(f.buf) >= frameTarget {
		f.flush()
	}
}

// flush writes the buffered bytes as one frame; with nothing buffered it
// writes the end frame.
func (f *frameWriter) flush() {
	if f.err != nil {
		return
	}
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(f.buf)))
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc32.Checksum(f.buf, castagnoli))
	for _, b := range [][]byte{hdr[:], f.buf, sum[:]} {
		if _, err := f.w.Write(b); err != nil {
			f.err = err
			return
		}
	}
	f.buf = f.buf[:0]
}

// frameReader yields the bytes of checked frames.
type frameReader struct {
	r     *bufio.Reader
	buf   []byte
	pos   int
	ended bool
}

func (f *frameReader) next() error {
	if f.ended {
		return errorf(CodeBadSnapshot, "snapshot ends before its content does")
	}
	var hdr [4]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return errorf(CodeBadSnapshot, "snapshot is truncated: %v", err)
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > maxFrame {
		return errorf(CodeBadSnapshot, "snapshot frame of %d bytes exceeds the limit of %d", n, maxFrame)
	}
	if cap(f.buf) < int(n)+4 {
		f.buf = make([]byte, int(n)+4)
	}
	f.buf = f.buf[:int(n)+4]
	if _, err := io.ReadFull(f.r, f.buf); err != nil {
		return errorf(CodeBadSnapshot, "snapshot is truncated: %v", err)
	}
	payload, sum := f.buf[:n], binary.LittleEndian.Uint32(f.buf[n:])
	if crc32.Checksum(payload, castagnoli) != sum {
		return errorf(CodeBadSnapshot, "snapshot frame fails its checksum: the file is corrupt")
	}
	f.buf, f.pos = payload, 0
	f.ended = n == 0
	return nil
}

func (f *frameReader) ReadByte() (byte, error) {
	for f.pos == len(f.buf) {
		if err := f.next(); err != nil {
			return 0, err
		}
	}
	b := f.buf[f.pos]
	f.pos++
	return b, nil
}

func (f *frameReader) Read(p []byte) (int, error) {
	for f.pos == len(f.buf) {
		if err := f.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, f.buf[f.pos:])
	f.pos += n
	return n, nil
}

// snapReader decodes the stream; the first error sticks.
type snapReader struct {
	fr      *frameReader
	err     error
	version uint64
	scratch [max(maxDomainSz, MaxClientIDLen)]byte
}

func (r *snapReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = errorf(CodeBadSnapshot, format, args...)
	}
}

func (r *snapReader) setErr(err error) {
	if r.err != nil {
		return
	}
	var pe *Error
	if errors.As(err, &pe) {
		r.err = err
	} else {
		r.fail("snapshot is malformed: %v", err)
	}
}

func (r *snapReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(r.fr)
	if err != nil {
		r.setErr(err)
	}
	return v
}

func (r *snapReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(r.fr)
	if err != nil {
		r.setErr(err)
	}
	return v
}

func (r *snapReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	b := make([]byte, n)
	if !r.fill(b) {
		return nil
	}
	return b
}

// fill reads len(p) bytes into p.
func (r *snapReader) fill(p []byte) bool {
	if r.err != nil {
		return false
	}
	if _, err := io.ReadFull(r.fr, p); err != nil {
		r.setErr(err)
		return false
	}
	return true
}

func (r *snapReader) uint32() uint32 {
	var b [4]byte
	if !r.fill(b[:]) {
		return 0
	}
	return binary.BigEndian.Uint32(b[:])
}

func (r *snapReader) uint64LE() uint64 {
	var b [8]byte
	if !r.fill(b[:]) {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:])
}

// scratchStr reads a string of at most max bytes into the reader's own
// buffer and returns it without a copy: it is valid until the next read.
// A domain name is interned from it (the table copies it into its arena),
// so the millions a snapshot holds are not each allocated and dropped.
func (r *snapReader) scratchStr(max int) string {
	n := r.uvarint()
	if r.err == nil && n > uint64(max) {
		r.fail("snapshot has a string of %d bytes; the limit is %d", n, max)
	}
	if r.err != nil {
		return ""
	}
	b := r.scratch[:n]
	if !r.fill(b) {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func (r *snapReader) str(max int) string { return strings.Clone(r.scratchStr(max)) }

// count reads a length and caps it, so a corrupt count fails at the limit
// rather than allocating.
func (r *snapReader) count(what string, max uint64) int {
	n := r.uvarint()
	if r.err == nil && n > max {
		r.fail("snapshot claims %d %s; the limit is %d", n, what, max)
	}
	return int(n)
}

// ReadSnapshot decodes a snapshot written by WriteSnapshot into a new State.
// A corrupt, truncated or inconsistent snapshot is an error, and the caller's
// current state is untouched because nothing is returned.
func ReadSnapshot(rd io.Reader) (*State, error) {
	br := bufio.NewReaderSize(rd, 64<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, errorf(CodeBadSnapshot, "not an ippool snapshot: it does not start with %q", snapshotMagic)
	}
	r := &snapReader{fr: &frameReader{r: br}}
	s := r.state()
	if r.err != nil {
		return nil, r.err
	}
	// The content must end exactly where the end frame is.
	if r.fr.pos != len(r.fr.buf) {
		return nil, errorf(CodeBadSnapshot, "snapshot has %d unexpected bytes after its content", len(r.fr.buf)-r.fr.pos)
	}
	if !r.fr.ended {
		if err := r.fr.next(); err != nil {
			return nil, err
		}
		if !r.fr.ended {
			return nil, errorf(CodeBadSnapshot, "snapshot has data after its content")
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, errorf(CodeBadSnapshot, "snapshot has bytes after its end frame")
	}
	return s, nil
}

func (r *snapReader) state() *State {
	s := NewState()
	r.version = r.uvarint()
	if r.err == nil && r.version != snapshotVersion && r.version != snapshotVersionV1 {
		r.fail("snapshot version %d is not supported; this server reads versions %d and %d", r.version, snapshotVersionV1, snapshotVersion)
	}
	configured, err := r.fr.ReadByte()
	if err != nil {
		r.setErr(err)
	}
	switch {
	case r.err != nil:
		return nil
	case configured == 1:
		r.config(s)
	case configured != 0:
		r.fail("snapshot has a bad configured flag %d", configured)
	}

	nids := r.count("request IDs", defaultDedupSize)
	for i := 0; i < nids && r.err == nil; i++ {
		id := RequestID{Origin: r.uint64LE(), Seq: r.uvarint()}
		addr, countFlag := r.uint32(), r.uvarint()
		if r.err == nil && countFlag>>1 > math.MaxUint32 {
			r.fail("snapshot has a request result count of %d", countFlag>>1)
		}
		res := dedupResult{addr: addr, count: uint32(countFlag >> 1), hasAddr: countFlag&1 == 1}
		if _, dup := s.dedup.results[id]; r.err == nil && (dup || id.IsZero()) {
			r.fail("snapshot repeats request ID %v or has a zero one", id)
		}
		s.dedup.remember(id, res)
	}

	// Interned as read, so that the names are held once, in the table's
	// arena, not also as 15M strings until the last is read (30M mappings).
	ndomains := r.count("domains", 1<<32-1)
	ids := make([]uint32, 0, min(ndomains, 1<<16))
	prev := ""
	for i := 0; i < ndomains && r.err == nil; i++ {
		d := r.scratchStr(maxDomainSz)
		if r.err != nil {
			break
		}
		if n, err := NormalizeDomain(d); err != nil || n != d {
			r.fail("snapshot has an invalid domain %q", d)
			break
		} else if i > 0 && d <= prev {
			r.fail("snapshot domains are not sorted at %q", d)
			break
		}
		id := s.domains.intern(d)
		// The table's copy: d is the reader's buffer, read over next.
		prev = s.domains.name(id)
		ids = append(ids, id)
	}

	nclients := r.count("clients", 1<<32-1)
	prevClient := ""
	for i := 0; i < nclients && r.err == nil; i++ {
		c := r.client(s, ids)
		if r.err != nil {
			break
		}
		if i > 0 && c.id <= prevClient {
			r.fail("snapshot clients are not sorted at %q", c.id)
		}
		prevClient = c.id
	}
	if r.err != nil {
		return nil
	}
	// Each domain was interned once above, so a count of 1 means no mapping
	// uses it: such a snapshot was not written by WriteSnapshot.
	for _, id := range ids {
		if s.domains.refs[id] == 1 {
			r.fail("snapshot lists domain %q that no mapping uses", s.domains.name(id))
			return nil
		}
		s.domains.release(id)
	}
	return s
}

func (r *snapReader) config(s *State) {
	// The config encoding is shared with commands; read it into a buffer
	// through the command decoder so there is one parser for it.
	var raw []byte
	for range 2 {
		n := r.uvarint()
		if r.err == nil && n > maxRanges {
			r.fail("snapshot config has %d ranges; the limit is %d", n, maxRanges)
		}
		raw = binary.AppendUvarint(raw, n)
		raw = append(raw, r.bytes(int(n)*8)...)
	}
	raw = binary.AppendVarint(raw, r.varint())
	if r.err != nil {
		return
	}
	d := decoder{b: raw}
	cfg := d.config()
	if d.err != nil {
		r.fail("snapshot config: %v", d.err)
		return
	}
	set, err := cfg.addrSet()
	if err != nil {
		r.fail("snapshot config: %v", err)
		return
	}
	s.cfg, s.set, s.configured = cfg, set, true
}

// maxReserve caps the mappings reserved for a client before they are read.
const maxReserve = 1 << 16

func (r *snapReader) client(s *State, domainIDs []uint32) *client {
	id := r.str(MaxClientIDLen)
	if r.err == nil {
		if err := ValidateClientID(id); err != nil {
			r.fail("snapshot: %v", err)
		}
	}
	lastActivity := r.varint()
	n := r.count("mappings", uint64(s.set.size))
	if r.err == nil && ((n == 0 && r.version == snapshotVersionV1) || !s.configured) {
		r.fail("snapshot client %q has no mappings or the pool has no configuration", id)
	}
	if r.err != nil {
		return nil
	}
	c := newClient(id)
	if n > 0 {
		// n is what the snapshot claims, up to the pool's size: a claim
		// larger than the mappings that follow fails the read at this
		// client, so it can waste at most one reservation, and that is
		// capped.
		c.reserve(min(n, maxReserve))
	}
	c.lastActivity = lastActivity
	s.clients[id] = c
	s.pushIdle(c)
	addr := uint32(0)
	for i := 0; i < n && r.err == nil; i++ {
		delta, rank, age := r.uvarint(), r.uvarint(), r.uvarint()
		if r.err != nil {
			break
		}
		next := uint64(addr) + delta
		switch {
		case (i > 0 && delta == 0) || next > 1<<32-1 || !s.set.contains(uint32(next)):
			r.fail("snapshot client %q has a mapping at an address outside the pool or out of order", id)
		case rank >= uint64(len(domainIDs)):
			r.fail("snapshot client %q refers to domain %d of %d", id, rank, len(domainIDs))
		case age > math.MaxInt64 || lastActivity-int64(age) > lastActivity:
			r.fail("snapshot client %q has a mapping used before time began", id)
		}
		if r.err != nil {
			break
		}
		addr = uint32(next)
		d := domainIDs[rank]
		if _, dup := c.findDomain(d); dup {
			r.fail("snapshot client %q maps domain %q twice", id, s.domains.name(d))
			break
		}
		s.domains.refs[d]++
		s.addMapping(c, addr, d, lastActivity-int64(age))
	}
	if r.err == nil && r.version >= 2 {
		r.holds(s, c)
	}
	if r.err == nil && len(c.slab) == 0 && len(c.held) == 0 {
		r.fail("snapshot client %q has neither mappings nor held addresses", id)
	}
	if r.err != nil {
		return nil
	}
	return c
}

// holds reads a client's held addresses: in the pool, ascending, unmapped.
func (r *snapReader) holds(s *State, c *client) {
	n := r.count("held addresses", uint64(s.set.size))
	addr := uint64(0)
	for i := 0; i < n && r.err == nil; i++ {
		delta := r.uvarint()
		next := addr + delta
		if r.err != nil {
			return
		}
		if (i > 0 && delta == 0) || next > 1<<32-1 || !s.set.contains(uint32(next)) {
			r.fail("snapshot client %q holds an address outside the pool or out of order", c.id)
			return
		}
		if _, mapped := c.findAddr(uint32(next)); mapped {
			r.fail("snapshot client %q holds an address it maps", c.id)
			return
		}
		addr = next
		s.hold(c, uint32(addr))
	}
}
