package cluster

import (
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
)

// A follower that stops answering shows, in the leader's status, since when
// the leader last heard from it, and the time goes once it is back.
func TestStatusSaysSinceWhenAServerIsUnreachable(t *testing.T) {
	tc := startCluster(t, 3, nil)
	defer tc.stopAll()
	leader := tc.waitReady(3)
	var gone int
	for i, n := range tc.nodes {
		if n != leader {
			gone = i
			break
		}
	}
	id := tc.nodes[gone].ID()
	before := time.Now()
	tc.nodes[gone].Shutdown()
	tc.nodes[gone] = nil
	var since string
	poll.Until(t, 30*time.Second, id+" unreachable since a time in the leader's status", func() bool {
		for _, s := range leader.Status(t.Context()).Servers {
			if s.ID == id && !s.Reachable && s.UnreachableSince != "" {
				since = s.UnreachableSince
				return true
			}
		}
		return false
	})
	at, err := time.Parse(time.RFC3339, since)
	if err != nil || at.After(time.Now()) || at.Before(before.Add(-time.Minute)) {
		t.Fatalf("unreachable since %q (%v), stopped at %v", since, err, before)
	}
}
