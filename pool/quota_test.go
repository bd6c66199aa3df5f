package pool

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// applyQuota applies one allocation in a version 4 entry with quotas q.
func applyQuota(t testing.TB, s *State, q Quotas, client, domain string, at time.Time, seq uint64) Result {
	t.Helper()
	b, err := EncodeEntry(nil, Entry{Time: at, Quotas: q, Ops: []Op{
		{Kind: OpAllocate, ID: RequestID{Origin: 6, Seq: seq}, Client: client, Domain: domain}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Apply(b)
	if err != nil {
		t.Fatal(err)
	}
	return res[0]
}

// refused applies an allocation that must fail with quota_exceeded, naming
// the quota, and change nothing.
func refused(t *testing.T, s *State, q Quotas, client, domain string, at time.Time, seq uint64, quota string) {
	t.Helper()
	before := snapshotBytes(t, s)
	r := applyQuota(t, s, q, client, domain, at, seq)
	if !errors.Is(r.Err, ErrQuotaExceeded) || QuotaOf(r.Err) != quota {
		t.Fatalf("%s %s: %+v, want quota_exceeded for %s", client, domain, r, quota)
	}
	if !bytes.Equal(before, snapshotBytes(t, s)) {
		t.Fatalf("%s %s: a refused allocation changed the state", client, domain)
	}
	if err := s.checkInvariants(); err != nil {
		t.Fatal(err)
	}
}

func mustAllocate(t *testing.T, s *State, q Quotas, client, domain string, at time.Time, seq uint64) Result {
	t.Helper()
	r := applyQuota(t, s, q, client, domain, at, seq)
	if r.Err != nil {
		t.Fatalf("%s %s: %v", client, domain, r.Err)
	}
	return r
}

func TestMaxMappingsPerClient(t *testing.T) {
	s := newTestState(t, "10.0.0.0/24", time.Hour)
	q := Quotas{MaxMappingsPerClient: 2}
	mustAllocate(t, s, q, "a", "x.com", t0, 1)
	mustAllocate(t, s, q, "a", "y.com", t0, 2)
	refused(t, s, q, "a", "z.com", t0, 3, "mappings_per_client")
	r := applyQuota(t, s, q, "a", "z.com", t0, 4)
	for _, want := range []string{"client a", "2 mappings", "--max-mappings-per-client 2"} {
		if !strings.Contains(r.Err.Error(), want) {
			t.Errorf("message %q does not say %q", r.Err, want)
		}
	}
	// A mapping the client has is still answered, and other clients are
	// not held back.
	mustAllocate(t, s, q, "a", "x.com", t0.Add(time.Second), 5)
	mustAllocate(t, s, q, "b", "z.com", t0, 6)
	// A release frees the client's quota.
	if _, err := s.Release("a", "x.com", t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	mustAllocate(t, s, q, "a", "z.com", t0.Add(3*time.Second), 7)
	if err := s.checkInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestMaxMappings(t *testing.T) {
	const life = 10 * time.Second
	s := newTestState(t, "10.0.0.0/24", life)
	q := Quotas{MaxMappings: 3}
	mustAllocate(t, s, q, "a", "x.com", t0, 1)
	mustAllocate(t, s, q, "a", "y.com", t0, 2)
	mustAllocate(t, s, q, "b", "x.com", t0.Add(time.Second), 3)
	refused(t, s, q, "c", "x.com", t0.Add(2*time.Second), 4, "mappings")
	refused(t, s, q, "b", "y.com", t0.Add(2*time.Second), 5, "mappings")
	if _, m, _ := s.Counts(); m != 3 {
		t.Fatalf("%d mappings, want 3", m)
	}
	// Once "a" has been idle past its lifetime and the reuse hold it is
	// forgotten by the refused write's time, and its two mappings are free.
	at := t0.Add(life + ReuseHold + time.Nanosecond)
	mustAllocate(t, s, q, "c", "x.com", at, 6)
	if got := s.Clients(); len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Fatalf("clients %v, want b c", got)
	}
}

func TestMaxDomainBytes(t *testing.T) {
	s := newTestState(t, "10.0.0.0/24", time.Hour)
	q := Quotas{MaxDomainBytes: int64(len("aa.com") + len("bb.com"))}
	mustAllocate(t, s, q, "a", "aa.com", t0, 1)
	mustAllocate(t, s, q, "b", "aa.com", t0, 2) // held once: adds nothing
	mustAllocate(t, s, q, "b", "bb.com", t0, 3)
	if got := s.DomainBytes(); got != q.MaxDomainBytes {
		t.Fatalf("%d domain bytes, want %d", got, q.MaxDomainBytes)
	}
	refused(t, s, q, "c", "c.com", t0, 4, "domain_bytes")
	mustAllocate(t, s, q, "c", "bb.com", t0, 5)
	// Releasing the last mapping of a name frees its bytes.
	s.Release("b", "aa.com", t0.Add(time.Second))
	refused(t, s, q, "c", "cc.com", t0.Add(time.Second), 6, "domain_bytes")
	s.Release("a", "aa.com", t0.Add(time.Second))
	if got := s.DomainBytes(); got != int64(len("bb.com")) {
		t.Fatalf("%d domain bytes, want %d", got, len("bb.com"))
	}
	mustAllocate(t, s, q, "c", "cc.com", t0.Add(2*time.Second), 7)
}

// At a quota a client may still take its own expired mapping: that adds no
// mapping.
func TestQuotaReusesTheClientsExpiredMapping(t *testing.T) {
	const life = 10 * time.Second
	s := newTestState(t, "10.0.0.0/24", life)
	q := Quotas{MaxMappingsPerClient: 2, MaxMappings: 2}
	old := mustAllocate(t, s, q, "a", "x.com", t0, 1)
	mustAllocate(t, s, q, "a", "y.com", t0.Add(life), 2)
	at := t0.Add(life + ReuseHold + time.Nanosecond)
	r := mustAllocate(t, s, q, "a", "z.com", at, 3)
	if !r.Reused || r.Addr != old.Addr {
		t.Fatalf("allocation past the quota: %+v, want x.com's %v reused", r, old.Addr)
	}
	if _, m, _ := s.Counts(); m != 2 {
		t.Fatalf("%d mappings, want 2", m)
	}
	refused(t, s, q, "a", "w.com", at, 4, "mappings_per_client")
}

// Without quotas (version 3 entries, localpool) nothing is refused.
func TestNoQuotasInOlderEntries(t *testing.T) {
	s := newTestState(t, "10.0.0.0/24", time.Hour)
	for i, d := range []string{"a.com", "b.com", "c.com"} {
		b, _ := EncodeEntry(nil, Entry{Version: 3, Time: t0, Ops: []Op{{Kind: OpAllocate, Client: "a", Domain: d, ID: RequestID{1, uint64(i + 1)}}}})
		res, err := s.Apply(b)
		if err != nil || res[0].Err != nil {
			t.Fatalf("%s: %v %v", d, err, res)
		}
	}
}

func TestQuotaOf(t *testing.T) {
	for msg, want := range map[string]string{
		"x (--max-clients 3); y":             "clients",
		"x (--max-mappings 3); y":            "mappings",
		"x (--max-mappings-per-client 3); y": "mappings_per_client",
		"x (--max-domain-bytes 3); y":        "domain_bytes",
		"something else":                     "other",
	} {
		if got := QuotaOf(Errorf(CodeQuotaExceeded, "%s", msg)); got != want {
			t.Errorf("QuotaOf(%q) = %q, want %q", msg, got, want)
		}
	}
	if got := QuotaOf(Errorf(CodePoolExhausted, "(--max-mappings 3)")); got != "" {
		t.Errorf("QuotaOf of another code = %q", got)
	}
}

// TestPropertyQuotasHold: random allocations and releases under random
// quotas never hold more than a quota allows, and a refused allocation
// changes nothing but what expiry at its time would have changed anyway.
func TestPropertyQuotasHold(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg, _ := ParseConfig(rapid.SampledFrom(propPools).Draw(t, "pool"), "", propLifetime)
		s := NewState()
		s.SetConfig(cfg, time.Unix(0, 0))
		q := Quotas{
			MaxMappings:          rapid.IntRange(0, 8).Draw(t, "maxMappings"),
			MaxMappingsPerClient: rapid.IntRange(0, 4).Draw(t, "perClient"),
			MaxDomainBytes:       int64(rapid.IntRange(0, 20).Draw(t, "domainBytes")),
		}
		now := int64(0)
		for step := range rapid.IntRange(1, 100).Draw(t, "steps") {
			now += rapid.Int64Range(0, 60).Draw(t, "dt") * propUnit
			at := time.Unix(0, now)
			c := rapid.SampledFrom(propClients).Draw(t, "client")
			d := rapid.SampledFrom(propDomains).Draw(t, "domain")
			kind := OpAllocate
			if rapid.IntRange(0, 4).Draw(t, "op") == 0 {
				kind = OpRelease
			}
			b, err := EncodeEntry(nil, Entry{Time: at, Quotas: q, Ops: []Op{{Kind: kind, ID: RequestID{1, uint64(step + 1)}, Client: c, Domain: d}}})
			if err != nil {
				t.Fatal(err)
			}
			before := snapshotBytes(t, s)
			res, err := s.Apply(b)
			if err != nil {
				t.Fatal(err)
			}
			if errors.Is(res[0].Err, ErrQuotaExceeded) {
				expired, _ := ReadSnapshot(bytes.NewReader(before))
				expired.forgetIdleClients(now)
				if !bytes.Equal(snapshotBytes(t, expired), snapshotBytes(t, s)) {
					t.Fatalf("a refused allocation of %s %s changed the state", c, d)
				}
			}
			if err := s.checkInvariants(); err != nil {
				t.Fatal(err)
			}
			_, mappings, _ := s.Counts()
			if q.MaxMappings > 0 && mappings > q.MaxMappings {
				t.Fatalf("%d mappings, quota %d", mappings, q.MaxMappings)
			}
			if q.MaxDomainBytes > 0 && s.DomainBytes() > q.MaxDomainBytes {
				t.Fatalf("%d domain bytes, quota %d", s.DomainBytes(), q.MaxDomainBytes)
			}
			for _, id := range s.Clients() {
				if n := len(s.Mappings(id)); q.MaxMappingsPerClient > 0 && n > q.MaxMappingsPerClient {
					t.Fatalf("client %s holds %d mappings, quota %d", id, n, q.MaxMappingsPerClient)
				}
			}
		}
	})
}

// QuotaRefusal, asked before proposing, refuses only what applying would
// refuse at the same time, and changes nothing.
func TestQuotaRefusalAgreesWithApply(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg, _ := ParseConfig(rapid.SampledFrom(propPools).Draw(t, "pool"), "", propLifetime)
		s := NewState()
		s.SetConfig(cfg, time.Unix(0, 0))
		q := Quotas{
			MaxMappings:          rapid.IntRange(0, 8).Draw(t, "maxMappings"),
			MaxMappingsPerClient: rapid.IntRange(0, 4).Draw(t, "perClient"),
			MaxDomainBytes:       int64(rapid.IntRange(0, 20).Draw(t, "domainBytes")),
		}
		maxClients := rapid.IntRange(0, 3).Draw(t, "maxClients")
		now := int64(0)
		for step := range rapid.IntRange(1, 80).Draw(t, "steps") {
			now += rapid.Int64Range(0, 60).Draw(t, "dt") * propUnit
			at := time.Unix(0, now)
			c := rapid.SampledFrom(propClients).Draw(t, "client")
			d := rapid.SampledFrom(propDomains).Draw(t, "domain")
			kind := OpAllocate
			if rapid.IntRange(0, 4).Draw(t, "op") == 0 {
				kind = OpRelease
			}
			before := snapshotBytes(t, s)
			refusal := s.QuotaRefusal(c, d, at, maxClients, q)
			if !bytes.Equal(before, snapshotBytes(t, s)) {
				t.Fatal("QuotaRefusal changed the state")
			}
			b, err := EncodeEntry(nil, Entry{Time: at, MaxClients: maxClients, Quotas: q, Ops: []Op{{Kind: kind, ID: RequestID{1, uint64(step + 1)}, Client: c, Domain: d}}})
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.Apply(b)
			if err != nil {
				t.Fatal(err)
			}
			if kind == OpAllocate && refusal != nil && !errors.Is(res[0].Err, ErrQuotaExceeded) {
				t.Fatalf("QuotaRefusal said %v, applying answered %+v", refusal, res[0])
			}
		}
	})
}
