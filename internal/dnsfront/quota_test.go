package dnsfront

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/pool"
)

// An allocation past a quota (--max-clients, --max-mappings and the others)
// gets SERVFAIL with an Extended DNS Error naming the quota, when the query
// has EDNS0; without it, a plain SERVFAIL.
func TestQuotaExceededIsServfailWithEDE(t *testing.T) {
	up := startUpstream(t)
	for flag, quota := range map[string]string{
		pool.QuotaFlagClients:           "clients",
		pool.QuotaFlagMappings:          "mappings",
		pool.QuotaFlagMappingsPerClient: "mappings_per_client",
		pool.QuotaFlagDomainBytes:       "domain_bytes",
	} {
		s, err := New(Config{Domains: []string{"example.test"}, Upstreams: []string{up.Addr}, AllowPrivate: docRanges},
			&fakePool{err: pool.Errorf(pool.CodeQuotaExceeded, "the cluster holds its limit (%s 3)", flag)})
		if err != nil {
			t.Fatal(err)
		}
		w := &fakeWriter{}
		s.ServeDNS(w, queryMsg("q.example.test.", dns.TypeA, true))
		if len(w.msgs) != 1 || w.msgs[0].Rcode != dns.RcodeServerFailure || len(w.msgs[0].Answer) != 0 {
			t.Fatalf("%s: answer %v, want SERVFAIL", flag, w.msgs)
		}
		if e := ede(w.msgs[0]); e == nil || e.InfoCode != dns.ExtendedErrorCodeOther || e.ExtraText != fmt.Sprintf("quota exceeded: %s", quota) {
			t.Fatalf("%s: extended error %+v", flag, e)
		}
		w = &fakeWriter{}
		s.ServeDNS(w, queryMsg("q.example.test.", dns.TypeA, false))
		if len(w.msgs) != 1 || w.msgs[0].Rcode != dns.RcodeServerFailure || w.msgs[0].IsEdns0() != nil {
			t.Fatalf("%s without EDNS0: answer %v, want a plain SERVFAIL", flag, w.msgs)
		}
	}
}
