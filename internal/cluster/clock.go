package cluster

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Time in the log (docs/design.md#clocks). The leader stamps every entry
// with one time (pool.Entry.Time), never below the entry before, and every
// op in it is applied at that time, so idle clients are forgotten when the
// leader's stamps say so, whichever server took the write. The stamp is
// not the leader's clock alone but the cluster's: each server reads the
// others' clocks every second and takes the median of its own and theirs,
// so a minority of clocks off by any amount, the leader's included, moves
// it by nothing. Followers answer from local state (S7) by the same
// median, so they and the leader agree on how old a mapping is.

// DefaultMaxClients bounds the clients a cluster holds when Config does not
// say: at about 0.9 KB each, a million take under a gigabyte.
const DefaultMaxClients = 1_000_000

const (
	rpcTime = "/internal/v1/time"
	// clockPoll is how often a server reads each peer's clock, and
	// clockSampleTTL how long a reading counts (longer on slow networks,
	// see sampleTTL): a peer that stopped answering stops voting after a
	// few polls.
	clockPoll      = time.Second
	clockSampleTTL = 5 * time.Second
)

// sampleTimeout bounds one reading. A reading is the peer's clock at the
// middle of the round trip, so it is off by at most half of it; a round
// trip near a Raft timeout (raised for slow networks) still leaves that
// well under Q/2, and dropping such readings would leave a leader on a
// slow network unable to stamp.
func (n *Node) sampleTimeout() time.Duration { return max(clockPoll, 2*n.cfg.RaftTimeout) }

func (n *Node) sampleTTL() time.Duration { return max(clockSampleTTL, 3*n.sampleTimeout()) }

// clockState is a server's view of the cluster's time, and the leader's
// last stamp.
type clockState struct {
	// offset is the median offset of the clocks this server knows (its
	// own, 0, and its peers'), in ns, added to its own clock by Now.
	offset atomic.Int64
	// known is set while the clocks read in the last clockSampleTTL are a
	// majority of the voters, this server's own included: only then can a
	// minority of wrong clocks not decide the median.
	known atomic.Bool

	mu    sync.Mutex
	peers map[raft.ServerID]clockSample
	// kick asks for a round of readings now.
	kickOnce sync.Once
	kick     chan struct{}

	// stampMu orders stamping with appending, so entries reach the log
	// in the order of their times; last is the latest stamp.
	stampMu sync.Mutex
	last    int64
}

type clockSample struct {
	offset time.Duration
	at     time.Time
}

// wallNow is this server's own clock. Config.ClockOffset, set only by
// tests, skews it as a badly set clock would be.
func (n *Node) wallNow() time.Time {
	return time.Now().Add(n.cfg.ClockOffset)
}

// Now is the cluster's time as this server knows it: the median of its own
// clock and the clocks of its peers read in the last few seconds (the lower
// middle one when they are even in number). The leader stamps entries with
// it, and the service judges with it how old a mapping is.
func (n *Node) Now() time.Time {
	return n.wallNow().Add(time.Duration(n.clock.offset.Load())).Round(0).UTC()
}

// stamp is the time of the next entry this leader appends: the cluster's
// time, but never below an entry already in the log. The caller holds
// clock.stampMu; waitReady has made sure every entry of earlier terms is
// applied, so the FSM's latest time covers them.
func (n *Node) stamp() time.Time {
	t := max(n.Now().UnixNano(), n.clock.last, n.fsm.maxTime.Load())
	n.clock.last = t
	return time.Unix(0, t).UTC()
}

// waitReady returns once this leader has applied every entry of earlier
// terms (watchLeadership's barrier), the point from which its stamps can
// be kept above theirs, and knows the clocks of a majority of the voters:
// a server that has just started and leads before it read its peers must
// not stamp entries with its own clock alone.
func (n *Node) waitReady(ctx context.Context) error {
	for n.readyTerm.Load() != n.raft.CurrentTerm() || !n.clock.known.Load() {
		if n.raft.State() != raft.Leader {
			return errRetry{errNotLeader}
		}
		if !n.clock.known.Load() {
			select {
			case n.clock.kickCh() <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return errRetry{errNotLeader}
		case <-n.stop:
			return errShutdown
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// handleTime answers a peer's reading of this server's own clock (not its
// median: each server's vote is its own clock).
func (n *Node) handleTime(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]int64{"now": n.wallNow().UnixNano()})
}

func (c *clockState) kickCh() chan struct{} {
	c.kickOnce.Do(func() { c.kick = make(chan struct{}, 1) })
	return c.kick
}

// sampleClocks reads every peer's clock at start and then each clockPoll
// (or when waitReady asks), and updates the median offset.
func (n *Node) sampleClocks() {
	t := time.NewTicker(clockPoll)
	defer t.Stop()
	for {
		n.clockRound()
		select {
		case <-n.stop:
			return
		case <-t.C:
		case <-n.clock.kickCh():
		}
	}
}

func (n *Node) clockRound() {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters := map[raft.ServerID]bool{}
	var wg sync.WaitGroup
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters[s.ID] = true
		}
		if s.ID == raft.ServerID(n.cfg.ID) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.sampleClock(s.ID, string(s.Address))
		}()
	}
	wg.Wait()
	n.updateClockOffset(time.Now(), voters)
}

// sampleClock reads one peer's clock, taking its answer as the clock at
// the middle of the round trip.
func (n *Node) sampleClock(id raft.ServerID, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), n.sampleTimeout())
	defer cancel()
	var out struct {
		Now int64 `json:"now"`
	}
	start := time.Now()
	if err := n.rpc.call(ctx, addr, rpcTime, []byte{}, &out); err != nil || out.Now == 0 {
		return
	}
	rtt := time.Since(start)
	mid := start.Add(n.cfg.ClockOffset + rtt/2).UnixNano()
	n.clock.mu.Lock()
	defer n.clock.mu.Unlock()
	if n.clock.peers == nil {
		n.clock.peers = map[raft.ServerID]clockSample{}
	}
	n.clock.peers[id] = clockSample{offset: time.Duration(out.Now - mid), at: time.Now()}
}

// updateClockOffset takes the median of the latest readings, forgets the
// stale ones and those of servers no longer in the configuration, and
// says whether the clocks read are a majority of the voters.
func (n *Node) updateClockOffset(now time.Time, voters map[raft.ServerID]bool) {
	n.clock.mu.Lock()
	offsets := []time.Duration{0}
	votes := 0
	if voters[raft.ServerID(n.cfg.ID)] {
		votes++
	}
	for id, s := range n.clock.peers {
		if _, member := voters[id]; !member && len(voters) > 0 || now.Sub(s.at) > n.sampleTTL() {
			delete(n.clock.peers, id)
			continue
		}
		offsets = append(offsets, s.offset)
		if voters[id] {
			votes++
		}
	}
	n.clock.mu.Unlock()
	n.clock.offset.Store(int64(medianOffset(offsets)))
	n.clock.known.Store(votes > len(voters)/2)
}

// medianOffset is the middle of the offsets, the lower middle one when
// they are even in number: with two clocks that disagree there is no
// telling which is right, and the earlier time only delays forgetting.
func medianOffset(offsets []time.Duration) time.Duration {
	slices.Sort(offsets)
	return offsets[(len(offsets)-1)/2]
}
