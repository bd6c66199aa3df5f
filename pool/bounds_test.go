package pool

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
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

// TestForgettingIsBoundedPerWrite: a batch that went idle at once is
// forgotten a bounded number of mappings a write (entries of version 4),
// oldest clients first, the rest at the next writes; an entry of version
// 3 forgets it all, as the servers that write them do; a client-bound
// refusal first forgets every idle client, so that it stays exact.
func TestForgettingIsBoundedPerWrite(t *testing.T) {
	const life = 10 * time.Second
	const clients, each = 10, 1000 // 10,000 mappings: 3 writes at 4,096
	build := func() *State {
		s := newTestState(t, "10.0.0.0/20", life)
		for c := range clients {
			for d := range each {
				mustAlloc(t, s, fmt.Sprintf("idle-%d", c), fmt.Sprintf("d%d.example", d), t0.Add(time.Duration(c)*time.Millisecond))
			}
		}
		return s
	}
	later := t0.Add(life + ReuseHold + time.Second)
	write := func(s *State, version, maxClients int, client string, seq uint64) Result {
		t.Helper()
		return s.ApplyEntry(Entry{Version: version, MaxClients: maxClients, Ops: []Op{
			{Kind: OpAllocate, Time: later, Client: client, Domain: "x.example", ID: RequestID{Origin: 7, Seq: seq}}}})[0]
	}

	s := build()
	var left []int
	for i := range 4 {
		if r := write(s, 4, 0, "active", uint64(i+1)); r.Err != nil {
			t.Fatal(r.Err)
		}
		c, _, _ := s.Counts()
		left = append(left, c-1)
	}
	// 5 clients (5,000 mappings) is the first that reaches 4,096.
	if want := []int{5, 0, 0, 0}; !slices.Equal(left, want) {
		t.Fatalf("idle clients left after each write: %v, want %v", left, want)
	}
	if got := s.Clients(); !slices.Equal(got, []string{"active"}) {
		t.Fatalf("clients %v", got)
	}

	old := build()
	if r := write(old, 3, 0, "active", 1); r.Err != nil {
		t.Fatal(r.Err)
	}
	if c, _, _ := old.Counts(); c != 1 {
		t.Fatalf("a version 3 entry left %d clients, want every idle one forgotten", c)
	}

	full := build()
	if r := write(full, 4, clients, "new", 1); r.Err != nil {
		t.Fatalf("a new client at the bound with every other client idle: %v", r.Err)
	}
	if c, _, _ := full.Counts(); c != 1 {
		t.Fatalf("%d clients after a write at the client bound, want every idle one forgotten", c)
	}
}

// BenchmarkForgetBatch is the write that finds a batch of 1M mappings
// (10,000 clients) idle: before the bound (version 3) it forgets them all,
// after (version 4) ForgetPerWrite's worth.
func BenchmarkForgetBatch(b *testing.B) {
	for _, version := range []int{3, 4} {
		b.Run(fmt.Sprintf("v%d", version), func(b *testing.B) {
			const life = time.Minute
			later := t0.Add(life + ReuseHold + time.Second)
			for b.Loop() {
				b.StopTimer()
				s := newTestState(b, "10.0.0.0/16", life)
				for c := range 10_000 {
					for d := range 100 {
						s.Allocate(fmt.Sprintf("idle-%d", c), fmt.Sprintf("d%d.example", d), t0)
					}
				}
				b.StartTimer()
				s.ApplyEntry(Entry{Version: version, Ops: []Op{{Kind: OpAllocate, Time: later, Client: "active", Domain: "x.example", ID: RequestID{Origin: 1, Seq: 1}}}})
			}
		})
	}
}
