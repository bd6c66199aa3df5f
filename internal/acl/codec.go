package acl

import (
	"encoding/json"

	"github.com/ippool/ippool/internal/jsonentry"
	"github.com/ippool/ippool/pool"
)

// A command's log entry is a jsonentry of marker 'A': a byte no pool entry
// starts with (theirs start with their version, 1 to 4), so a server from
// before access control refuses an ACL entry as an unknown version instead
// of misreading it.
var entries = jsonentry.Kind{Marker: 'A', Version: 1, Max: MaxCommand, Name: "ACL", TooLarge: pool.CodeInvalidConfig}

// MaxCommand bounds an entry; a token with the longest description takes
// well under 2 KiB.
const MaxCommand = 4 << 10

// IsCommand reports whether a log entry is an ACL command rather than pool
// operations.
func IsCommand(entry []byte) bool { return entries.Is(entry) }

// EncodeCommand makes a command's log entry; it refuses a command that
// DecodeCommand would refuse, so nothing undecodable reaches the log.
func EncodeCommand(c Command) ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	return entries.Encode(c)
}

// DecodeCommand reads an entry EncodeCommand made. A damaged entry is
// pool.ErrCorruptEntry, as a damaged pool entry is; anything else it cannot
// read is pool.ErrBadCommand.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := entries.Decode(b, &c); err != nil {
		return Command{}, err
	}
	if err := c.check(); err != nil {
		return Command{}, pool.Errorf(pool.CodeBadCommand, "ACL entry: %v", err)
	}
	return c, nil
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
	if err := jsonentry.Strict(body, &sec); err != nil {
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
