// Package acl is ippool's access control state: the API tokens, each with a
// role, replicated through the Raft log beside the pool so that every server
// enforces the same set (docs/design.md#access-control).
//
// Only a token's SHA-256 hash is stored, in the state, the log and
// snapshots; the secret is shown once, to whoever created it. Like the pool,
// the state machine does no I/O and reads no clock: a State is immutable and
// Apply returns the next one, so a request checks its token against a
// pointer without taking a lock.
package acl

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ippool/ippool/pool"
)

// Role is what a token may do. Roles are ordered: each allows what the ones
// below it allow.
type Role uint8

const (
	// RolePublic marks a request that needs no token (health, readiness,
	// bootstrap); no token has it.
	RolePublic Role = iota
	// RoleRead may look up, list, read status, the pool and metrics.
	RoleRead
	// RoleAllocate may also allocate: what a DNS front end or a gateway
	// needs.
	RoleAllocate
	// RoleAdmin may do everything: release, change the pool, manage tokens,
	// take and restore snapshots, change membership, profile.
	RoleAdmin
)

var roleNames = [...]string{RolePublic: "public", RoleRead: "read", RoleAllocate: "allocate", RoleAdmin: "admin"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", r)
}

// ParseRole reads a token role: read, allocate or admin.
func ParseRole(s string) (Role, error) {
	for r := RoleRead; r <= RoleAdmin; r++ {
		if s == roleNames[r] {
			return r, nil
		}
	}
	return 0, pool.Errorf(pool.CodeInvalidConfig, "role %q is not one of read, allocate, admin", s)
}

// MarshalText and UnmarshalText make a Role a JSON string.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

func (r *Role) UnmarshalText(b []byte) error {
	v, err := ParseRole(string(b))
	*r = v
	return err
}

// Limits on what the log may carry, checked when a command is made and
// again when it is decoded.
const (
	// MaxTokens bounds the tokens a cluster holds; tokens are for programs
	// and operators, not per client.
	MaxTokens = 1000
	// MaxDescription bounds a token's description, in bytes.
	MaxDescription = 256
	accessorLen    = 16
)

// Token is a token as the cluster stores it: everything but the secret.
type Token struct {
	// Accessor names the token in lists and revocations; it is not a
	// credential.
	Accessor    string `json:"accessor"`
	Hash        Hash   `json:"hash"`
	Role        Role   `json:"role"`
	Description string `json:"description,omitempty"`
	// Created is the proposing server's time, for operators' eyes only.
	Created time.Time `json:"created"`
}

func (t Token) check() error {
	if len(t.Accessor) != accessorLen || strings.Trim(t.Accessor, "0123456789abcdef") != "" {
		return pool.Errorf(pool.CodeInvalidConfig, "token accessor %q is not %d lowercase hex digits", t.Accessor, accessorLen)
	}
	if t.Role < RoleRead || t.Role > RoleAdmin {
		return pool.Errorf(pool.CodeInvalidConfig, "token role %d is not read, allocate or admin", t.Role)
	}
	return CheckDescription(t.Description)
}

// CheckDescription refuses descriptions that are too long or not printable
// text, so `token list` cannot be used to smuggle terminal escapes.
func CheckDescription(d string) error {
	if len(d) > MaxDescription {
		return pool.Errorf(pool.CodeInvalidConfig, "a token description is at most %d bytes; this one has %d", MaxDescription, len(d))
	}
	if !utf8.ValidString(d) || strings.ContainsFunc(d, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return pool.Errorf(pool.CodeInvalidConfig, "a token description must be printable UTF-8 text")
	}
	return nil
}

// Hash is what the state keeps of a secret: its SHA-256. Secrets are 256
// random bits, so a fast hash is enough: there is nothing to guess.
type Hash [32]byte

// HashSecret hashes a secret.
func HashSecret(secret string) Hash { return sha256.Sum256([]byte(secret)) }

func (h Hash) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h[:])), nil }

func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*len(h) {
		return fmt.Errorf("a token hash is %d hex digits, not %d", 2*len(h), len(b))
	}
	_, err := hex.Decode(h[:], b)
	return err
}

// State is the set of tokens. The zero value and nil are the state of a
// cluster whose ACLs were never bootstrapped. A State is never changed after
// it is made.
type State struct {
	bootstrapped bool
	byHash       map[Hash]*Token
	byAccessor   map[string]*Token
}

// Bootstrapped reports whether `acl bootstrap` has run: from then on every
// request but health, readiness and bootstrap needs a token.
func (s *State) Bootstrapped() bool { return s != nil && s.bootstrapped }

// Authenticate returns the token whose secret this is.
//
// The map is keyed by the secret's SHA-256, so a lookup's timing depends on
// the hash, which tells an attacker nothing about any secret; the final
// comparison is constant-time all the same.
func (s *State) Authenticate(secret string) (Token, bool) {
	if s == nil || secret == "" {
		return Token{}, false
	}
	h := HashSecret(secret)
	t, ok := s.byHash[h]
	if !ok || subtle.ConstantTimeCompare(t.Hash[:], h[:]) != 1 {
		return Token{}, false
	}
	return *t, true
}

// Tokens lists the tokens by creation time, then accessor.
func (s *State) Tokens() []Token {
	if s == nil {
		return nil
	}
	out := make([]Token, 0, len(s.byAccessor))
	for _, t := range s.byAccessor {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Token) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Accessor, b.Accessor)
	})
	return out
}

// Op is a command's kind.
type Op string

const (
	OpBootstrap Op = "bootstrap"
	OpCreate    Op = "create"
	OpRevoke    Op = "revoke"
)

// Command is one change to the tokens, as the log carries it.
type Command struct {
	Op Op `json:"op"`
	// Token is the token to add (bootstrap: the first admin token).
	Token *Token `json:"token,omitempty"`
	// Accessor names the token to revoke.
	Accessor string `json:"accessor,omitempty"`
}

func (c Command) check() error {
	switch c.Op {
	case OpBootstrap, OpCreate:
		if c.Token == nil {
			return pool.Errorf(pool.CodeBadCommand, "an ACL %s command carries no token", c.Op)
		}
		if c.Op == OpBootstrap && c.Token.Role != RoleAdmin {
			return pool.Errorf(pool.CodeBadCommand, "the bootstrap token must be an admin token")
		}
		return c.Token.check()
	case OpRevoke:
		if c.Accessor == "" {
			return pool.Errorf(pool.CodeBadCommand, "an ACL revoke command names no token")
		}
		return nil
	}
	return pool.Errorf(pool.CodeBadCommand, "unknown ACL command %q", c.Op)
}

// Apply returns the state after c, or an error and no change. Every server
// applies the same commands in the same order, so they agree on the result.
func (s *State) Apply(c Command) (*State, error) {
	if err := c.check(); err != nil {
		return s, err
	}
	switch c.Op {
	case OpBootstrap:
		if s.Bootstrapped() {
			return s, pool.Errorf(pool.CodeAlreadyBootstrapped, "ACLs are already bootstrapped; ask an admin for a token")
		}
		return s.with(c.Token, ""), nil
	case OpCreate:
		switch {
		case !s.Bootstrapped():
			return s, pool.Errorf(pool.CodeInvalidConfig, "ACLs are not bootstrapped: run `ippool acl bootstrap` first")
		case len(s.byAccessor) >= MaxTokens:
			return s, pool.Errorf(pool.CodeInvalidConfig, "the cluster already holds %d tokens, the most it keeps; revoke unused ones", MaxTokens)
		case s.byAccessor[c.Token.Accessor] != nil || s.byHash[c.Token.Hash] != nil:
			return s, pool.Errorf(pool.CodeInvalidConfig, "a token with accessor %s already exists", c.Token.Accessor)
		}
		return s.with(c.Token, ""), nil
	default: // OpRevoke
		t := s.byAccessorOrNil(c.Accessor)
		if t == nil {
			return s, pool.Errorf(pool.CodeNotFound, "no token with accessor %q", c.Accessor)
		}
		if t.Role == RoleAdmin && s.admins() == 1 {
			return s, pool.Errorf(pool.CodeInvalidConfig, "token %s is the last admin token; create another admin token before revoking it, or nobody could manage the cluster again", c.Accessor)
		}
		return s.with(nil, c.Accessor), nil
	}
}

func (s *State) byAccessorOrNil(a string) *Token {
	if s == nil {
		return nil
	}
	return s.byAccessor[a]
}

func (s *State) admins() int {
	n := 0
	for _, t := range s.byAccessor {
		if t.Role == RoleAdmin {
			n++
		}
	}
	return n
}

// with copies s, adding add and dropping the token named drop.
func (s *State) with(add *Token, drop string) *State {
	n := &State{bootstrapped: true, byHash: map[Hash]*Token{}, byAccessor: map[string]*Token{}}
	if s != nil {
		for a, t := range s.byAccessor {
			if a != drop {
				n.byAccessor[a] = t
				n.byHash[t.Hash] = t
			}
		}
	}
	if add != nil {
		t := *add
		n.byAccessor[t.Accessor] = &t
		n.byHash[t.Hash] = &t
	}
	return n
}
