package pool

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// applyAlloc applies one allocation in an entry with the client bound max.
func applyAlloc(t *testing.T, s *State, max int, client, domain string, at time.Time, seq uint64) Result {
	t.Helper()
	b, err := EncodeEntry(nil, Entry{Time: at, MaxClients: max, Ops: []Op{
		{Kind: OpAllocate, ID: RequestID{Origin: 5, Seq: seq}, Client: client, Domain: domain}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Apply(b)
	if err != nil {
		t.Fatal(err)
	}
	return res[0]
}

// TestMaxClientsRefusesNewClients: past the entry's client bound a new
// client is refused with quota_exceeded and nothing changes, while known
// clients go on allocating; once a client has been idle long enough to be
// forgotten, its place is free.
func TestMaxClientsRefusesNewClients(t *testing.T) {
	const life = 10 * time.Second
	s := newTestState(t, "10.0.0.0/24", life)
	for i, c := range []string{"a", "b", "c"} {
		if r := applyAlloc(t, s, 3, c, "x.com", t0.Add(time.Duration(i)*time.Second), uint64(i+1)); r.Err != nil {
			t.Fatalf("client %s: %v", c, r.Err)
		}
	}
	before := snapshotBytes(t, s)
	r := applyAlloc(t, s, 3, "d", "x.com", t0.Add(3*time.Second), 10)
	if !errors.Is(r.Err, ErrQuotaExceeded) {
		t.Fatalf("fourth client: %+v, want quota_exceeded", r)
	}
	if !bytes.Equal(before, snapshotBytes(t, s)) {
		t.Fatal("a refused client changed the state")
	}
	if r := applyAlloc(t, s, 3, "a", "y.com", t0.Add(4*time.Second), 11); r.Err != nil {
		t.Fatalf("a known client's new domain: %v", r.Err)
	}
	// Without a bound (entries from before version 3, localpool) the same
	// client is added.
	twin, _ := ReadSnapshot(bytes.NewReader(before))
	if r := twin.ApplyOps([]Op{{Kind: OpAllocate, Time: t0.Add(3 * time.Second), Client: "d", Domain: "x.com"}}); r[0].Err != nil {
		t.Fatalf("no bound: %v", r[0].Err)
	}
	// "b" and "c" were last active at t0+1s and t0+2s; "a" at t0+4s. Past
	// b's lifetime and reuse hold, b is forgotten and d takes its place.
	at := t0.Add(time.Second + life + ReuseHold + time.Nanosecond)
	if r := applyAlloc(t, s, 3, "d", "x.com", at, 12); r.Err != nil {
		t.Fatalf("a new client once b is idle: %v", r.Err)
	}
	if got := s.Clients(); len(got) != 3 || got[0] != "a" || got[1] != "c" || got[2] != "d" {
		t.Fatalf("clients %v, want a c d", got)
	}
	// The retry of a refused allocation is not answered from the request
	// ID window: it runs again.
	if r := applyAlloc(t, s, 3, "e", "x.com", at, 10); !errors.Is(r.Err, ErrQuotaExceeded) {
		t.Fatalf("fifth client: %+v", r)
	}
}
