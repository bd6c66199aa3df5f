package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/wire"
)

// upgradeFrom are the releases a rolling upgrade to this build is tested
// from, by the commits CHANGELOG.md records: the previous release (add
// each new one here when it is made), and 0.2.0, the last release that
// neither says which log entry versions it reads nor stops at one it
// cannot read.
var upgradeFrom = []struct{ version, commit string }{
	{"0.3.0", "330239e5075d366a97db0c29f4e7fd11f3f2605f"},
	{"0.2.0", "50c339316ded5360e48ce2b809917d428c00c275"},
}

// TestChangelogRecordsTheReleases keeps the list above and the changelog's
// record of releases saying the same.
func TestChangelogRecordsTheReleases(t *testing.T) {
	b, err := os.ReadFile("../../CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range upgradeFrom {
		if !strings.Contains(string(b), "## ["+r.version+"]") || !strings.Contains(string(b), r.commit) {
			t.Errorf("CHANGELOG.md does not record release %s at commit %s", r.version, r.commit)
		}
	}
}

// TestRollingUpgrade upgrades a three-server cluster of each release of
// upgradeFrom to this build, one server at a time, under writes from several
// callers spread over all three, in both orders an operator may take:
// followers first and the leader last; and the first upgraded server made
// leader while the other two still run the old build. After every step,
// every acknowledged mapping is answered alike, both ways, by every server.
//
// The upgraded servers run with a small --max-mappings-per-client, which
// only log entry version 4 carries: while any server runs the old build the
// cluster goes on writing version 3, which the old servers apply, and a
// client maps past the quota; once every server runs this build the leader
// writes version 4 and the quota refuses with 429 quota_exceeded, and a
// server of the old release joining afresh is refused.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the previous release")
	}
	for _, r := range upgradeFrom {
		old := testcluster.BinaryAt(t, r.commit)
		for _, order := range []string{"followers first", "upgraded server leads"} {
			t.Run(r.version+" "+order, func(t *testing.T) { rollingUpgrade(t, old, order == "upgraded server leads") })
		}
	}
}

func rollingUpgrade(t *testing.T, old string, upgradedLeads bool) {
	c := testcluster.New(t, 3, testcluster.Options{Args: []string{"--http-write-rate", "0"}})
	current := testcluster.Binary(t)
	for _, s := range c.Servers {
		s.SetBinary(old)
		s.Start()
	}
	c.WaitReady(60 * time.Second)

	w := startWriters(t, c, 6)
	defer w.stop()
	w.waitAcked(t, 200)

	restart := func(s *testcluster.Server, bin, why string) {
		t.Helper()
		w.step(why)
		s.Stop(30 * time.Second)
		s.SetBinary(bin)
		s.Start()
		c.WaitReady(60 * time.Second)
		w.waitAcked(t, w.acked()+100)
		checkAcked(t, c, w)
	}
	upgraded := map[string]bool{}
	upgrade := func(s *testcluster.Server) {
		t.Helper()
		// Only this build knows the flag; an old server never runs again
		// once upgraded.
		s.Args = append(s.Args, "--max-mappings-per-client", fmt.Sprint(upgradeQuota))
		restart(s, current, "upgrade "+s.ID)
		upgraded[s.ID] = true
		if len(upgraded) < len(c.Servers) {
			quotaNotEnforcedWhileMixed(t, s, len(upgraded))
			policyRefusedWhileMixed(t, s)
		}
	}

	if upgradedLeads {
		leader := c.WaitReady(30 * time.Second)
		first := c.Servers[0]
		if first == leader {
			first = c.Servers[1]
		}
		upgrade(first)
		// SIGTERM hands leadership to another server; the old leader comes
		// back on the old build. Until the upgraded one leads.
		for try := 0; ; try++ {
			leader = c.WaitReady(30 * time.Second)
			if leader == first {
				break
			}
			if try == 8 {
				t.Fatalf("%s never became the leader", first.ID)
			}
			restart(leader, old, "move leadership off "+leader.ID)
		}
		t.Logf("%s (upgraded) leads %v (old)", first.ID, otherIDs(c, first))
	}
	// The rest: followers first, the leader last.
	for {
		leader := c.WaitReady(30 * time.Second)
		var next *testcluster.Server
		for _, s := range c.Servers {
			if !upgraded[s.ID] && (next == nil || next == leader) {
				next = s
			}
		}
		if next == nil {
			break
		}
		upgrade(next)
	}
	quotaEnforcedOnceUpgraded(t, c)
	policyTakenOnceUpgraded(t, c)
	w.stop()
	checkAcked(t, c, w)
	if !upgradedLeads {
		oldServerRefusedOnceVersion4(t, c, old)
	}

	rep := w.report()
	t.Logf("acknowledged writes %d; failed attempts by code %v", rep.acked, rep.failures)
	for _, s := range rep.steps {
		t.Logf("step %-40s longest gap between acknowledged writes %v", s.name, s.gap.Round(time.Millisecond))
	}
	if len(rep.fatal) > 0 {
		t.Errorf("writes answered with an error that tells a client not to retry: %v", rep.fatal)
	}
	for _, s := range rep.steps {
		// One election takes one to two Raft timeouts (500 ms); a step
		// that stops writes for longer than a write timeout (4 s) plus
		// a few elections is the stall the upgrade must not cause.
		if s.gap > 6*time.Second {
			t.Errorf("step %q: no write was acknowledged for %v", s.name, s.gap)
		}
	}
}

// upgradeQuota is the upgraded servers' --max-mappings-per-client; the
// writers' clients each map fewer names (writerClientMappings), so that
// the quota, once enforced, refuses only the probes below.
const (
	upgradeQuota         = 5
	writerClientMappings = 4
)

// quotaNotEnforcedWhileMixed: with an old server still in the cluster, the
// upgraded server s says the mapping quotas are not enforced, and why, and
// a client maps past --max-mappings-per-client through it: the cluster
// still writes version 3, which the old servers apply (checkAcked after
// each step shows they hold every acknowledged mapping).
func quotaNotEnforcedWhileMixed(t *testing.T, s *testcluster.Server, step int) {
	t.Helper()
	st := apiGet[wire.Status](t, s, "/v1/cluster")
	if st.QuotasEnforced || st.QuotasReason == "" {
		t.Fatalf("%s with an old server in the cluster: quotas_enforced %v, reason %q", s.ID, st.QuotasEnforced, st.QuotasReason)
	}
	client := fmt.Sprintf("mixed-%d", step)
	for i := range upgradeQuota + 2 {
		path := fmt.Sprintf("/v1/clients/%s/domains/m%d.mixed.example", client, i)
		var status int
		poll.Until(t, 30*time.Second, "an allocation through "+s.ID, func() bool {
			status, _, _ = s.Do(context.Background(), http.MethodPost, path, nil)
			return status != http.StatusServiceUnavailable
		})
		if status != http.StatusOK {
			t.Fatalf("%s: mapping %d of %s in a mixed cluster: %d, want 200 (no quota before every server reads version 4)", s.ID, i+1, client, status)
		}
	}
	t.Logf("%s: quotas not enforced while mixed (%s); %s mapped %d names past a quota of %d", s.ID, st.QuotasReason, client, upgradeQuota+2, upgradeQuota)
}

// upgradePolicy is the policy the upgrade sets once it may: it denies
// nothing the writers map.
const upgradePolicy = `{
	// set by TestRollingUpgrade
	"rules": [{"name": "no-upgrade-probe", "clients": ["*"], "domains": ["probe.upgrade.example"], "action": "deny"}],
}`

// policyRefusedWhileMixed: with an old server in the cluster, which would
// stop at a policy entry, PUT /v1/policy is refused with 503
// feature_unavailable naming the older servers, and no policy is set.
func policyRefusedWhileMixed(t *testing.T, s *testcluster.Server) {
	t.Helper()
	status, e, _ := do(t, s, http.MethodPut, "/v1/policy", []byte(upgradePolicy))
	if status != http.StatusServiceUnavailable || e.Code != "feature_unavailable" || !strings.Contains(e.Message, "reads up to 3") {
		t.Fatalf("%s: PUT /v1/policy with an old server in the cluster: %d %+v, want 503 feature_unavailable naming it", s.ID, status, e)
	}
	if p := apiGet[wire.Policy](t, s, "/v1/policy"); p.Revision != 0 {
		t.Fatalf("%s: a refused policy is at revision %d", s.ID, p.Revision)
	}
}

// policyTakenOnceUpgraded: every server reads version 4, so a policy set
// through one server reaches every server at the same revision, and each
// denies what it says.
func policyTakenOnceUpgraded(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	var set wire.Policy
	poll.Until(t, 30*time.Second, "PUT /v1/policy to be taken", func() bool {
		status, body, err := c.Servers[0].Do(context.Background(), http.MethodPut, "/v1/policy", []byte(upgradePolicy))
		return err == nil && status == http.StatusOK && json.Unmarshal(body, &set) == nil
	})
	for _, s := range c.Servers {
		poll.Until(t, 30*time.Second, s.ID+" to hold the policy", func() bool {
			p := apiGet[wire.Policy](t, s, "/v1/policy")
			return p.Revision == set.Revision && p.Text == upgradePolicy
		})
		status, e, _ := do(t, s, http.MethodPost, "/v1/clients/probe-"+s.ID+"/domains/probe.upgrade.example", nil)
		if status != http.StatusForbidden || e.Code != "denied_by_policy" {
			t.Fatalf("%s: a denied allocation: %d %+v, want 403 denied_by_policy", s.ID, status, e)
		}
	}
}

// quotaEnforcedOnceUpgraded: every server runs this build, so the leader
// writes version 4 with its --max-mappings-per-client, and a client's
// mapping past it is refused with 429 quota_exceeded on every server.
func quotaEnforcedOnceUpgraded(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	poll.Until(t, 30*time.Second, "every server to say the quotas are enforced", func() bool {
		for _, s := range c.Servers {
			if st, err := s.Status(); err != nil || !st.QuotasEnforced {
				return false
			}
		}
		return true
	})
	for _, s := range c.Servers {
		client := "final-" + s.ID
		for i := range upgradeQuota {
			status, e, _ := do(t, s, http.MethodPost, fmt.Sprintf("/v1/clients/%s/domains/f%d.final.example", client, i), nil)
			if status != http.StatusOK {
				t.Fatalf("%s: mapping %d of %s: %d %+v", s.ID, i+1, client, status, e)
			}
		}
		status, e, _ := do(t, s, http.MethodPost, "/v1/clients/"+client+"/domains/over.final.example", nil)
		if status != http.StatusTooManyRequests || e.Code != "quota_exceeded" || !strings.Contains(e.Message, fmt.Sprintf("--max-mappings-per-client %d", upgradeQuota)) {
			t.Fatalf("%s: mapping %d of %s once every server is upgraded: %d %+v, want 429 quota_exceeded", s.ID, upgradeQuota+1, client, status, e)
		}
	}
}

// oldServerRefusedOnceVersion4: once the cluster writes log entry version
// 4, a server of the old release that joins afresh (its data dir lost) is
// refused, naming the version, instead of joining a log it could not
// follow; the others go on.
func oldServerRefusedOnceVersion4(t *testing.T, c *testcluster.Cluster, old string) {
	t.Helper()
	leader := c.WaitReady(30 * time.Second)
	s := c.Servers[0]
	if s == leader {
		s = c.Servers[1]
	}
	s.Stop(30 * time.Second)
	if err := os.RemoveAll(s.DataDir); err != nil {
		t.Fatal(err)
	}
	s.Args = slices.DeleteFunc(slices.Clone(s.Args), func(a string) bool { return a == "--max-mappings-per-client" || a == fmt.Sprint(upgradeQuota) })
	s.SetBinary(old)
	logged := len(s.Log())
	s.Start()
	// The old server says so itself (0.3.0 asks its peers first), or
	// repeats the leader's refusal (0.2.0).
	refusal := regexp.MustCompile(`writes (log entry )?version 4`)
	var line string
	poll.Until(t, 60*time.Second, s.ID+" (old release, empty data dir) to be refused", func() bool {
		line = refusal.FindString(s.Log()[logged:])
		return line != ""
	})
	s.Stop(30 * time.Second)
	if ready := c.WaitReady(30 * time.Second); ready == s {
		t.Fatalf("%s leads after it was refused", s.ID)
	}
	for _, l := range strings.Split(s.Log()[logged:], "\n") {
		if refusal.MatchString(l) {
			t.Logf("%s of the old release, joining afresh once the cluster writes version 4: %s", s.ID, l)
			break
		}
	}
}

func otherIDs(c *testcluster.Cluster, not *testcluster.Server) []string {
	var out []string
	for _, s := range c.Servers {
		if s != not {
			out = append(out, s.ID)
		}
	}
	return out
}

// writers allocate new names for their clients on every server in turn,
// keeping what was acknowledged and how each refused attempt was answered.
type writers struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	pairs    map[[2]string]string // client, domain -> address acknowledged
	failures map[string]int       // failed attempts by status and code
	fatal    []string             // answers that say "do not retry"
	lastAck  time.Time
	steps    []upgradeStep
}

type upgradeStep struct {
	name string
	gap  time.Duration
}

type writerReport struct {
	acked    int
	failures map[string]int
	fatal    []string
	steps    []upgradeStep
}

var upgradeHTTP = &http.Client{Timeout: 5 * time.Second}

func startWriters(t *testing.T, c *testcluster.Cluster, n int) *writers {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writers{ctx: ctx, cancel: cancel, pairs: map[[2]string]string{}, failures: map[string]int{}, lastAck: time.Now()}
	w.steps = []upgradeStep{{name: "start"}}
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for k := 0; ; k++ {
				client := fmt.Sprintf("up-%d-%d", i, k/writerClientMappings)
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				s := c.Servers[(i+k)%len(c.Servers)]
				domain := fmt.Sprintf("n%d.up.example", k)
				w.write(s, client, domain)
			}
		}()
	}
	t.Cleanup(w.stop)
	return w
}

func (w *writers) write(s *testcluster.Server, client, domain string) {
	req, _ := http.NewRequestWithContext(w.ctx, http.MethodPost, s.URL()+"/v1/clients/"+client+"/domains/"+domain, nil)
	resp, err := upgradeHTTP.Do(req)
	if err != nil {
		if w.ctx.Err() != nil {
			return
		}
		// A server restarting refuses or drops connections: the client
		// tries another.
		w.fail("connection", "")
		return
	}
	defer resp.Body.Close()
	var body struct {
		IP    string `json:"ip"`
		Code  string `json:"code"`
		Error string `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	switch {
	case resp.StatusCode == http.StatusOK:
		w.mu.Lock()
		now := time.Now()
		last := &w.steps[len(w.steps)-1]
		last.gap = max(last.gap, now.Sub(w.lastAck))
		w.lastAck = now
		w.pairs[[2]string{client, domain}] = body.IP
		w.mu.Unlock()
	case (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests) && resp.Header.Get("Retry-After") != "":
		w.fail(fmt.Sprint(resp.StatusCode), body.Code)
	default:
		w.fail(fmt.Sprint(resp.StatusCode), body.Code)
		w.mu.Lock()
		w.fatal = append(w.fatal, fmt.Sprintf("%s from %s: %d %s %s", domain, s.ID, resp.StatusCode, body.Code, body.Error))
		w.mu.Unlock()
	}
}

func (w *writers) fail(status, code string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures[strings.TrimSpace(status+" "+code)]++
}

// step starts a new step of the upgrade, whose longest gap is its own.
func (w *writers) step(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.steps = append(w.steps, upgradeStep{name: name})
}

func (w *writers) acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pairs)
}

// waitAcked waits until n writes were acknowledged: the cluster writes
// again after a step.
func (w *writers) waitAcked(t *testing.T, n int) {
	t.Helper()
	poll.Until(t, time.Minute, fmt.Sprintf("%d acknowledged writes", n), func() bool { return w.acked() >= n })
}

func (w *writers) stop() {
	w.cancel()
	w.wg.Wait()
}

func (w *writers) snapshot() map[[2]string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[[2]string]string, len(w.pairs))
	for k, v := range w.pairs {
		out[k] = v
	}
	return out
}

func (w *writers) report() writerReport {
	w.mu.Lock()
	defer w.mu.Unlock()
	return writerReport{acked: len(w.pairs), failures: w.failures, fatal: w.fatal, steps: w.steps}
}

var addrRE = regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`)

// checkAcked asks every running server for every acknowledged mapping, by
// domain and by address: each must answer what was acknowledged, since
// nothing here releases or expires. A server whose state lacked a mapping
// the cluster acknowledged (one that skipped the entry) answers 404, and
// one that paired the address with another domain names that domain.
func checkAcked(t *testing.T, c *testcluster.Cluster, w *writers) {
	t.Helper()
	pairs := w.snapshot()
	keys := make([][2]string, 0, len(pairs))
	for k := range pairs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	// A sample keeps the check quick as the writes pile up, and reaches
	// every step's writes.
	if len(keys) > 600 {
		step := len(keys) / 600
		var sample [][2]string
		for i := 0; i < len(keys); i += step {
			sample = append(sample, keys[i])
		}
		keys = sample
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	for _, s := range c.Running() {
		for _, k := range keys {
			ip := pairs[k]
			if !addrRE.MatchString(ip) {
				errs = append(errs, fmt.Errorf("%s/%s was acknowledged with %q", k[0], k[1], ip))
				continue
			}
			status, body, err := s.Do(ctx, http.MethodGet, "/v1/clients/"+k[0]+"/domains/"+k[1], nil)
			var got struct{ IP, Domain string }
			json.Unmarshal(body, &got)
			if err != nil || status != 200 || got.IP != ip {
				errs = append(errs, fmt.Errorf("%s: %s/%s is %d %s (err %v), acknowledged as %s", s.ID, k[0], k[1], status, body, err, ip))
				continue
			}
			status, body, err = s.Do(ctx, http.MethodGet, "/v1/clients/"+k[0]+"/ips/"+ip, nil)
			json.Unmarshal(body, &got)
			if err != nil || status != 200 || got.Domain != k[1] {
				errs = append(errs, fmt.Errorf("%s: %s's %s is %d %s (err %v), acknowledged as %s", s.ID, k[0], ip, status, body, err, k[1]))
			}
		}
	}
	if len(errs) > 0 {
		t.Fatalf("%d answers contradict what was acknowledged, first: %v", len(errs), errors.Join(errs[:min(5, len(errs))]...))
	}
}
