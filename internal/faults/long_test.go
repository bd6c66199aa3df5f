//go:build faultslong

package faults

import (
	"flag"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/testcluster"
)

var schedules = flag.Int("faults.schedules", 200, "randomized fault schedules to run")

// TestFaultsLong runs randomized fault schedules: each boots a fresh cluster
// of 3 or 5 servers and injects 2 to 5 faults drawn at random, then heals
// and checks. Run it with:
//
//	go test -tags faultslong -run TestFaultsLong -timeout 0 ./internal/faults/ -faults.schedules=200 [-faults.seed=N]
func TestFaultsLong(t *testing.T) {
	master := *seedFlag
	if master == 0 {
		master = rand.Uint64()
	}
	t.Logf("master seed %d", master)
	rng := rand.New(rand.NewPCG(master, 1))
	var total Totals
	for i := range *schedules {
		seed := rng.Uint64()
		servers := 3
		if rng.IntN(3) == 0 {
			servers = 5
		}
		sc := scenario{name: "random", cfg: Config{Servers: servers, Net: true, Args: snapArgs}}
		if rng.IntN(4) == 0 {
			sc.before = func(h *Harness) { h.Delay(time.Duration(rng.IntN(20))*time.Millisecond, 10*time.Millisecond) }
		}
		n := 2 + rng.IntN(4)
		sc.run = func(h *Harness) {
			for range n {
				randomFault(h)
				h.Hold(time.Duration(200+h.Rng.IntN(1500)) * time.Millisecond)
			}
		}
		t.Run("", func(t *testing.T) {
			t.Logf("schedule %d: seed %d", i, seed)
			total.Add(runScenario(t, sc, seed))
		})
	}
	t.Log(total.Summary("schedules"))
}

// randomFault injects one fault chosen at random, and undoes it, except
// kills, which the next heal undoes.
func randomFault(h *Harness) {
	r := h.Rng
	pick := func() *testcluster.Server {
		if r.IntN(2) == 0 {
			return h.Leader()
		}
		return h.C.Servers[r.IntN(len(h.C.Servers))]
	}
	d := time.Duration(500+r.IntN(3000)) * time.Millisecond
	switch r.IntN(10) {
	case 0:
		if s := pick(); s.Running() && len(h.C.Running()) > len(h.C.Servers)/2+1 {
			h.Kill(s)
		}
	case 1:
		for _, s := range h.C.Servers {
			if !s.Running() && h.broken[s] == "" {
				h.Restart(s)
			}
		}
	case 2:
		h.Pause(pick(), d)
	case 3:
		h.CrashAll(time.Duration(r.IntN(1000)) * time.Millisecond)
		h.RequireAllServing(30 * time.Second)
		h.C.WaitReady(30 * time.Second)
	case 4:
		h.Isolate(pick(), d)
	case 5:
		s := h.C.Servers
		perm := r.Perm(len(s))
		k := len(s) / 2
		var a, b []*testcluster.Server
		for i, p := range perm {
			if i < k {
				a = append(a, s[p])
			} else {
				b = append(b, s[p])
			}
		}
		h.Split(a, b, d)
	case 6:
		x := pick()
		y := h.Others(x)[r.IntN(len(h.C.Servers)-1)]
		h.OneWay(x, y, d)
	case 7:
		h.Lossy(0.05+0.3*r.Float64(), d)
	case 8:
		if len(h.C.Running()) == len(h.C.Servers) {
			corruptScenario(h)
		}
	case 9:
		if len(h.C.Running()) == len(h.C.Servers) && truncateLeaderTail(h, 1) {
			h.CrashAll(time.Duration(r.IntN(1000)) * time.Millisecond)
			h.RequireAllServing(30 * time.Second)
			h.C.WaitReady(30 * time.Second)
		}
	}
}
