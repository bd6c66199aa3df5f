package acl

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"

	"github.com/ippool/ippool/pool"
)

// A command's log entry is commandMarker, a version byte, the command as
// JSON, and a CRC-32C of everything before it (little endian). The marker is
// a byte no pool entry starts with (theirs start with their version, 1 or
// 2), so the FSM tells the two apart by the first byte, and a server from
// before access control refuses an ACL entry as an unknown version instead
// of misreading it. Commands are rare and small, so JSON costs nothing that
// matters and reads plainly in a log dump.
const (
	commandMarker  = 'A'
	commandVersion = 1
	// MaxCommand bounds an entry; a token with the longest description
	// takes well under 2 KiB.
	MaxCommand = 4 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// IsCommand reports whether a log entry is an ACL command rather than pool
// operations.
func IsCommand(entry []byte) bool { return len(entry) > 0 && entry[0] == commandMarker }

// EncodeCommand makes a command's log entry; it refuses a command that
// DecodeCommand would refuse, so nothing undecodable reaches the log.
func EncodeCommand(c Command) ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	b := append([]byte{commandMarker, commandVersion}, body...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if len(b) > MaxCommand {
		return nil, pool.Errorf(pool.CodeInvalidConfig, "the ACL command takes %d bytes, over the limit of %d", len(b), MaxCommand)
	}
	return b, nil
}

// DecodeCommand reads an entry EncodeCommand made. A damaged entry is
// pool.ErrCorruptEntry, as a damaged pool entry is; anything else it cannot
// read is pool.ErrBadCommand.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if len(b) > MaxCommand {
		return c, pool.Errorf(pool.CodeBadCommand, "ACL entry of %d bytes is over the limit of %d", len(b), MaxCommand)
	}
	if len(b) < 6 || b[0] != commandMarker {
		return c, pool.Errorf(pool.CodeBadCommand, "not an ACL entry")
	}
	body := len(b) - 4
	if crc32.Checksum(b[:body], castagnoli) != binary.LittleEndian.Uint32(b[body:]) {
		return c, pool.Errorf(pool.CodeCorruptEntry, "ACL entry fails its checksum")
	}
	if b[1] != commandVersion {
		return c, pool.Errorf(pool.CodeBadCommand, "ACL entry has version %d; this server reads version %d", b[1], commandVersion)
	}
	if err := strictJSON(b[2:body], &c); err != nil {
		return Command{}, pool.Errorf(pool.CodeBadCommand, "ACL entry does not decode: %v", err)
	}
	if err := c.check(); err != nil {
		return Command{}, pool.Errorf(pool.CodeBadCommand, "ACL entry: %v", err)
	}
	return c, nil
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return pool.Errorf(pool.CodeBadCommand, "data after the JSON value")
	}
	return nil
}

// A snapshot of a cluster whose ACLs were bootstrapped holds an ACL section
// (framed by internal/snapshot) whose body is the tokens as JSON. A cluster
// without ACLs writes no section, so its snapshots are byte for byte what
// they were before access control existed, and old backups still restore.
const (
	SectionMagic = "IPPOOLA1"
	// MaxSection holds MaxTokens tokens with the longest descriptions.
	MaxSection = 4 << 20
)

type section struct {
	Tokens []Token `json:"tokens"`
}

// SectionBody is s's section body, nil when s was never bootstrapped (and
// so has no section).
func SectionBody(s *State) ([]byte, error) {
	if !s.Bootstrapped() {
		return nil, nil
	}
	return json.Marshal(section{Tokens: s.Tokens()})
}

// ParseSection reads an ACL section's body.
func ParseSection(body []byte) (*State, error) {
	var sec section
	if err := strictJSON(body, &sec); err != nil {
		return nil, pool.Errorf(pool.CodeBadSnapshot, "the snapshot's ACL section does not decode: %v", err)
	}
	if len(sec.Tokens) > MaxTokens {
		return nil, pool.Errorf(pool.CodeBadSnapshot, "the snapshot's ACL section holds %d tokens, over the limit of %d", len(sec.Tokens), MaxTokens)
	}
	s := &State{bootstrapped: true, byHash: map[Hash]*Token{}, byAccessor: map[string]*Token{}}
	for i := range sec.Tokens {
		t := &sec.Tokens[i]
		if err := t.check(); err != nil {
			return nil, pool.Errorf(pool.CodeBadSnapshot, "the snapshot's ACL section: %v", err)
		}
		if s.byAccessor[t.Accessor] != nil || s.byHash[t.Hash] != nil {
			return nil, pool.Errorf(pool.CodeBadSnapshot, "the snapshot's ACL section holds token %s twice", t.Accessor)
		}
		s.byAccessor[t.Accessor] = t
		s.byHash[t.Hash] = t
	}
	return s, nil
}
