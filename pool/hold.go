package pool

import (
	"net/netip"
	"slices"
	"time"
)

// ReuseHold (Q) is how long an address stays away from its client after it
// stopped meaning a domain, before it may mean another domain of the same
// client. It is what lets a server answer from local state that may be up to
// B old (cluster's stale bound, at most Q/2): a mapping released or expired
// less than B ago can still be answered, but its address cannot yet belong
// to another domain of the same client, so no answer pairs an address with
// the wrong domain (docs/design.md, "Consistency").
//
// For a release the hold is lifted by an OpUnhold that the leader proposes
// once its own clock says Q has passed since it saw the release applied, so
// the guarantee needs no agreement between server clocks. For an expiry the
// state machine adds Q to the lifetime itself (an expired mapping's address
// is reused, and an idle client forgotten, only Q after the lifetime ran
// out), which tolerates server clocks up to Q/2 apart.
//
// It is a constant, not a setting, because every server must apply the log
// alike. 5 s is ten default Raft timeouts.
const ReuseHold = 5 * time.Second

// expiredFor reports whether a mapping last used at lastUsed may give its
// address to another domain at now: idle for the lifetime plus ReuseHold.
func (s *State) expiredFor(lastUsed, now int64) bool {
	return now-lastUsed > int64(s.cfg.Lifetime)+int64(ReuseHold)
}

// hold keeps addr away from c until unhold. c.held stays sorted.
func (s *State) hold(c *client, addr uint32) {
	i, found := slices.BinarySearch(c.held, addr)
	if found {
		return
	}
	c.held = slices.Insert(c.held, i, addr)
	if len(c.held) == 1 {
		s.holding[c] = struct{}{}
	}
	s.heldCount++
}

func (c *client) isHeld(addr uint32) bool {
	_, found := slices.BinarySearch(c.held, addr)
	return found
}

// unhold gives a held address back to its client's free addresses.
func (s *State) unhold(clientID string, addr uint32, now int64) bool {
	defer s.forgetIdleClients(now)
	c := s.clients[clientID]
	if c == nil {
		return false
	}
	i, found := slices.BinarySearch(c.held, addr)
	if !found {
		return false
	}
	s.dropHeld(c, i)
	if idx, ok := s.set.indexOf(addr); ok && idx < c.next {
		c.free = heapPush(c.free, idx, indexOrder{})
	}
	s.dropIfEmpty(c)
	return true
}

func (s *State) dropHeld(c *client, i int) {
	c.held = slices.Delete(c.held, i, i+1)
	s.heldCount--
	if len(c.held) == 0 {
		c.held = nil
		delete(s.holding, c)
	}
}

// clearHolds drops every hold of c: its addresses are outside the pool, or
// it is being forgotten (idle for a lifetime plus ReuseHold, so every hold
// it had is over).
func (s *State) clearHolds(c *client, keep func(addr uint32) bool) {
	for i := len(c.held) - 1; i >= 0; i-- {
		if keep == nil || !keep(c.held[i]) {
			s.dropHeld(c, i)
		}
	}
}

// LiftHolds gives every held address of the client back at once and
// returns how many. It is for a pool in one process (localpool), where no
// answer can be stale and so nothing needs holding; a replicated state
// lifts holds only through OpUnhold.
func (s *State) LiftHolds(clientID string, now time.Time) int {
	c := s.clients[clientID]
	if c == nil {
		return 0
	}
	held := slices.Clone(c.held)
	for _, a := range held {
		s.unhold(clientID, a, now.UnixNano())
	}
	return len(held)
}

// Hold is an address held away from its client (see ReuseHold).
type Hold struct {
	Client string
	Addr   netip.Addr
}

// Holds calls fn for every held address, in no particular order, until fn
// returns false.
func (s *State) Holds(fn func(Hold) bool) {
	for c := range s.holding {
		for _, a := range c.held {
			if !fn(Hold{Client: c.id, Addr: u32ToAddr(a)}) {
				return
			}
		}
	}
}

// HeldCount is the number of held addresses.
func (s *State) HeldCount() int { return s.heldCount }
