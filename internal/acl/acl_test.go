package acl

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/pool"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func mustToken(t *testing.T, role Role, desc string) (string, Token) {
	t.Helper()
	secret, tok, err := NewToken(role, desc, t0)
	if err != nil {
		t.Fatal(err)
	}
	return secret, tok
}

func mustApply(t *testing.T, s *State, c Command) *State {
	t.Helper()
	next, err := s.Apply(c)
	if err != nil {
		t.Fatalf("%s: %v", c.Op, err)
	}
	return next
}

func TestBootstrapCreateAuthenticateRevoke(t *testing.T) {
	var s *State
	if s.Bootstrapped() {
		t.Fatal("a nil state is bootstrapped")
	}
	rootSecret, root := mustToken(t, RoleAdmin, "bootstrap token")
	_, reader := mustToken(t, RoleRead, "dashboards")
	if _, err := s.Apply(Command{Op: OpCreate, Token: &reader}); err == nil {
		t.Fatal("a token was created before bootstrap")
	}
	s = mustApply(t, s, Command{Op: OpBootstrap, Token: &root})
	if !s.Bootstrapped() {
		t.Fatal("not bootstrapped after bootstrap")
	}
	_, other := mustToken(t, RoleAdmin, "")
	if _, err := s.Apply(Command{Op: OpBootstrap, Token: &other}); !errors.Is(err, &pool.Error{Code: pool.CodeAlreadyBootstrapped}) {
		t.Fatalf("second bootstrap: %v", err)
	}
	got, ok := s.Authenticate(rootSecret)
	if !ok || got.Accessor != root.Accessor || got.Role != RoleAdmin {
		t.Fatalf("Authenticate(root) = %+v, %v", got, ok)
	}
	for _, bad := range []string{"", "ippool_x", rootSecret + "x", strings.ToUpper(rootSecret)} {
		if _, ok := s.Authenticate(bad); ok {
			t.Errorf("Authenticate(%q) succeeded", bad)
		}
	}
	before := s
	s = mustApply(t, s, Command{Op: OpCreate, Token: &reader})
	if len(before.Tokens()) != 1 || len(s.Tokens()) != 2 {
		t.Fatalf("Apply changed the old state or missed the new token: %d, %d", len(before.Tokens()), len(s.Tokens()))
	}
	if _, err := s.Apply(Command{Op: OpCreate, Token: &reader}); err == nil {
		t.Fatal("the same token was created twice")
	}
	if _, err := s.Apply(Command{Op: OpRevoke, Accessor: root.Accessor}); err == nil || !strings.Contains(err.Error(), "last admin") {
		t.Fatalf("revoking the last admin token: %v", err)
	}
	if _, err := s.Apply(Command{Op: OpRevoke, Accessor: "0123456789abcdef"}); !errors.Is(err, pool.ErrNotFound) {
		t.Fatalf("revoking an unknown token: %v", err)
	}
	s = mustApply(t, s, Command{Op: OpRevoke, Accessor: reader.Accessor})
	if len(s.Tokens()) != 1 {
		t.Fatalf("tokens after revoke: %+v", s.Tokens())
	}
}

func TestTokenLimit(t *testing.T) {
	var s *State
	_, root := mustToken(t, RoleAdmin, "")
	s = mustApply(t, s, Command{Op: OpBootstrap, Token: &root})
	for range MaxTokens - 1 {
		_, tok := mustToken(t, RoleRead, "")
		s = mustApply(t, s, Command{Op: OpCreate, Token: &tok})
	}
	_, tok := mustToken(t, RoleRead, "")
	if _, err := s.Apply(Command{Op: OpCreate, Token: &tok}); err == nil {
		t.Fatalf("token %d was created", MaxTokens+1)
	}
}

func TestDescriptionsAreBoundedText(t *testing.T) {
	for _, d := range []string{strings.Repeat("x", MaxDescription+1), "a\x1b[2Jb", "tab\there", "\xff"} {
		if _, _, err := NewToken(RoleRead, d, t0); err == nil {
			t.Errorf("description %q accepted", d)
		}
	}
	if _, _, err := NewToken(RoleRead, strings.Repeat("é", MaxDescription/2), t0); err != nil {
		t.Errorf("a %d-byte description: %v", MaxDescription, err)
	}
}

func TestCommandRoundTripAndDamage(t *testing.T) {
	_, tok := mustToken(t, RoleAllocate, "gateway 1")
	for _, c := range []Command{{Op: OpBootstrap, Token: &Token{Accessor: tok.Accessor, Hash: tok.Hash, Role: RoleAdmin, Created: t0}}, {Op: OpCreate, Token: &tok}, {Op: OpRevoke, Accessor: tok.Accessor}} {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if !IsCommand(b) {
			t.Fatal("IsCommand is false for an ACL entry")
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Op != c.Op || got.Accessor != c.Accessor || (c.Token != nil && *got.Token != *c.Token) {
			t.Fatalf("round trip: %+v, want %+v", got, c)
		}
		for i := range b {
			d := bytes.Clone(b)
			d[i] ^= 0x10
			if _, err := DecodeCommand(d); err == nil {
				t.Fatalf("byte %d flipped: decoded", i)
			}
		}
	}
	if _, err := EncodeCommand(Command{Op: OpBootstrap, Token: &tok}); err == nil {
		t.Fatal("a bootstrap with an allocate token was encoded")
	}
	pe, _ := pool.EncodeEntry(nil, pool.Entry{Ops: []pool.Op{{Kind: pool.OpReleaseClient, Client: "c1"}}})
	if IsCommand(pe) {
		t.Fatal("a pool entry looks like an ACL entry")
	}
}

func FuzzDecodeCommand(f *testing.F) {
	_, tok, _ := NewToken(RoleRead, "d", t0)
	b, _ := EncodeCommand(Command{Op: OpCreate, Token: &tok})
	f.Add(b)
	f.Add([]byte("A\x01{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		// Whatever decodes applies without panicking and encodes again.
		var s *State
		s.Apply(c)
		if _, err := EncodeCommand(c); err != nil {
			t.Fatalf("decoded %+v does not encode: %v", c, err)
		}
	})
}

func FuzzParseSection(f *testing.F) {
	var s *State
	_, root, _ := NewToken(RoleAdmin, "root", t0)
	s, _ = s.Apply(Command{Op: OpBootstrap, Token: &root})
	body, _ := SectionBody(s)
	f.Add(body)
	f.Add([]byte(`{"tokens": [{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseSection(b)
		if err != nil || a == nil {
			return
		}
		again, err := SectionBody(a)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSection(again); err != nil {
			t.Fatalf("a section read back does not read again: %v", err)
		}
	})
}
