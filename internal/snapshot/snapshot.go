// Package snapshot reads and writes the whole replicated state as one
// stream: the optional sections (access control, policy), each
// "IPPOOL?1", a u32 length, its body and a CRC-32C, then the pool's own
// snapshot ("IPPOOLS1"). A state without tokens or a policy writes no
// section for them, so its snapshot is what releases before them wrote and
// read.
package snapshot

import (
	"bufio"
	"encoding/binary"
	"io"

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
			a, err := acl.ReadSection(br)
			if err != nil {
				return Contents{}, err
			}
			c.ACL = a
		case policyMagic:
			if c.Policy != nil {
				return Contents{}, pool.Errorf(pool.CodeBadSnapshot, "the snapshot holds two policy sections")
			}
			p, err := policy.ReadSection(br)
			if err != nil {
				return Contents{}, err
			}
			c.Policy = p
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

// Write writes what Read reads.
func Write(w io.Writer, c Contents) error {
	if err := acl.WriteSection(w, c.ACL); err != nil {
		return err
	}
	if err := policy.WriteSection(w, c.Policy); err != nil {
		return err
	}
	return c.Pool.WriteSnapshot(w)
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
