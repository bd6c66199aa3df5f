package policy

import (
	"encoding/json"

	"github.com/ippool/ippool/internal/jsonentry"
	"github.com/ippool/ippool/pool"
)

// EntryVersion is the log entry version that introduced the policy entry:
// a cluster writes one only once every server reads that version, since a
// server of an older release stops at an entry it does not know
// (docs/upgrading.md).
const EntryVersion = 4

// Stored is the replicated policy: the document as its administrator wrote
// it (comments and all), its revision, and its compiled form. A revision is
// the index of the log entry that set it, so it grows with every change and
// is the same on every server; 0 is "no policy yet" (every check allows).
type Stored struct {
	Text     string
	Revision uint64
	Policy   *Policy
}

// Command sets the policy. With Match, only when the current revision is
// IfRevision (HTTP's If-Match), so that two administrators editing at once
// cannot overwrite each other's change unseen.
type Command struct {
	Text       string `json:"text"`
	Match      bool   `json:"match,omitempty"`
	IfRevision uint64 `json:"if_revision,omitempty"`
}

// A command's log entry is a jsonentry of marker 'P', a byte no pool or ACL
// entry starts with: a server that does not know it takes it for a pool
// entry of a future version and stops rather than skip it.
var entries = jsonentry.Kind{Marker: 'P', Version: 1, Max: MaxCommand, Name: "policy", TooLarge: pool.CodeInvalidPolicy}

// MaxCommand holds the largest document, JSON-escaped.
const MaxCommand = 8 << 20

// IsCommand reports whether a log entry is a policy command.
func IsCommand(entry []byte) bool { return entries.Is(entry) }

// EncodeCommand makes a command's log entry; it refuses a document Parse
// refuses, so that every entry in the log compiles on every server.
func EncodeCommand(c Command) ([]byte, error) {
	if _, err := Parse([]byte(c.Text)); err != nil {
		return nil, invalid(err)
	}
	return entries.Encode(c)
}

// invalid is a document refused, as the API's invalid_policy.
func invalid(err error) error {
	return &pool.Error{Code: pool.CodeInvalidPolicy, Msg: err.Error()}
}

// DecodeCommand reads an entry EncodeCommand made. A damaged entry is
// pool.ErrCorruptEntry; anything else it cannot read is pool.ErrBadCommand.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := entries.Decode(b, &c); err != nil {
		return Command{}, err
	}
	return c, nil
}

// Apply is the state after the entry at index sets c on cur (nil: no
// policy yet). It is deterministic: every server compiles the same text the
// same way and compares the same revisions.
func Apply(cur *Stored, c Command, index uint64) (*Stored, error) {
	var rev uint64
	if cur != nil {
		rev = cur.Revision
	}
	if c.Match && c.IfRevision != rev {
		return cur, pool.Errorf(pool.CodeRevisionMismatch, "the policy is at revision %d, not %d: someone changed it since you read it; get it again, apply your change to that and retry", rev, c.IfRevision)
	}
	p, err := Parse([]byte(c.Text))
	if err != nil {
		return cur, invalid(err)
	}
	return &Stored{Text: c.Text, Revision: index, Policy: p}, nil
}

// A snapshot of a cluster with a policy holds a policy section (framed by
// internal/snapshot) whose body is the text and revision as JSON. A cluster
// without a policy writes none, so its snapshots read as before.
const (
	SectionMagic = "IPPOOLP1"
	// MaxSection holds the largest document, JSON-escaped.
	MaxSection = MaxCommand
)

type section struct {
	Text     string `json:"text"`
	Revision uint64 `json:"revision"`
}

// SectionBody is s's section body, nil when s is nil (no section).
func SectionBody(s *Stored) ([]byte, error) {
	if s == nil {
		return nil, nil
	}
	return json.Marshal(section{Text: s.Text, Revision: s.Revision})
}

// ParseSection reads a policy section's body and compiles the policy.
func ParseSection(body []byte) (*Stored, error) {
	var sec section
	if err := jsonentry.Strict(body, &sec); err != nil {
		return nil, pool.Errorf(pool.CodeBadSnapshot, "the snapshot's policy section does not decode: %v", err)
	}
	p, err := Parse([]byte(sec.Text))
	if err != nil {
		return nil, pool.Errorf(pool.CodeBadSnapshot, "the snapshot's policy does not compile: %v", err)
	}
	if sec.Revision == 0 {
		return nil, pool.Errorf(pool.CodeBadSnapshot, "the snapshot's policy has revision 0")
	}
	return &Stored{Text: sec.Text, Revision: sec.Revision, Policy: p}, nil
}
