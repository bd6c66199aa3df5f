package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/wire"
)

// The bounds on state and callers (issue 17), with the real binary on
// 127.0.0.121 to 127.0.0.129.

// do sends a request and decodes an error answer's code.
func do(t *testing.T, s *testcluster.Server, method, path string, body []byte) (int, wire.Error, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var e wire.Error
	if resp.StatusCode != 200 {
		json.NewDecoder(resp.Body).Decode(&e)
	}
	return resp.StatusCode, e, resp.Header
}

// metric reads one unlabelled sample from s's /metrics.
func metric(t *testing.T, s *testcluster.Server, name string) float64 {
	t.Helper()
	_, body, err := s.Do(context.Background(), "GET", "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

func applied(t *testing.T, s *testcluster.Server) uint64 {
	t.Helper()
	st, err := s.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st.Applied
}

// TestMaxClientsOverHTTP: with --max-clients 3, a fourth client gets 429
// quota_exceeded while the three go on allocating, and the metrics say how
// close the state is to the bound.
func TestMaxClientsOverHTTP(t *testing.T) {
	s := testcluster.Start(t, 1, testcluster.Options{FirstIP: 121, Args: []string{"--max-clients", "3"}}).Servers[0]
	for _, c := range []string{"a", "b", "c"} {
		if status, e, _ := do(t, s, "POST", "/v1/clients/"+c+"/domains/x.example", nil); status != 200 {
			t.Fatalf("client %s: %d %+v", c, status, e)
		}
	}
	status, e, _ := do(t, s, "POST", "/v1/clients/d/domains/x.example", nil)
	if status != 429 || e.Code != "quota_exceeded" || !strings.Contains(e.Message, "--max-clients 3") {
		t.Fatalf("a fourth client: %d %+v, want 429 quota_exceeded", status, e)
	}
	if status, e, _ := do(t, s, "POST", "/v1/clients/a/domains/y.example", nil); status != 200 {
		t.Fatalf("a known client's new domain: %d %+v", status, e)
	}
	for name, want := range map[string]float64{"ippool_clients": 3, "ippool_max_clients": 3, `ippool_quota_exceeded_total{quota="clients"}`: 1,
		"ippool_acl_max_tokens": 1000, "ippool_http_write_limiters": 1, "ippool_http_write_limiters_max": 16384} {
		if got := metric(t, s, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if st, err := s.Status(); err != nil || st.LastIndex == 0 {
		t.Fatalf("status: %+v %v", st, err)
	}
}

// TestPoolLimitsBeforeTheLog: a pool the log entry decoder would refuse is
// refused by the API with 400 invalid_config and nothing is committed (the
// applied index stays); before, 4,500 exclude ranges were committed and
// then refused by every server at apply. Addresses that never reach a
// gateway and lifetimes under a second are refused too, by the API and by
// serve's flags.
func TestPoolLimitsBeforeTheLog(t *testing.T) {
	c := testcluster.Start(t, 1, testcluster.Options{FirstIP: 122})
	s := c.Servers[0]
	var many []string
	for i := range 4500 {
		many = append(many, fmt.Sprintf("10.%d.%d.1", i/256, i%256))
	}
	type poolReq struct {
		Pool     string `json:"pool"`
		Exclude  string `json:"exclude,omitempty"`
		Lifetime string `json:"lifetime,omitempty"`
	}
	refused := map[string]poolReq{
		"4,500 exclude ranges": {Pool: "10.0.0.0/8", Exclude: strings.Join(many, ",")},
		"0.0.0.0":              {Pool: "0.0.0.0"},
		"127.0.0.0/8":          {Pool: "127.0.0.0/8"},
		"224.0.0.0/4":          {Pool: "224.0.0.0/4"},
		"255.255.255.255":      {Pool: "255.255.255.255"},
		"169.254.0.0/16":       {Pool: "169.254.0.0/16"},
		"a /23 reaching 127/8": {Pool: "126.255.255.0-127.0.0.255"},
	}
	before := applied(t, s)
	for name, req := range refused {
		body, _ := json.Marshal(req)
		if status, e, _ := do(t, s, "PUT", "/v1/pool", body); status != 400 || e.Code != "invalid_config" {
			t.Errorf("%s: %d %+v, want 400 invalid_config", name, status, e)
		}
	}
	if status, e, _ := do(t, s, "PUT", "/v1/pool", []byte(`{"pool":"10.9.0.0/24","lifetime":"1ns"}`)); status != 400 || e.Code != "invalid_config" {
		t.Errorf("a 1ns lifetime: %d %+v, want 400 invalid_config", status, e)
	}
	if status, e, _ := do(t, s, "PUT", "/v1/pool", []byte(`{"pool":"10.9.0.0/24","lifetime":"999ms"}`)); status != 400 || e.Code != "invalid_config" {
		t.Errorf("a 999ms lifetime: %d %+v, want 400 invalid_config", status, e)
	}
	if after := applied(t, s); after != before {
		t.Fatalf("refused pools moved the applied index from %d to %d", before, after)
	}
	// The largest list a log entry carries, and a second's lifetime, pass.
	body, _ := json.Marshal(poolReq{Pool: "10.0.0.0/8", Exclude: strings.Join(many[:4096], ","), Lifetime: "1s"})
	if status, e, _ := do(t, s, "PUT", "/v1/pool", body); status != 200 {
		t.Fatalf("4,096 exclude ranges: %d %+v", status, e)
	}
	if after := applied(t, s); after <= before {
		t.Fatalf("an accepted pool left the applied index at %d", after)
	}
	if status, e, _ := do(t, s, "POST", "/v1/clients/n/domains/a.example", nil); status != 200 {
		t.Fatalf("allocating in the new pool: %d %+v", status, e)
	}

	// serve refuses the same pools from its flags, before it touches its
	// data dir.
	s.Stop(10 * time.Second)
	for _, args := range [][]string{{"--pool", "127.0.0.0/8"}, {"--pool", "10.0.0.0/24", "--lifetime", "1ns"}} {
		srv := testcluster.New(t, 1, testcluster.Options{FirstIP: 122, Args: args}).Servers[0]
		srv.Start()
		if !srv.Wait(10*time.Second) || srv.ExitCode() != 1 || !strings.Contains(srv.Log(), "invalid") && !strings.Contains(srv.Log(), "lifetime") {
			t.Fatalf("serve %v: exit %d\n%s", args, srv.ExitCode(), srv.Log())
		}
	}
}

// TestWriteRateLimitOverHTTP: a caller past --http-write-burst gets 429
// rate_limited with Retry-After, counted, while reads and allocations of
// known domains (answered from local state) go on; it writes again once
// its bucket refills.
func TestWriteRateLimitOverHTTP(t *testing.T) {
	s := testcluster.Start(t, 1, testcluster.Options{FirstIP: 123, Args: []string{"--http-write-rate", "1", "--http-write-burst", "5"}}).Servers[0]
	for i := range 5 {
		if status, e, _ := do(t, s, "POST", fmt.Sprintf("/v1/clients/n/domains/d%d.example", i), nil); status != 200 {
			t.Fatalf("write %d within the burst: %d %+v", i, status, e)
		}
	}
	status, e, h := do(t, s, "POST", "/v1/clients/n/domains/d5.example", nil)
	if status != 429 || e.Code != "rate_limited" || h.Get("Retry-After") == "" {
		t.Fatalf("past the burst: %d %+v Retry-After %q", status, e, h.Get("Retry-After"))
	}
	if status, e, h := do(t, s, "DELETE", "/v1/clients/n/domains/d0.example", nil); status != 429 || e.Code != "rate_limited" || h.Get("Retry-After") == "" {
		t.Fatalf("a release past the burst: %d %+v", status, e)
	}
	if status, e, _ := do(t, s, "POST", "/v1/clients/n/domains/d1.example", nil); status != 200 {
		t.Fatalf("a known domain (no write): %d %+v", status, e)
	}
	if status, e, _ := do(t, s, "GET", "/v1/clients/n/domains/d1.example", nil); status != 200 {
		t.Fatalf("a read: %d %+v", status, e)
	}
	if got := metric(t, s, "ippool_http_rate_limited_total"); got != 2 {
		t.Fatalf("rate limited counted %v times, want 2", got)
	}
	poll.Until(t, 5*time.Second, "the write bucket to refill", func() bool {
		status, e, _ := do(t, s, "POST", "/v1/clients/n/domains/d5.example", nil)
		if status != 200 && status != 429 {
			t.Fatalf("once the bucket refills: %d %+v", status, e)
		}
		return status == 200
	})
}

// TestSkewedClockServerCannotForgetClients: one of three servers runs its
// clock an hour ahead (--test-clock-offset), far past the lifetime (30s)
// and reuse hold. Its writes, as a follower and as the leader, are stamped
// with the cluster's time: the client allocated first is not forgotten on
// any server, and every mapping's last use is the real time. Before, the
// first write it took was applied an hour ahead and every server forgot
// every client.
func TestSkewedClockServerCannotForgetClients(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{FirstIP: 124, Args: []string{"--pool", "10.77.0.0/16", "--lifetime", "30s"}})
	// The first server in the configuration: a leader stopped with SIGTERM
	// hands over to the first of the followers as up to date as any.
	skewed := c.Servers[0]
	skewed.Args = append(skewed.Args, "--test-clock-offset", "1h")
	for _, s := range c.Servers {
		s.Start()
	}
	c.WaitReady(30 * time.Second)
	start := time.Now()
	ctx := context.Background()
	correct := c.Servers[1]
	if _, err := alloc(ctx, correct, "victim", "a.example"); err != nil {
		t.Fatal(err)
	}
	n := 0
	check := func(phase string) {
		t.Helper()
		for range 3 {
			n++
			if _, err := alloc(ctx, skewed, fmt.Sprintf("c%d", n), "b.example"); err != nil {
				t.Fatalf("%s: a write through the skewed server: %v", phase, err)
			}
		}
		for _, s := range c.Servers {
			_, body, err := s.Do(ctx, "GET", "/v1/clients/victim?consistent=true", nil)
			var l wire.List
			if err != nil || json.Unmarshal(body, &l) != nil || len(l.Mappings) != 1 {
				t.Fatalf("%s: %s lost the victim %v after it was allocated: %s %v", phase, s.ID, time.Since(start), body, err)
			}
			_, body, err = s.Do(ctx, "GET", fmt.Sprintf("/v1/clients/c%d?consistent=true", n), nil)
			if err != nil || json.Unmarshal(body, &l) != nil || len(l.Mappings) != 1 {
				t.Fatalf("%s: %s: %s %v", phase, s.ID, body, err)
			}
			if d := time.Since(l.Mappings[0].LastUsed); d < -5*time.Second || d > time.Minute {
				t.Fatalf("%s: a write through the skewed server was stamped %v, %v from the real time", phase, l.Mappings[0].LastUsed, d)
			}
		}
	}
	// SIGTERM hands leadership to another server: stop leaders, and
	// restart them, until the skewed one follows, then until it leads.
	for _, wantLead := range []bool{false, true} {
		for range 6 {
			l := c.WaitReady(30 * time.Second)
			if (l == skewed) == wantLead {
				break
			}
			t.Logf("%s leads; stopping it", l.ID)
			l.Stop(10 * time.Second)
			c.WaitReady(30 * time.Second)
			l.Start()
		}
		if !wantLead {
			if c.WaitReady(30*time.Second) == skewed {
				t.Fatal("the skewed server kept leading")
			}
			check("as a follower")
		}
	}
	if c.WaitReady(30*time.Second) != skewed {
		t.Fatal("the skewed server never led")
	}
	check("as the leader")
	if time.Since(start) > 30*time.Second+5*time.Second {
		t.Fatalf("the test took %v, past the victim's lifetime and hold: it shows nothing", time.Since(start))
	}
}
