package policy

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ippool/ippool/pool"
)

func TestCommandRoundTripAndRevisions(t *testing.T) {
	b, err := EncodeCommand(Command{Text: example, Match: true, IfRevision: 0})
	if err != nil {
		t.Fatal(err)
	}
	if !IsCommand(b) {
		t.Fatal("IsCommand is false")
	}
	c, err := DecodeCommand(b)
	if err != nil || c.Text != example || !c.Match {
		t.Fatalf("decoded %+v, %v", c, err)
	}
	for i := range b {
		d := bytes.Clone(b)
		d[i] ^= 0x10
		if _, err := DecodeCommand(d); err == nil {
			t.Fatalf("byte %d flipped: decoded", i)
		}
	}
	pe, _ := pool.EncodeEntry(nil, pool.Entry{Ops: []pool.Op{{Kind: pool.OpReleaseClient, Client: "c1"}}})
	if IsCommand(pe) {
		t.Fatal("a pool entry looks like a policy entry")
	}
	if _, err := EncodeCommand(Command{Text: `{"rules": [{"name": "x"}]}`}); !errors.Is(err, pool.ErrInvalidPolicy) {
		t.Fatalf("an invalid document: %v, want invalid_policy", err)
	}

	// If-Match: 0 is "no policy yet"; each change's revision is its index.
	s, err := Apply(nil, c, 7)
	if err != nil || s.Revision != 7 || s.Policy.Len() != 3 {
		t.Fatalf("first set: %+v %v", s, err)
	}
	if next, err := Apply(s, Command{Text: `{}`, Match: true, IfRevision: 0}, 9); !errors.Is(err, pool.ErrRevisionMismatch) || next != s {
		t.Fatalf("a stale If-Match: %v, state %+v", err, next)
	}
	if next, err := Apply(s, Command{Text: `{}`, Match: true, IfRevision: 7}, 9); err != nil || next.Revision != 9 {
		t.Fatalf("a current If-Match: %+v %v", next, err)
	}
	if next, err := Apply(s, Command{Text: `{"default": "no"}`}, 9); !errors.Is(err, pool.ErrInvalidPolicy) || next != s {
		t.Fatalf("an invalid document at apply: %v", err)
	}
}

func FuzzDecodeCommand(f *testing.F) {
	b, _ := EncodeCommand(Command{Text: example})
	f.Add(b)
	f.Add([]byte("P\x01{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		// Whatever decodes applies (or is refused) without panicking.
		Apply(nil, c, 1)
	})
}

func FuzzParseSection(f *testing.F) {
	s, _ := Apply(nil, Command{Text: example}, 3)
	body, _ := SectionBody(s)
	f.Add(body)
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseSection(b)
		if err == nil && (got == nil || got.Policy == nil || got.Revision == 0) {
			t.Fatal("no error and no policy")
		}
	})
}
