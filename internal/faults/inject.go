package faults

import (
	"fmt"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

// Injecting faults: crashes, pauses, partitions, loss and delay.

// Leader waits up to 10s for a leader every running server agrees on.
func (h *Harness) Leader() *testcluster.Server {
	var leader *testcluster.Server
	if !poll.Wait(10*time.Second, func() bool {
		leader = h.C.Leader()
		return leader != nil && !h.paused[leader]
	}) {
		h.T.Fatalf("no leader after 10s")
	}
	return leader
}

// Others returns the servers other than s.
func (h *Harness) Others(s *testcluster.Server) []*testcluster.Server {
	var out []*testcluster.Server
	for _, x := range h.C.Servers {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// Kill SIGKILLs s.
func (h *Harness) Kill(s *testcluster.Server) {
	h.step("SIGKILL %s", s.ID)
	s.Kill()
}

// Restart starts s again with the same data dir.
func (h *Harness) Restart(s *testcluster.Server) {
	h.step("restart %s", s.ID)
	s.Start()
}

// Hold lets the workers run on for d with the cluster as it stands: how
// long a fault lasts, or the calm between two, as a schedule says. It is a
// step of the schedule, like Pause's d, not a wait for state: those poll
// (WaitConverged, WaitReady, poll.Until).
func (h *Harness) Hold(d time.Duration) { time.Sleep(d) }

// Pause SIGSTOPs s for d, then SIGCONTs it.
func (h *Harness) Pause(s *testcluster.Server, d time.Duration) {
	h.step("SIGSTOP %s for %v", s.ID, d)
	h.paused[s] = true
	s.Pause()
	time.Sleep(d)
	s.Resume()
	delete(h.paused, s)
}

// CrashAll SIGKILLs every server, waits, and restarts them all.
func (h *Harness) CrashAll(down time.Duration) {
	h.step("SIGKILL every server, restart after %v", down)
	for _, s := range h.C.Servers {
		s.Kill()
	}
	time.Sleep(down)
	for _, s := range h.C.Servers {
		if h.broken[s] == "" {
			s.Start()
		}
	}
}

// Isolate cuts s from every other server both ways for d.
func (h *Harness) Isolate(s *testcluster.Server, d time.Duration) {
	h.step("isolate %s for %v", s.ID, d)
	h.Net.Partition([]*testcluster.Server{s}, h.Others(s))
	time.Sleep(d)
	h.Net.Heal()
}

// Split cuts the servers in two groups, both ways, for d.
func (h *Harness) Split(a, b []*testcluster.Server, d time.Duration) {
	h.step("partition %v | %v for %v", ids(a), ids(b), d)
	h.Net.Partition(a, b)
	time.Sleep(d)
	h.Net.Heal()
}

// OneWay drops every packet from one server to another for d.
func (h *Harness) OneWay(from, to *testcluster.Server, d time.Duration) {
	h.step("drop %s -> %s for %v", from.ID, to.ID, d)
	h.Net.Drop(from.IP, to.IP)
	time.Sleep(d)
	h.Net.Heal()
}

// Lossy drops packets on every link between servers with probability p for d.
func (h *Harness) Lossy(p float64, d time.Duration) {
	h.step("%.0f%% loss on every link for %v", p*100, d)
	for _, x := range h.C.Servers {
		for _, y := range h.C.Servers {
			if x != y {
				h.Net.Loss(x.IP, y.IP, p)
			}
		}
	}
	time.Sleep(d)
	h.Net.Heal()
}

// Delay puts every link between servers through a proxy that delays data by
// delay plus up to jitter. Call before Boot: only new connections go
// through it. The proxies are returned to change the delay later.
func (h *Harness) Delay(delay, jitter time.Duration) []*testcluster.DelayProxy {
	h.Steps = append(h.Steps, fmt.Sprintf("delay %v+%v on every link", delay, jitter))
	var out []*testcluster.DelayProxy
	for _, x := range h.C.Servers {
		for _, y := range h.C.Servers {
			if x != y {
				p := testcluster.NewDelayProxy(h.T, y.ClusterAddr, delay, jitter)
				h.Net.Redirect(x.IP, y.ClusterAddr, p.Addr())
				out = append(out, p)
			}
		}
	}
	return out
}

func ids(ss []*testcluster.Server) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

// ---- corrupt files ----
