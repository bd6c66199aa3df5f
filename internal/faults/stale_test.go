package faults

import (
	"fmt"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

// TestCutOffServerNeverPairsAnAddressWithAnotherDomain checks the rule of
// bounded staleness with a follower F cut off from the cluster: no answer
// pairs an address with a domain while that address belongs to another
// domain of the same client. Client x gets address a for domain d through
// the leader, F learns it, F is cut off, and the leader releases d. Then:
//
//  1. the leader does not give a to another domain of x before ReuseHold
//     has passed since the release (the hold);
//  2. once a belongs to another domain e, F, still cut off, does not answer
//     a lookup of a with d (it may fail: no quorum);
//  3. nor an allocation of d with a.
//
// A server that answers lookups from its local state with no bound on its
// staleness fails 2; a release that frees the address at once fails 1.
func TestCutOffServerNeverPairsAnAddressWithAnotherDomain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters")
	}
	h := New(t, Config{Net: true, Seed: *seedFlag})
	h.Boot()
	l := h.Leader()
	f := h.Others(l)[0]
	const x, d = "x", 0
	first := h.Do(0, l, Input{Kind: Alloc, Client: x, Domain: d})
	if first.Outcome != OK {
		t.Fatalf("alloc(x %s) through the leader %s: %+v", DomainName(d), l.ID, first)
	}
	a := first.Addr
	poll.Until(t, 5*time.Second, fmt.Sprintf("%s never answered lookup(x %v) -> %s", f.ID, PoolAddr(a), DomainName(d)), func() bool {
		o := h.Do(1, f, Input{Kind: Lookup, Client: x, Addr: a})
		return o.Outcome == OK && o.Domain == d
	})
	h.Logf("%s maps x %v -> %s; cutting it off", f.ID, PoolAddr(a), DomainName(d))
	cutAt := time.Now()
	h.Net.Partition([]*testcluster.Server{f}, h.Others(f))
	defer h.Net.Heal()

	releaseCall := time.Now()
	if r := h.Do(0, l, Input{Kind: Release, Client: x, Domain: d}); r.Outcome != OK || !r.Released {
		t.Fatalf("release(x %s) through the leader: %+v", DomainName(d), r)
	}

	// 1. The hold: a goes to no domain of x until ReuseHold after the
	// release. Allocate new domains through the leader until one gets a.
	owner := -1
	// One allocation every 500ms: each that does not get a back uses up a domain.
	pace := time.NewTicker(500 * time.Millisecond)
	defer pace.Stop()
	for e, deadline := d+1, time.Now().Add(15*time.Second); owner < 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no domain of x got the released %v within 15s of the release", PoolAddr(a))
		}
		o := h.Do(0, l, Input{Kind: Alloc, Client: x, Domain: e})
		given := time.Since(releaseCall)
		switch {
		case o.Outcome == OK && o.Addr == a:
			owner = e
			if given < ReuseHold {
				t.Errorf("(1) hold: alloc(x %s) -> %v, the address release(x %s) freed %v before: it should stay held for %v",
					DomainName(e), PoolAddr(a), DomainName(d), given.Round(time.Millisecond), ReuseHold)
			}
			h.Logf("alloc(x %s) -> %v, %v after the release", DomainName(e), PoolAddr(a), given.Round(time.Millisecond))
		case o.Outcome == OK:
			e++
			if e >= NumDomains {
				t.Fatalf("ran out of domains before x got %v back", PoolAddr(a))
			}
		case o.Outcome == Exhausted: // every free address is held: try again
		default:
			t.Logf("alloc(x %s) through the leader: %+v; retrying", DomainName(e), o)
		}
		if owner < 0 {
			<-pace.C
		}
	}

	// 2. F, cut off since before the release, must not name d for a now.
	for range 2 {
		o := h.Do(1, f, Input{Kind: Lookup, Client: x, Addr: a})
		if o.Outcome == OK && o.Domain != owner {
			t.Errorf("(2) cut-off %s answered lookup(x %v) -> %s, while %v belongs to %s (released from %s %v ago, cut off %v ago)",
				f.ID, PoolAddr(a), DomainName(o.Domain), PoolAddr(a), DomainName(owner), DomainName(d),
				time.Since(releaseCall).Round(time.Millisecond), time.Since(cutAt).Round(time.Millisecond))
			break
		}
		h.Logf("lookup(x %v) on cut-off %s: %s", PoolAddr(a), f.ID, describe(Input{Kind: Lookup, Client: x, Addr: a}, o))
	}
	// 3. Nor answer a for d.
	if o := h.Do(1, f, Input{Kind: Alloc, Client: x, Domain: d}); o.Outcome == OK && o.Addr == a {
		t.Errorf("(3) cut-off %s answered alloc(x %s) -> %v, while %v belongs to %s",
			f.ID, DomainName(d), PoolAddr(a), PoolAddr(a), DomainName(owner))
	} else {
		h.Logf("alloc(x %s) on cut-off %s: %s", DomainName(d), f.ID, describe(Input{Kind: Alloc, Client: x, Domain: d}, o))
	}

	// And the whole history keeps the model.
	if res, info := porcupine.CheckOperationsVerbose(Model, h.History(), time.Minute); res != porcupine.Ok {
		h.explain(info)
		t.Errorf("the test's history is %v under the model", res)
	}
}
