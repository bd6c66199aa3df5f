package pool

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestState(t testing.TB, pool string, lifetime time.Duration) *State {
	t.Helper()
	cfg, err := ParseConfig(pool, "", lifetime)
	if err != nil {
		t.Fatal(err)
	}
	s := NewState()
	if _, err := s.SetConfig(cfg, t0); err != nil {
		t.Fatal(err)
	}
	return s
}

func mustAlloc(t testing.TB, s *State, client, domain string, now time.Time) netip.Addr {
	t.Helper()
	a, err := s.Allocate(client, domain, now)
	if err != nil {
		t.Fatalf("Allocate(%q, %q): %v", client, domain, err)
	}
	return a
}

func TestSameDomainSameAddress(t *testing.T) {
	s := newTestState(t, "100.64.0.0/16", time.Hour)
	a := mustAlloc(t, s, "node1", "example.com", t0)
	b := mustAlloc(t, s, "node1", "Example.COM.", t0.Add(time.Minute))
	if a != b {
		t.Fatalf("same domain gave %v then %v", a, b)
	}
	if a != netip.MustParseAddr("100.64.0.0") {
		t.Fatalf("first address is %v, want the lowest of the pool", a)
	}
}

func TestDistinctDomainsDistinctAddresses(t *testing.T) {
	s := newTestState(t, "100.64.0.0/24", time.Hour)
	seen := map[netip.Addr]string{}
	for i := range 200 {
		d := fmt.Sprintf("d%d.example", i)
		a := mustAlloc(t, s, "node1", d, t0)
		if prev, ok := seen[a]; ok {
			t.Fatalf("%s and %s share %v", prev, d, a)
		}
		seen[a] = d
	}
}

func TestClientsHaveTheWholePool(t *testing.T) {
	s := newTestState(t, "10.0.0.0/31", time.Hour)
	a := mustAlloc(t, s, "a", "x.com", t0)
	b := mustAlloc(t, s, "b", "y.com", t0)
	if a != b {
		t.Fatalf("two clients' first allocations differ: %v, %v", a, b)
	}
	if m, ok := s.Lookup("a", a); !ok || m.Domain != "x.com" {
		t.Fatalf("client a's address maps to %+v, %v", m, ok)
	}
	if m, ok := s.Lookup("b", a); !ok || m.Domain != "y.com" {
		t.Fatalf("client b's address maps to %+v, %v", m, ok)
	}
}

func TestSlash31Exhausts(t *testing.T) {
	s := newTestState(t, "10.0.0.0/31", time.Hour)
	a := mustAlloc(t, s, "node-7", "a.com", t0)
	b := mustAlloc(t, s, "node-7", "b.com", t0)
	if a == b {
		t.Fatalf("both domains got %v", a)
	}
	_, err := s.Allocate("node-7", "c.com", t0.Add(time.Minute))
	if !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("third allocation: %v, want pool exhausted", err)
	}
	if !strings.Contains(err.Error(), `"node-7"`) {
		t.Fatalf("error %q does not name the client", err)
	}
	if _, ok := s.Get("node-7", "c.com"); ok {
		t.Fatal("a failed allocation left a mapping")
	}
}

func TestExpiryAndReuse(t *testing.T) {
	life := time.Hour
	s := newTestState(t, "10.0.0.0/31", life)
	a := mustAlloc(t, s, "n", "a.com", t0)
	b := mustAlloc(t, s, "n", "b.com", t0.Add(time.Minute))
	// Keep b.com busy so only a.com expires.
	s.MarkUsed("n", b, "b.com", t0.Add(life))
	later := t0.Add(life + 30*time.Minute)
	c := mustAlloc(t, s, "n", "c.com", later)
	if c != a {
		t.Fatalf("reuse took %v, want a.com's %v (idle longest)", c, a)
	}
	if _, ok := s.Get("n", "a.com"); ok {
		t.Fatal("a.com still maps after its address was reused")
	}
	if m, ok := s.Lookup("n", a); !ok || m.Domain != "c.com" {
		t.Fatalf("reused address maps to %+v", m)
	}
	// b.com is not expired: nothing is free.
	if _, err := s.Allocate("n", "d.com", later); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("got %v, want pool exhausted: b.com is not expired", err)
	}
}

func TestExpiredMappingStillAnswers(t *testing.T) {
	s := newTestState(t, "10.0.0.0/24", time.Hour)
	a := mustAlloc(t, s, "n", "a.com", t0)
	mustAlloc(t, s, "m", "keepalive.com", t0)
	if m, ok := s.Lookup("n", a); !ok || m.Domain != "a.com" || !s.Expired(m.LastUsed, t0.Add(2*time.Hour)) {
		t.Fatalf("expired mapping: %+v %v", m, ok)
	}
}

func TestMarkUsed(t *testing.T) {
	life := time.Hour
	s := newTestState(t, "10.0.0.0/31", life)
	a := mustAlloc(t, s, "n", "a.com", t0)
	mustAlloc(t, s, "n", "b.com", t0)
	if !s.MarkUsed("n", a, "a.com", t0.Add(50*time.Minute)) {
		t.Fatal("mark did not take")
	}
	if s.MarkUsed("n", a, "a.com", t0.Add(10*time.Minute)) {
		t.Fatal("an older mark moved time backwards")
	}
	if s.MarkUsed("n", a, "other.com", t0.Add(55*time.Minute)) {
		t.Fatal("a mark for another domain took")
	}
	m, _ := s.Lookup("n", a)
	if !m.LastUsed.Equal(t0.Add(50 * time.Minute)) {
		t.Fatalf("last used %v", m.LastUsed)
	}
	// At t0+1h30, b.com (last used t0) is expired and a.com is not.
	c := mustAlloc(t, s, "n", "c.com", t0.Add(90*time.Minute))
	if c == a {
		t.Fatal("the marked mapping was reused")
	}
}

func TestUnknownAddressNotFound(t *testing.T) {
	s := newTestState(t, "10.0.0.0/24", time.Hour)
	mustAlloc(t, s, "n", "a.com", t0)
	for _, tc := range []struct {
		client string
		addr   string
	}{{"n", "10.0.0.9"}, {"other", "10.0.0.0"}, {"n", "192.168.1.1"}, {"n", "::1"}} {
		if m, ok := s.Lookup(tc.client, netip.MustParseAddr(tc.addr)); ok {
			t.Errorf("Lookup(%s, %s) = %+v", tc.client, tc.addr, m)
		}
	}
}

// A released address is held from its client (not from others) until an
// unhold, then it is the lowest unused address again (S2).
func TestReleasedAddressIsHeldUntilUnhold(t *testing.T) {
	s := newTestState(t, "10.0.0.0/24", time.Hour)
	a := mustAlloc(t, s, "n", "a.com", t0)
	mustAlloc(t, s, "n", "b.com", t0)
	if ok, err := s.Release("n", "a.com", t0); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	if c := mustAlloc(t, s, "n", "c.com", t0); c == a {
		t.Fatalf("the released %v went to another domain of the same client at once", a)
	}
	if o := mustAlloc(t, s, "other", "x.com", t0); o != a {
		t.Fatalf("another client got %v, want %v: a hold is per client", o, a)
	}
	if s.HeldCount() != 1 {
		t.Fatalf("%d held, want 1", s.HeldCount())
	}
	res := s.ApplyOps([]Op{{Kind: OpUnhold, Time: t0.Add(ReuseHold), Client: "n", Addr: a}})
	if res[0].Count != 1 || s.HeldCount() != 0 {
		t.Fatalf("unhold: %+v, %d still held", res[0], s.HeldCount())
	}
	if d := mustAlloc(t, s, "n", "d.com", t0.Add(ReuseHold)); d != a {
		t.Fatalf("after the unhold got %v, want the freed lowest %v", d, a)
	}
	if n, _ := s.ReleaseClient("n", t0); n != 3 {
		t.Fatalf("ReleaseClient released %d, want 3", n)
	}
	// The client is kept while it holds addresses, and goes with the last.
	if cl, m, _ := s.Counts(); cl != 2 || m != 1 || s.HeldCount() != 3 {
		t.Fatalf("after ReleaseClient: %d clients, %d mappings, %d held; want 2, 1, 3", cl, m, s.HeldCount())
	}
	var held []Op
	s.Holds(func(h Hold) bool {
		held = append(held, Op{Kind: OpUnhold, Time: t0.Add(ReuseHold), Client: h.Client, Addr: h.Addr})
		return true
	})
	s.ApplyOps(held)
	if cl, _, _ := s.Counts(); cl != 1 || s.HeldCount() != 0 {
		t.Fatalf("after unholding all: %d clients, %d held; want 1, 0", cl, s.HeldCount())
	}
}

// An expired mapping's address goes to another domain only ReuseHold after
// its lifetime ran out.
func TestExpiredAddressIsReusedOnlyAfterTheHold(t *testing.T) {
	s := newTestState(t, "10.0.0.0/32", time.Hour)
	a := mustAlloc(t, s, "n", "a.com", t0)
	if _, err := s.Allocate("n", "b.com", t0.Add(time.Hour+ReuseHold)); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("reused at lifetime+hold exactly: %v", err)
	}
	if b := mustAlloc(t, s, "n", "b.com", t0.Add(time.Hour+ReuseHold+1)); b != a {
		t.Fatalf("got %v, want the expired %v", b, a)
	}
}

func TestIdleClientsAreForgotten(t *testing.T) {
	life := time.Hour
	s := newTestState(t, "10.0.0.0/24", life)
	mustAlloc(t, s, "old", "a.com", t0)
	mustAlloc(t, s, "old", "b.com", t0.Add(time.Minute))
	mustAlloc(t, s, "new", "a.com", t0.Add(life))
	if cl, _, _ := s.Counts(); cl != 2 {
		t.Fatalf("%d clients, want 2 before expiry", cl)
	}
	mustAlloc(t, s, "new", "c.com", t0.Add(life+2*time.Minute))
	cl, maps, doms := s.Counts()
	if cl != 1 || maps != 2 || doms != 2 {
		t.Fatalf("after expiry: %d clients, %d mappings, %d domains; want 1, 2, 2", cl, maps, doms)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	s := newTestState(t, "10.0.0.0/24", time.Hour)
	mustAlloc(t, s, "n", "a.com", t0)
	before := snapshotBytes(t, s)
	cases := []struct {
		client, domain string
		want           error
	}{
		{"", "a.com", ErrInvalidClient},
		{"bad id", "a.com", ErrInvalidClient},
		{strings.Repeat("x", 129), "a.com", ErrInvalidClient},
		{"n", "", ErrInvalidDomain},
		{"n", "a..com", ErrInvalidDomain},
		{"n", "-a.com", ErrInvalidDomain},
		{"n", "a b.com", ErrInvalidDomain},
		{"n", strings.Repeat("a", 64) + ".com", ErrInvalidDomain},
		{"n", strings.Repeat("abcdefghi.", 26) + "com", ErrInvalidDomain},
	}
	for _, tc := range cases {
		if _, err := s.Allocate(tc.client, tc.domain, t0); !errors.Is(err, tc.want) {
			t.Errorf("Allocate(%q, %q) = %v, want %v", tc.client, tc.domain, err, tc.want.(*Error).Code)
		}
		if _, err := s.Release(tc.client, tc.domain, t0); !errors.Is(err, tc.want) {
			t.Errorf("Release(%q, %q) = %v, want %v", tc.client, tc.domain, err, tc.want.(*Error).Code)
		}
	}
	if !bytes.Equal(before, snapshotBytes(t, s)) {
		t.Fatal("bad input changed the state")
	}
}

func TestUnconfigured(t *testing.T) {
	s := NewState()
	if _, err := s.Allocate("n", "a.com", t0); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("got %v", err)
	}
}

func TestSetConfigReleasesOutside(t *testing.T) {
	s := newTestState(t, "10.0.0.0/30", time.Hour)
	for _, d := range []string{"a.com", "b.com", "c.com", "d.com"} {
		mustAlloc(t, s, "n", d, t0)
	}
	cfg, _ := ParseConfig("10.0.0.2-10.0.0.9", "", time.Hour)
	n, err := s.SetConfig(cfg, t0)
	if err != nil || n != 2 {
		t.Fatalf("SetConfig released %d (%v), want 2", n, err)
	}
	// The lowest unmapped address of the new pool is 10.0.0.4.
	if a := mustAlloc(t, s, "n", "e.com", t0); a != netip.MustParseAddr("10.0.0.4") {
		t.Fatalf("got %v", a)
	}
	if _, ok := s.Get("n", "a.com"); ok {
		t.Fatal("a.com survived outside the pool")
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ pool, exclude, want string }{
		{"", "", "empty"},
		{"10.0.0.0/33", "", `"10.0.0.0/33"`},
		{"fd00::/64", "", "not IPv4"},
		{"10.0.0.1/24", "", "did you mean 10.0.0.0/24"},
		{"10.0.0.0/24,10.0.0.128/25", "", "overlap"},
		{"10.0.0.9-10.0.0.1", "", "empty"},
		{"10.0.0.0/30", "10.0.0.0/29", "no address left"},
		{"banana", "", `"banana"`},
		{"10.0.0.0/24", "1.2.3", `"1.2.3"`},
		{"0.0.0.0/0", "", "more than"},
	} {
		_, err := ParseConfig(tc.pool, tc.exclude, time.Hour)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q, %q) = %v, want an error containing %q", tc.pool, tc.exclude, err, tc.want)
		}
	}
	cfg, err := ParseConfig("10.1.0.0/16, 10.0.0.1-10.0.0.20,192.168.0.7", "10.1.0.0/24", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.PoolString(), "10.0.0.1-10.0.0.20,10.1.0.0/16,192.168.0.7"; got != want {
		t.Fatalf("PoolString %q, want %q", got, want)
	}
	s := NewState()
	s.SetConfig(cfg, t0)
	if s.PoolSize() != 20+65536-256+1 {
		t.Fatalf("pool size %d", s.PoolSize())
	}
}

func TestNormalizeDomain(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM.":          "example.com",
		"a.b":                   "a.b",
		"_srv._tcp.x":           "_srv._tcp.x",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
	} {
		if got, err := NormalizeDomain(in); err != nil || got != want {
			t.Errorf("NormalizeDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// fataler is what testing.TB and rapid.T share.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

func snapshotBytes(t fataler, s *State) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Internationalised names are stored in their ASCII form, so every way of
// writing one is one domain; a name that is not valid IDNA is refused with
// a message naming it, not a byte of its encoding.
func TestNormalizeDomainConvertsInternationalisedNames(t *testing.T) {
	for _, in := range []string{"bücher.de", "Bücher.DE.", "BÜCHER.de", "xn--bcher-kva.de"} {
		if got, err := NormalizeDomain(in); err != nil || got != "xn--bcher-kva.de" {
			t.Errorf("NormalizeDomain(%q) = %q, %v; want xn--bcher-kva.de", in, got, err)
		}
	}
	_, err := NormalizeDomain("bad\u00a0name.example")
	if err == nil || !strings.Contains(err.Error(), `"bad\u00a0name.example"`) || !strings.Contains(err.Error(), "ASCII form") {
		t.Errorf("a name with a no-break space: %v", err)
	}
	if _, err := NormalizeDomain(""); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty: %v", err)
	}
}

// Outside counts exactly what SetConfig then releases, and changes nothing.
func TestOutsideCountsWhatSetConfigReleases(t *testing.T) {
	s := newTestState(t, "10.0.0.0/24", time.Hour)
	at := time.Unix(1000, 0)
	for c := range 5 {
		for d := range 20 {
			if _, err := s.Allocate(fmt.Sprintf("c%d", c), fmt.Sprintf("d%d.example", d), at); err != nil {
				t.Fatal(err)
			}
		}
	}
	smaller, _ := ParseConfig("10.0.0.0/28", "10.0.0.3", time.Hour)
	m, c, err := s.Outside(smaller)
	if err != nil || m != 5*(20-15) || c != 5 {
		t.Fatalf("Outside = %d mappings of %d clients, %v; want 25 of 5", m, c, err)
	}
	if _, n, _ := s.Counts(); n != 100 {
		t.Fatalf("Outside changed the state: %d mappings", n)
	}
	released, err := s.SetConfig(smaller, at)
	if err != nil || released != m {
		t.Fatalf("SetConfig released %d, %v; Outside said %d", released, err, m)
	}
}
