package faults

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

// Healing and the checks: linearizability against the model, no address
// acknowledged for two domains, durability, byte-identical state.

// Heal ends every fault: network rules go, paused servers resume, stopped
// servers (except those that refused their damaged files) start again. It
// then measures how long until a write succeeds, through any server.
func (h *Harness) Heal() time.Duration {
	h.T.Helper()
	healed := time.Now()
	if h.Net != nil {
		h.Net.Heal()
	}
	for _, s := range h.C.Servers {
		s.Resume()
		if !s.Running() && h.broken[s] == "" {
			s.Start()
		}
	}
	h.Logf("healed")
	probe := 0
	var status int
	var body []byte
	var err error
	if !poll.Wait(30*time.Second, func() bool {
		servers := h.C.Running()
		s := servers[probe%len(servers)]
		status, body, err = h.request(s, http.MethodPost, fmt.Sprintf("/v1/clients/probe/domains/p%d.example", probe))
		probe++
		return err == nil && status == 200
	}) {
		h.T.Fatalf("no write succeeded within 30s of healing (last: %d %s %v)", status, body, err)
	}
	took := time.Since(healed)
	h.Unavail = append(h.Unavail, took)
	h.Logf("writes available %v after healing", took.Round(time.Millisecond))
	return took
}

// WaitConverged waits until every running, unpaused server has applied the
// same index, twice in a row.
func (h *Harness) WaitConverged(timeout time.Duration) {
	h.T.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	same := 0
	for time.Now().Before(deadline) {
		var idx []string
		ok := true
		var first uint64
		for i, s := range h.C.Running() {
			st, err := s.Status()
			if err != nil {
				ok = false
				break
			}
			if i == 0 {
				first = st.Applied
			} else if st.Applied != first {
				ok = false
			}
			idx = append(idx, fmt.Sprintf("%s:%d", s.ID, st.Applied))
		}
		key := strings.Join(idx, ",")
		if ok && key == last {
			same++
			if same >= 2 {
				return
			}
		} else {
			same = 0
		}
		last = key
		time.Sleep(100 * time.Millisecond)
	}
	h.T.Fatalf("servers did not converge on one applied index within %v: %s", timeout, last)
}

// WaitNoHolds waits until no running server reports an address under a
// reuse hold: the leader lifts each hold with a log entry ReuseHold after the
// release, so the state keeps changing that long after the last release.
func (h *Harness) WaitNoHolds(timeout time.Duration) {
	h.T.Helper()
	held := 0
	if !poll.Wait(timeout, func() bool {
		held = 0
		for _, s := range h.C.Running() {
			st, err := s.Status()
			if err != nil {
				held = -1
				break
			}
			held += st.HeldAddresses
		}
		return held == 0
	}) {
		h.T.Fatalf("addresses still held %v after the last release (%d)", timeout, held)
	}
}

// ConvergedDigests waits until the running servers have applied the same
// index and returns their digests (Digests) read at that one index: a
// server whose applied index moved while it was read (the leader lifting a
// reuse hold, with no workers running) is read again.
func (h *Harness) ConvergedDigests() map[string]string {
	h.T.Helper()
	for try := 0; ; try++ {
		h.WaitConverged(30 * time.Second)
		out, same := map[string]string{}, true
		var at uint64
		for i, s := range h.C.Running() {
			before, err1 := s.Status()
			d := h.Digests(s)
			after, err2 := s.Status()
			if err1 != nil || err2 != nil || before.Applied != after.Applied || (i > 0 && after.Applied != at) {
				same = false
				break
			}
			at = after.Applied
			out[s.ID] = d[s.ID]
		}
		if same {
			return out
		}
		if try == 20 {
			h.T.Fatalf("could not read every server's state at one applied index in %d tries", try+1)
		}
	}
}

// Digests returns the SHA-256 of GET /v1/snapshot of each of servers, by
// default every running server. Call after WaitConverged with no writes
// running: equal states give byte-identical snapshots (S9).
func (h *Harness) Digests(servers ...*testcluster.Server) map[string]string {
	h.T.Helper()
	if len(servers) == 0 {
		servers = h.C.Running()
	}
	out := map[string]string{}
	for _, s := range servers {
		status, body, err := h.request(s, http.MethodGet, "/v1/snapshot")
		if err != nil || status != 200 {
			h.T.Fatalf("%s: snapshot: %d %v", s.ID, status, err)
		}
		sum := sha256.Sum256(body)
		out[s.ID] = hex.EncodeToString(sum[:8])
	}
	return out
}

// Result sums up a checked scenario.
type Result struct {
	Ops        int
	Unknown    int
	Violations []string
	Unavail    time.Duration // longest write unavailability after a heal
	Digest     string
}

// Totals sums the results of several runs for the suite's summary line.
type Totals struct {
	Result
	Runs int
}

func (t *Totals) Add(r Result) {
	t.Ops += r.Ops
	t.Unknown += r.Unknown
	t.Violations = append(t.Violations, r.Violations...)
	t.Unavail = max(t.Unavail, r.Unavail)
	t.Runs++
}

// Summary is the line the closing notes quote; what names the runs.
func (t *Totals) Summary(what string) string {
	return fmt.Sprintf("SUMMARY: %d %s, %d operations checked (%d with unknown outcome), %d violations, longest write unavailability after healing %v",
		t.Runs, what, t.Ops, t.Unknown, len(t.Violations), t.Unavail.Round(time.Millisecond))
}

// Finish heals, measures write availability, stops the workers, reads every
// client's mappings linearizably, and runs every check. Failures are
// reported with t.Error and returned.
func (h *Harness) Finish(name string) Result {
	h.T.Helper()
	h.Heal()
	h.C.WaitReady(30 * time.Second)
	time.Sleep(time.Second) // work on the healed cluster
	h.StopWorkers()

	// The final state, read linearizably through each server in turn.
	for i := range h.clients {
		servers := h.C.Running()
		in := Input{Kind: List, Client: h.clientName(i)}
		for try := 0; ; try++ {
			if out := h.Do(-1, servers[(i+try)%len(servers)], in); out.Outcome != Unknown {
				break
			}
			if try > 50 {
				h.fail("could not read %s's mappings after healing", in.Client)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	digests := h.ConvergedDigests()

	res := Result{}
	history := h.History()
	for _, op := range history {
		if op.ClientId >= 0 {
			res.Ops++
			if op.Output.(Output).Outcome == Unknown {
				res.Unknown++
			}
		}
	}
	h.mu.Lock()
	res.Violations = append(res.Violations, h.errs...)
	h.mu.Unlock()

	// Byte-identical state.
	var ref string
	for id, d := range digests {
		if ref == "" {
			ref = d
		}
		if d != ref {
			res.Violations = append(res.Violations, fmt.Sprintf("state digests differ after healing: %v", digests))
			break
		}
		_ = id
	}
	res.Digest = ref

	res.Violations = append(res.Violations, checkDoubleAck(history)...)
	res.Violations = append(res.Violations, checkDurable(history)...)

	// Linearizability.
	check, info := porcupine.CheckOperationsVerbose(Model, history, 2*time.Minute)
	switch check {
	case porcupine.Illegal:
		if dir := os.Getenv("FAULTS_DUMP"); dir != "" {
			for i := range h.clients {
				os.WriteFile(filepath.Join(dir, sanitize(name)+"-"+h.clientName(i)+".txt"), []byte(dumpClient(history, h.clientName(i))), 0o644)
			}
		}
		h.explain(info)
		file := filepath.Join(os.TempDir(), "ippool-faults-"+sanitize(name)+".html")
		if err := porcupine.VisualizePath(Model, info, file); err == nil {
			res.Violations = append(res.Violations, "history is not linearizable; visualization in "+file)
		} else {
			res.Violations = append(res.Violations, "history is not linearizable")
		}
	case porcupine.Unknown:
		h.Logf("linearizability check timed out (inconclusive)")
	}
	for _, u := range h.Unavail {
		res.Unavail = max(res.Unavail, u)
	}
	h.Logf("%s: %d ops (%d unknown outcome), linearizable=%v, digest %s on %d servers, write unavailability after healing %v, faults: %s",
		name, res.Ops, res.Unknown, check, ref, len(digests), res.Unavail.Round(time.Millisecond), strings.Join(h.Steps, "; "))
	for _, v := range res.Violations {
		h.T.Errorf("VIOLATION: %s", v)
	}
	return res
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// ackHold is the interval in which an acknowledged allocation certainly
// holds: from its return until the call of the first release of the same
// domain that may have come after it.
type ackHold struct {
	client       string
	domain, addr int
	from, to     int64
	server       any
}

func holds(history []porcupine.Operation) []ackHold {
	var out []ackHold
	for _, a := range history {
		in, o := a.Input.(Input), a.Output.(Output)
		if in.Kind != Alloc || o.Outcome != OK || o.Addr < 0 {
			// An answer that named no pool address already failed the
			// run (Harness.fail); it holds nothing.
			continue
		}
		hold := ackHold{client: in.Client, domain: in.Domain, addr: o.Addr, from: a.Return, to: infinity, server: a.Metadata}
		stale := false
		for _, r := range history {
			ri, ro := r.Input.(Input), r.Output.(Output)
			if ri.Kind != Release || ri.Client != in.Client || ri.Domain != in.Domain {
				continue
			}
			if r.Return >= a.Call {
				hold.to = min(hold.to, r.Call)
			} else if ro.Released && a.Call-r.Return < int64(ReuseHold) {
				// May be a stale answer of d's address from before the
				// release (stale by at most B < Q): not an
				// acknowledgment to hold.
				stale = true
			}
		}
		if stale {
			continue
		}
		if hold.to > hold.from {
			out = append(out, hold)
		}
	}
	return out
}

// checkDoubleAck finds a client address acknowledged for two domains at
// times when neither could have been released.
func checkDoubleAck(history []porcupine.Operation) []string {
	hs := holds(history)
	var out []string
	for i, a := range hs {
		for _, b := range hs[i+1:] {
			if a.client == b.client && a.addr == b.addr && a.domain != b.domain && a.from < b.to && b.from < a.to {
				out = append(out, fmt.Sprintf("client %s address %v acknowledged for %s (by %v, held %s) and %s (by %v, held %s) at once",
					a.client, PoolAddr(a.addr), DomainName(a.domain), a.server, span(a.from, a.to), DomainName(b.domain), b.server, span(b.from, b.to)))
				if len(out) > 5 {
					return out
				}
			}
		}
	}
	return out
}

// checkDurable checks that every acknowledged allocation that no release
// could have undone is in the final state read after healing.
func checkDurable(history []porcupine.Operation) []string {
	final := map[string]Output{}
	for _, op := range history {
		if in := op.Input.(Input); in.Kind == List {
			final[in.Client] = op.Output.(Output)
		}
	}
	var out []string
	for _, hd := range holds(history) {
		if hd.to != infinity {
			continue
		}
		f, ok := final[hd.client]
		if !ok {
			continue
		}
		if int(f.Mappings[hd.addr]) != hd.domain {
			out = append(out, fmt.Sprintf("acknowledged allocation %s %s -> %v (by %v) is missing after healing (final: %s)",
				hd.client, DomainName(hd.domain), PoolAddr(hd.addr), hd.server, describe(Input{Kind: List, Client: hd.client}, f)))
		}
	}
	return out
}

func span(from, to int64) string {
	f := func(t int64) string {
		if t == infinity {
			return "end"
		}
		return fmt.Sprintf("%.3fs", float64(t)/1e9)
	}
	return f(from) + "-" + f(to)
}

// dumpClient writes the operations of one client, in call order, for
// diagnosis.
func dumpClient(history []porcupine.Operation, client string) string {
	var ops []porcupine.Operation
	for _, op := range history {
		if op.Input.(Input).Client == client {
			ops = append(ops, op)
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	var b strings.Builder
	for _, op := range ops {
		fmt.Fprintf(&b, "%s %v %s\n", span(op.Call, op.Return), op.Metadata, describe(op.Input.(Input), op.Output.(Output)))
	}
	return b.String()
}

// explain logs, for each partition that failed, the end of the longest
// linearization found and the operations that could not follow it.
func (h *Harness) explain(info porcupine.LinearizationInfo) {
	parts := info.PartialLinearizationsOperations()
	for _, lins := range parts {
		var best []porcupine.Operation
		for _, l := range lins {
			if len(l) > len(best) {
				best = l
			}
		}
		if len(best) == 0 {
			continue
		}
		client := best[0].Input.(Input).Client
		var full []porcupine.Operation
		for _, op := range h.History() {
			if op.Input.(Input).Client == client {
				full = append(full, op)
			}
		}
		if len(best) == len(full) {
			continue
		}
		var b strings.Builder
		var last int64
		for _, op := range best[max(0, len(best)-8):] {
			fmt.Fprintf(&b, "  ok   %s %v %s\n", span(op.Call, op.Return), op.Metadata, describe(op.Input.(Input), op.Output.(Output)))
		}
		for _, op := range best {
			last = max(last, op.Call)
		}
		done := map[int64]bool{}
		for _, op := range best {
			done[op.Call*7+op.Return] = true
		}
		var pending []porcupine.Operation
		for _, op := range full {
			if !done[op.Call*7+op.Return] && op.Return != infinity {
				pending = append(pending, op)
			}
		}
		sort.Slice(pending, func(i, j int) bool { return pending[i].Return < pending[j].Return })
		for _, op := range pending[:min(4, len(pending))] {
			fmt.Fprintf(&b, "  STUCK %s %v %s\n", span(op.Call, op.Return), op.Metadata, describe(op.Input.(Input), op.Output.(Output)))
		}
		h.Logf("client %s: %d of %d operations linearized; the longest linearization ends:\n%s", client, len(best), len(full), b.String())
	}
}
