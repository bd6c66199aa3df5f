package snapshot

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
)

const policyText = `{
	// one rule
	"rules": [{"name": "r", "clients": ["*"], "domains": ["*.example"], "action": "deny"}],
}`

func contents(t *testing.T) (Contents, string) {
	t.Helper()
	secret, root, err := acl.NewToken(acl.RoleAdmin, "root", time.Unix(1e9, 0))
	if err != nil {
		t.Fatal(err)
	}
	var a *acl.State
	if a, err = a.Apply(acl.Command{Op: acl.OpBootstrap, Token: &root}); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Apply(nil, policy.Command{Text: policyText}, 42)
	if err != nil {
		t.Fatal(err)
	}
	return Contents{Pool: pool.NewState(), ACL: a, Policy: p}, secret
}

// A state without tokens or a policy writes the pool's snapshot alone, byte
// for byte, so that older releases read it.
func TestWithoutSectionsIsThePoolsSnapshot(t *testing.T) {
	p := pool.NewState()
	var plain, poolOnly bytes.Buffer
	if err := Write(&plain, Contents{Pool: p}); err != nil {
		t.Fatal(err)
	}
	p.WriteSnapshot(&poolOnly)
	if !bytes.Equal(plain.Bytes(), poolOnly.Bytes()) {
		t.Fatal("a snapshot without sections differs from the pool's own")
	}
	c, err := Read(bytes.NewReader(plain.Bytes()))
	if err != nil || c.ACL != nil || c.Policy != nil || c.Pool == nil {
		t.Fatalf("pool-only snapshot: %+v, %v", c, err)
	}
	if a, pol, err := Sections(bytes.NewReader(plain.Bytes()), int64(plain.Len())); a || pol || err != nil {
		t.Fatalf("Sections: %v %v %v", a, pol, err)
	}
}

func TestSectionsRoundTrip(t *testing.T) {
	c, secret := contents(t)
	var full bytes.Buffer
	if err := Write(&full, c); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(full.Bytes(), []byte(secret)) {
		t.Fatal("the snapshot holds a secret")
	}
	if a, pol, err := Sections(bytes.NewReader(full.Bytes()), int64(full.Len())); !a || !pol || err != nil {
		t.Fatalf("Sections: %v %v %v", a, pol, err)
	}
	got, err := Read(bytes.NewReader(full.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.ACL.Authenticate(secret); !ok {
		t.Fatal("the token did not survive")
	}
	if got.Policy.Text != policyText || got.Policy.Revision != 42 || got.Policy.Policy.Len() != 1 {
		t.Fatalf("policy read back: %+v", got.Policy)
	}

	// Sections in the other order read alike; a section twice is refused.
	var swapped bytes.Buffer
	WriteSections(&swapped, nil, c.Policy)
	WriteSections(&swapped, c.ACL, nil)
	c.Pool.WriteSnapshot(&swapped)
	if got, err := Read(bytes.NewReader(swapped.Bytes())); err != nil || got.Policy == nil || got.ACL == nil {
		t.Fatalf("sections swapped: %+v %v", got, err)
	}
	var twice bytes.Buffer
	WriteSections(&twice, nil, c.Policy)
	WriteSections(&twice, nil, c.Policy)
	c.Pool.WriteSnapshot(&twice)
	if _, err := Read(bytes.NewReader(twice.Bytes())); !errors.Is(err, pool.ErrBadSnapshot) {
		t.Fatalf("two policy sections: %v", err)
	}

	// A damaged byte anywhere in a section is refused.
	var poolOnly bytes.Buffer
	c.Pool.WriteSnapshot(&poolOnly)
	b := full.Bytes()
	for i := range len(b) - poolOnly.Len() {
		d := bytes.Clone(b)
		d[i] ^= 1
		if _, err := Read(bytes.NewReader(d)); err == nil {
			t.Errorf("byte %d flipped: read", i)
		}
	}
	if _, err := Read(bytes.NewReader(b[:20])); err == nil {
		t.Error("a truncated section was read")
	}
}

// Whatever bytes come in, Read returns contents or an error, never a panic.
func FuzzRead(f *testing.F) {
	c, _ := contents(&testing.T{})
	var full bytes.Buffer
	Write(&full, c)
	f.Add(full.Bytes())
	var pol bytes.Buffer
	WriteSections(&pol, nil, c.Policy)
	f.Add(pol.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Read(bytes.NewReader(b))
		if err == nil && got.Pool == nil {
			t.Fatal("no error and no pool state")
		}
		Sections(bytes.NewReader(b), int64(len(b)))
	})
}
