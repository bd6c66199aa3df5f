// Package snapshot reads and writes the whole replicated state as one
// stream: the optional sections (access control, policy), then the pool's
// own snapshot ("IPPOOLS1"). A section is its magic ("IPPOOL?1"), its
// body's length (u32 LE), the body (the owning package's JSON) and a
// CRC-32C of the body (u32 LE); this package frames them, and acl and
// policy say what a body holds. A state without tokens or a policy writes
// no section for them, so its snapshot is what releases before them wrote
// and read.
package snapshot

import (
	"bufio"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
)

// Contents is the replicated state.
type Contents struct {
	Pool *pool.State
	// ACL is nil when access control was never bootstrapped.
	ACL *acl.State
	// Policy is nil when no policy was ever set.
	Policy *policy.Stored
}

const (
	aclMagic    = acl.SectionMagic
	policyMagic = policy.SectionMagic
	magicLen    = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Read reads a whole snapshot. Each section may appear once, in any order,
// before the pool's snapshot.
func Read(r io.Reader) (Contents, error) {
	var c Contents
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		head, _ := br.Peek(magicLen)
		switch string(head) {
		case aclMagic:
			if c.ACL != nil {
				return Contents{}, pool.Errorf(pool.CodeBadSnapshot, "the snapshot holds two ACL sections")
			}
			body, err := readSection(br, "ACL", acl.MaxSection)
			if err == nil {
				c.ACL, err = acl.ParseSection(body)
			}
			if err != nil {
				return Contents{}, err
			}
		case policyMagic:
			if c.Policy != nil {
				return Contents{}, pool.Errorf(pool.CodeBadSnapshot, "the snapshot holds two policy sections")
			}
			body, err := readSection(br, "policy", policy.MaxSection)
			if err == nil {
				c.Policy, err = policy.ParseSection(body)
			}
			if err != nil {
				return Contents{}, err
			}
		default:
			s, err := pool.ReadSnapshot(br)
			if err != nil {
				return Contents{}, err
			}
			c.Pool = s
			return c, nil
		}
	}
}

// WriteFile writes c to a spool file through a buffer: Raft snapshots and
// backups are encoded so (a gigabyte at 30M mappings is not held in memory),
// then copied from the file.
func WriteFile(f *os.File, c Contents) error {
	w := bufio.NewWriterSize(f, 1<<20)
	if err := Write(w, c); err != nil {
		return err
	}
	return w.Flush()
}

// Write writes what Read reads.
func Write(w io.Writer, c Contents) error {
	if err := WriteSections(w, c.ACL, c.Policy); err != nil {
		return err
	}
	return c.Pool.WriteSnapshot(w)
}

// WriteSections writes the sections of a and p, none for a state never
// bootstrapped or a nil policy: a restore puts the cluster's own in front
// of a backup that has none, so that an old backup does not turn access
// control or the policy off.
func WriteSections(w io.Writer, a *acl.State, p *policy.Stored) error {
	body, err := acl.SectionBody(a)
	if err == nil && body != nil {
		err = writeSection(w, aclMagic, body)
	}
	if err != nil {
		return err
	}
	if body, err = policy.SectionBody(p); err == nil && body != nil {
		err = writeSection(w, policyMagic, body)
	}
	return err
}

func writeSection(w io.Writer, magic string, body []byte) error {
	b := make([]byte, 0, magicLen+4+len(body)+4)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(body, castagnoli))
	_, err := w.Write(b)
	return err
}

// readSection reads the section at r, whose magic Read has seen, and
// returns its body once its length and checksum hold.
func readSection(r *bufio.Reader, what string, max uint32) ([]byte, error) {
	r.Discard(magicLen)
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, pool.Errorf(pool.CodeBadSnapshot, "snapshot ends inside its %s section", what)
	}
	size := binary.LittleEndian.Uint32(n[:])
	if size > max {
		return nil, pool.Errorf(pool.CodeBadSnapshot, "the snapshot's %s section claims %d bytes, over the limit of %d", what, size, max)
	}
	body := make([]byte, size+4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, pool.Errorf(pool.CodeBadSnapshot, "snapshot ends inside its %s section", what)
	}
	if crc32.Checksum(body[:size], castagnoli) != binary.LittleEndian.Uint32(body[size:]) {
		return nil, pool.Errorf(pool.CodeBadSnapshot, "the snapshot's %s section fails its checksum", what)
	}
	return body[:size], nil
}

// Sections says which sections a snapshot of size bytes holds, reading
// only their headers.
func Sections(r io.ReaderAt, size int64) (hasACL, hasPolicy bool, err error) {
	var head [magicLen + 4]byte
	for off := int64(0); off+int64(len(head)) <= size; {
		if _, err := r.ReadAt(head[:], off); err != nil {
			return false, false, err
		}
		switch string(head[:magicLen]) {
		case aclMagic:
			hasACL = true
		case policyMagic:
			hasPolicy = true
		default:
			return hasACL, hasPolicy, nil
		}
		off += int64(len(head)) + int64(binary.LittleEndian.Uint32(head[magicLen:])) + 4
	}
	return hasACL, hasPolicy, nil
}
