package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/testcluster"
)

// TestSIGTERMHandsLeadershipOver stops the leader gracefully: it must hand
// leadership to a follower before exiting, exit 0, and writes must go on.
func TestSIGTERMHandsLeadershipOver(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{FirstIP: 31})
	leader := c.Leader()
	leader.Stop(15 * time.Second)
	if code := leader.ExitCode(); code != 0 {
		t.Fatalf("leader exited %d after SIGTERM", code)
	}
	if !strings.Contains(leader.Log(), "handed leadership over before stopping") {
		t.Fatal("the leader stopped without transferring leadership")
	}
	_, took := allocRetry(t, c, "gw", "after-term.example", 10*time.Second)
	t.Logf("first write after the leader's SIGTERM succeeded after %v", took)
}

// BenchmarkFailover kills the leader with SIGKILL ten times and reports the
// median and worst time to the first successful write through a survivor.
//
//	go test -run XXX -bench Failover -benchtime 1x ./internal/e2e/
//
// IPPOOL_BENCH_RAFT_TIMEOUT=1s measures another --raft-timeout.
func BenchmarkFailover(b *testing.B) {
	var args []string
	if t := os.Getenv("IPPOOL_BENCH_RAFT_TIMEOUT"); t != "" {
		args = []string{"--raft-timeout", t}
	}
	for i := 0; i < b.N; i++ {
		c := testcluster.Start(b, 3, testcluster.Options{FirstIP: 41, Args: args})
		var times []time.Duration
		for round := range 10 {
			leader := c.WaitReady(30 * time.Second)
			leader.Kill()
			start := time.Now()
			// A write tried every 5ms: the resolution of the figure.
			retry := time.NewTicker(5 * time.Millisecond)
			for {
				ok := false
				for _, s := range c.Running() {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_, err := alloc(ctx, s, "bench", fmt.Sprintf("r%d.example", round))
					cancel()
					if err == nil {
						ok = true
						break
					}
				}
				if ok {
					break
				}
				if time.Since(start) > 30*time.Second {
					b.Fatal("no write succeeded 30s after the kill")
				}
				<-retry.C
			}
			retry.Stop()
			times = append(times, time.Since(start))
			leader.Start()
		}
		slices.Sort(times)
		b.ReportMetric(times[len(times)/2].Seconds(), "median-s")
		b.ReportMetric(times[len(times)-1].Seconds(), "max-s")
		b.Logf("failover times: %v", times)
		c.StopAll()
	}
}
