package faults

import (
	"testing"
	"time"
)

// TestStaleFastPathAfterRelease shows a server bug: the S7 fast path of
// IPForDomain (service/service.go, Service.IPForDomain) answers from the
// local state of the server asked, so a server that has not yet applied a
// release — lagging by a few milliseconds, or cut off from the majority —
// hands out the released address again for the released domain, after the
// release was acknowledged, and while the leader has given that address to
// another domain. The client then holds one address for two domains (S1).
func TestStaleFastPathAfterRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters")
	}
	h := New(t, Config{Net: true, Seed: *seedFlag})
	h.Boot()
	l := h.Leader()
	f := h.Others(l)[0]
	const d, e = 1, 2
	a := h.Do(0, l, Input{Kind: Alloc, Client: "x", Domain: d})
	if a.Outcome != OK {
		t.Fatalf("alloc: %+v", a)
	}
	// Wait until the follower holds the mapping.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if o := h.Do(0, f, Input{Kind: Lookup, Client: "x", Addr: a.Addr}); o.Outcome == OK && o.Domain == d {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("follower never saw the mapping")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.Net.Drop(l.IP, f.IP)
	h.Net.Drop(f.IP, l.IP)
	for _, o := range h.Others(l) {
		if o != f {
			h.Net.Drop(o.IP, f.IP)
			h.Net.Drop(f.IP, o.IP)
		}
	}
	if r := h.Do(0, l, Input{Kind: Release, Client: "x", Domain: d}); r.Outcome != OK || !r.Released {
		t.Fatalf("release: %+v", r)
	}
	b := h.Do(0, l, Input{Kind: Alloc, Client: "x", Domain: e})
	if b.Outcome != OK || b.Addr != a.Addr {
		t.Fatalf("alloc of another domain after the release: %+v (want the freed %v)", b, PoolAddr(a.Addr))
	}
	// The release and the new allocation are acknowledged. Asking the
	// cut-off follower for d must not answer the address now held by e: it
	// should fail (no quorum) or, once healed, allocate a new address.
	c := h.Do(0, f, Input{Kind: Alloc, Client: "x", Domain: d})
	if c.Outcome == OK && c.Addr == b.Addr {
		t.Errorf("BUG (S1/S7): after release(%s) and alloc(%s) -> %v were acknowledged, %s answered alloc(%s) -> %v from its stale local state: %v is acknowledged for two domains",
			DomainName(d), DomainName(e), PoolAddr(b.Addr), f.ID, DomainName(d), PoolAddr(c.Addr), PoolAddr(c.Addr))
	}
	h.Net.Heal()
}
