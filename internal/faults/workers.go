package faults

import (
	"math/rand/v2"
	"time"
)

// The workers that drive a scenario with concurrent operations.

// StartWorkers starts the concurrent workers: each picks a server, a client
// and an operation at random (alloc 45%, lookup 35%, release 20%, or as
// Config.ReleasePct says); half the
// allocations for DNSClient go through DNS.
func (h *Harness) StartWorkers() {
	h.stop = make(chan struct{})
	for w := range h.cfg.Workers {
		rng := rand.New(rand.NewPCG(h.cfg.Seed, uint64(w)+1))
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stop:
					return
				default:
				}
				h.gate.RLock()
				servers := h.C.Running()
				if len(servers) == 0 {
					servers = h.C.Servers
				}
				s := servers[rng.IntN(len(servers))]
				in := Input{Client: h.clientName(rng.IntN(len(h.clients)))}
				switch r := rng.IntN(100); {
				case r < 45:
					in.Kind, in.Domain = Alloc, rng.IntN(NumDomains)
				case r < 100-h.cfg.ReleasePct:
					in.Kind, in.Addr = Lookup, rng.IntN(PoolSize)
				default:
					in.Kind, in.Domain = Release, rng.IntN(NumDomains)
				}
				var out Output
				if in.Kind == Alloc && in.Client == DNSClient && rng.IntN(2) == 0 {
					out = h.DoDNS(w, s, in.Domain)
				} else {
					out = h.Do(w, s, in)
				}
				h.gate.RUnlock()
				if out.Outcome == Unknown {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
}

// StopWorkers stops the workers and waits for their last operations.
func (h *Harness) StopWorkers() {
	close(h.stop)
	h.wg.Wait()
}

// Quiesce holds the workers between operations and waits until every running
// server has applied the same index; release with the returned function.
func (h *Harness) Quiesce() func() {
	h.gate.Lock()
	h.WaitConverged(30 * time.Second)
	return h.gate.Unlock
}

// ---- faults ----
