package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/wire"
)

// The mapping quotas (issue 28): --max-mappings, --max-mappings-per-client
// and --max-domain-bytes, reached over HTTP and over DNS with the real
// binary. Servers listen on 127.0.0.125 and 127.0.0.126; DNS queries come
// from 127.0.1.x sources, each a client.

// waitQuotasEnforced waits until the server's leader writes the log entry
// version that carries the quotas.
func waitQuotasEnforced(t *testing.T, s *testcluster.Server) {
	t.Helper()
	poll.Until(t, 30*time.Second, "the quotas to be enforced", func() bool {
		st, err := s.Status()
		return err == nil && st.QuotasEnforced
	})
}

// dnsAsk asks for name's A record from src, with EDNS0 or without.
func dnsAsk(t *testing.T, addr, src, name string, edns bool) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	if edns {
		q.SetEdns0(1232, false)
	}
	r, err := exchangeFrom(addr, src, q)
	if err != nil {
		t.Fatalf("%s from %s: %v", name, src, err)
	}
	return r.msg
}

// wantQuotaServfail requires SERVFAIL with an Extended DNS Error naming the
// quota when the query had EDNS0, and no OPT record when it had not.
func wantQuotaServfail(t *testing.T, m *dns.Msg, edns bool, quota string) {
	t.Helper()
	if m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 {
		t.Fatalf("answer %v, want SERVFAIL", m)
	}
	opt := m.IsEdns0()
	if !edns {
		if opt != nil {
			t.Fatalf("a query without EDNS0 got an OPT record: %v", m)
		}
		return
	}
	var ede *dns.EDNS0_EDE
	if opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				ede = e
			}
		}
	}
	if ede == nil || ede.InfoCode != dns.ExtendedErrorCodeOther || ede.ExtraText != "quota exceeded: "+quota {
		t.Fatalf("extended error %+v, want 0 (Other) \"quota exceeded: %s\"", ede, quota)
	}
}

func mappingsHeld(t *testing.T, s *testcluster.Server) int {
	t.Helper()
	st := apiGet[wire.Status](t, s, "/v1/cluster")
	if st.Usage == nil {
		t.Fatalf("/v1/cluster has no usage: %+v", st)
	}
	return st.Usage.Mappings
}

// TestMappingQuotas: with --max-mappings 12 and --max-mappings-per-client
// 5, a client's sixth mapping and the cluster's thirteenth are refused,
// over HTTP with 429 quota_exceeded naming the quota, its numbers and its
// flag, over DNS with SERVFAIL and an Extended DNS Error; nothing is
// written past them (the mapping count stays, and a refusal costs no log
// entry), /metrics and /v1/cluster
// show the bounds, the usage and the alarms, and a burst of 40,000
// allocations with 250-byte domains past the quota leaves the server's
// memory where it was (before, such a burst grew it by about 1.6 KB per
// mapping).
func TestMappingQuotas(t *testing.T) {
	s, dnsAddr, _ := startDNSServer(t, 125, "--max-mappings", "12", "--max-mappings-per-client", "5", "--http-write-rate", "0")
	waitQuotasEnforced(t, s)

	// Per client, over HTTP.
	for i := range 5 {
		if status, e, _ := do(t, s, "POST", fmt.Sprintf("/v1/clients/a/domains/a%d.example", i), nil); status != 200 {
			t.Fatalf("a's mapping %d: %d %+v", i+1, status, e)
		}
	}
	status, e, _ := do(t, s, "POST", "/v1/clients/a/domains/a5.example", nil)
	if status != 429 || e.Code != "quota_exceeded" {
		t.Fatalf("a's sixth mapping: %d %+v, want 429 quota_exceeded", status, e)
	}
	for _, want := range []string{"client a", "5 mappings", "--max-mappings-per-client 5"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("the refusal %q does not say %q", e.Message, want)
		}
	}
	if status, e, _ := do(t, s, "POST", "/v1/clients/a/domains/a0.example", nil); status != 200 {
		t.Fatalf("a's existing mapping: %d %+v", status, e)
	}

	// Per client, over DNS: the source is the client.
	const src = "127.0.1.10"
	for i := range 5 {
		if m := dnsAsk(t, dnsAddr, src, fmt.Sprintf("d%d.example.test", i), true); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("DNS mapping %d: %v", i+1, m)
		}
	}
	wantQuotaServfail(t, dnsAsk(t, dnsAddr, src, "d5.example.test", true), true, "mappings_per_client")
	wantQuotaServfail(t, dnsAsk(t, dnsAddr, src, "d6.example.test", false), false, "mappings_per_client")
	if got := mappingsHeld(t, s); got != 10 {
		t.Fatalf("%d mappings held, want 10", got)
	}

	// The total.
	for i := range 2 {
		if status, e, _ := do(t, s, "POST", fmt.Sprintf("/v1/clients/b/domains/b%d.example", i), nil); status != 200 {
			t.Fatalf("b's mapping %d: %d %+v", i+1, status, e)
		}
	}
	status, e, _ = do(t, s, "POST", "/v1/clients/b/domains/b2.example", nil)
	if status != 429 || e.Code != "quota_exceeded" || !strings.Contains(e.Message, "12 mappings") || !strings.Contains(e.Message, "--max-mappings 12") {
		t.Fatalf("the thirteenth mapping: %d %+v, want 429 quota_exceeded naming --max-mappings 12", status, e)
	}
	wantQuotaServfail(t, dnsAsk(t, dnsAddr, "127.0.1.11", "n0.example.test", true), true, "mappings")
	if got := mappingsHeld(t, s); got != 12 {
		t.Fatalf("%d mappings held past the quota, want 12", got)
	}

	m := scrape(t, s)
	for name, want := range map[string]float64{"ippool_mappings": 12, "ippool_max_mappings": 12, "ippool_max_mappings_per_client": 5, "ippool_quotas_enforced": 1} {
		if m[name] != want {
			t.Errorf("%s = %v, want %v", name, m[name], want)
		}
	}
	if m["ippool_domain_bytes"] <= 0 || m["ippool_max_domain_bytes"] <= 0 {
		t.Errorf("ippool_domain_bytes %v, ippool_max_domain_bytes %v", m["ippool_domain_bytes"], m["ippool_max_domain_bytes"])
	}
	for quota, atLeast := range map[string]float64{"mappings_per_client": 3, "mappings": 2} {
		if got := metric(t, s, fmt.Sprintf("ippool_quota_exceeded_total{quota=%q}", quota)); got < atLeast {
			t.Errorf("quota %s refused %v times, want at least %v", quota, got, atLeast)
		}
	}
	st := apiGet[wire.Status](t, s, "/v1/cluster")
	if !st.QuotasEnforced || st.Limits == nil || st.Limits.MaxMappings != 12 || st.Limits.MaxMappingsPerClient != 5 {
		t.Fatalf("/v1/cluster: enforced %v, limits %+v", st.QuotasEnforced, st.Limits)
	}
	alarms := map[string]wire.QuotaAlarm{}
	for _, a := range st.Alarms {
		alarms[a.Quota] = a
	}
	if a := alarms["mappings"]; !strings.HasPrefix(a.Message, "NOSPACE") || a.Usage != 12 || a.Limit != 12 || a.LastExceeded == "" {
		t.Errorf("mappings alarm %+v", a)
	}
	if a := alarms["mappings_per_client"]; a.LastExceeded == "" || a.Flag != "--max-mappings-per-client" {
		t.Errorf("mappings_per_client alarm %+v", a)
	}

	// A burst past the quota: every allocation refused before it reaches
	// the log, the state and the memory as they were.
	before, _, err := s.Memory()
	if err != nil {
		t.Fatal(err)
	}
	appliedBefore := applied(t, s)
	const burst, workers = 40_000, 16
	long := strings.Repeat("x", 60) + "." + strings.Repeat("y", 60) + "." + strings.Repeat("z", 60) + "." + strings.Repeat("w", 50)
	var next, refused atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > burst || ctx.Err() != nil {
					return
				}
				path := fmt.Sprintf("/v1/clients/burst-%d/domains/%d.%s.example", w, i, long)
				if status, _, err := s.Do(ctx, http.MethodPost, path, nil); err == nil && status == 429 {
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := refused.Load(); got != burst {
		t.Fatalf("%d of %d allocations past the quota were refused with 429", got, burst)
	}
	if got := mappingsHeld(t, s); got != 12 {
		t.Fatalf("%d mappings held after the burst, want 12", got)
	}
	// A few entries may be the server's own (marks, unholds); 40,000
	// refusals are not among them.
	if got := applied(t, s) - appliedBefore; got > 100 {
		t.Errorf("%d log entries applied over a burst the quota refused", got)
	}
	after, _, err := s.Memory()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RSS %d MB before a burst of %d refused allocations, %d MB after", before>>20, burst, after>>20)
	// Unbounded, the burst would add about 1.6 KB a mapping: 64 MB, well
	// past half again a server's RSS at rest.
	if after > before+before/2 {
		t.Errorf("RSS grew from %d MB to %d MB over a burst the quota refused", before>>20, after>>20)
	}
}

// TestMaxDomainBytes: with --max-domain-bytes 100 two 40-byte names fit, a
// third is refused over HTTP and DNS, and a name already held costs
// nothing more.
func TestMaxDomainBytes(t *testing.T) {
	s, dnsAddr, _ := startDNSServer(t, 126, "--max-domain-bytes", "100")
	waitQuotasEnforced(t, s)
	name := func(c byte) string { return strings.Repeat(string(c), 32) + ".example" } // 40 bytes
	for _, d := range []string{name('a'), name('b')} {
		if status, e, _ := do(t, s, "POST", "/v1/clients/a/domains/"+d, nil); status != 200 {
			t.Fatalf("%s: %d %+v", d, status, e)
		}
	}
	status, e, _ := do(t, s, "POST", "/v1/clients/a/domains/"+name('c'), nil)
	if status != 429 || e.Code != "quota_exceeded" || !strings.Contains(e.Message, "80 bytes") || !strings.Contains(e.Message, "--max-domain-bytes 100") {
		t.Fatalf("a third 40-byte name: %d %+v, want 429 quota_exceeded naming --max-domain-bytes 100", status, e)
	}
	if status, e, _ := do(t, s, "POST", "/v1/clients/b/domains/"+name('a'), nil); status != 200 {
		t.Fatalf("a name already held, for another client: %d %+v", status, e)
	}
	wantQuotaServfail(t, dnsAsk(t, dnsAddr, "127.0.1.12", strings.Repeat("q", 40)+".example.test", true), true, "domain_bytes")
	st := apiGet[wire.Status](t, s, "/v1/cluster")
	if st.Usage == nil || st.Usage.DomainBytes != 80 || st.Usage.Mappings != 3 || st.Limits.MaxDomainBytes != 100 {
		t.Fatalf("/v1/cluster usage %+v, limits %+v", st.Usage, st.Limits)
	}
	if got := metric(t, s, "ippool_domain_bytes"); got != 80 {
		t.Errorf("ippool_domain_bytes %v, want 80", got)
	}
	if got := metric(t, s, `ippool_quota_exceeded_total{quota="domain_bytes"}`); got != 2 {
		t.Errorf("domain_bytes refusals counted %v, want 2", got)
	}
}

// TestQuotaAlarmInConsole: the console's cluster page says the mapping
// quotas are enforced and shows an alarm line once one is reached.
func TestQuotaAlarmInConsole(t *testing.T) {
	chromiumPath(t)
	s := testcluster.Start(t, 1, testcluster.Options{FirstIP: 127, Args: []string{"--max-mappings", "2"}}).Servers[0]
	waitQuotasEnforced(t, s)
	for _, d := range []string{"a.example", "b.example"} {
		if status, e, _ := do(t, s, "POST", "/v1/clients/a/domains/"+d, nil); status != 200 {
			t.Fatalf("%s: %d %+v", d, status, e)
		}
	}
	if status, e, _ := do(t, s, "POST", "/v1/clients/a/domains/c.example", nil); status != 429 {
		t.Fatalf("a third mapping: %d %+v, want 429", status, e)
	}
	b := newBrowser(t, artifactDir(t, "quota-console"))
	b.open(s.URL() + "/ui/cluster")
	b.waitFor("the quota alarm line", `!document.getElementById('alarms').hidden && document.getElementById('alarms').textContent.startsWith('NOSPACE: mappings at its limit (2 of --max-mappings 2)') && document.getElementById('quotas-off') === null`, 15*time.Second)
	b.shot("cluster-quota-alarm")
}
