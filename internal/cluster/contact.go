package cluster

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// lostContact is, on the leader, since when each follower has missed its
// heartbeats: Raft reports the last contact when heartbeats start failing
// and again when they resume, so `cluster status` can say "unreachable
// since" rather than only "unreachable".
type lostContact struct {
	mu    sync.Mutex
	since map[string]time.Time
}

// watchContact follows Raft's heartbeat observations until the node stops.
func (n *Node) watchContact() {
	ch := make(chan raft.Observation, 64)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	for {
		select {
		case <-n.stop:
			return
		case o := <-ch:
			n.contact.note(o.Data)
		}
	}
}

func (c *lostContact) note(data any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch d := data.(type) {
	case raft.FailedHeartbeatObservation:
		if c.since == nil {
			c.since = map[string]time.Time{}
		}
		if _, ok := c.since[string(d.PeerID)]; !ok {
			c.since[string(d.PeerID)] = d.LastContact
		}
	case raft.ResumedHeartbeatObservation:
		delete(c.since, string(d.PeerID))
	case raft.LeaderObservation:
		// Another leader's followers are another story.
		clear(c.since)
	}
}

// lost says since when the leader has had no contact with the server id.
func (c *lostContact) lost(id string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.since[id]
	return t, ok && !t.IsZero()
}
