package dnsfront

import (
	"testing"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/pool"
)

// A new client past the cluster's client limit (--max-clients) gets SERVFAIL
// with an Extended DNS Error saying so.
func TestQuotaExceededIsServfailWithEDE(t *testing.T) {
	up := startUpstream(t)
	s, err := New(Config{Domains: []string{"example.test"}, Upstreams: []string{up.addr}, AllowPrivate: docRanges},
		&fakePool{err: pool.Errorf(pool.CodeQuotaExceeded, "client is new and the cluster holds its limit")})
	if err != nil {
		t.Fatal(err)
	}
	w := &fakeWriter{}
	s.ServeDNS(w, queryMsg("q.example.test.", dns.TypeA, true))
	if len(w.msgs) != 1 || w.msgs[0].Rcode != dns.RcodeServerFailure || len(w.msgs[0].Answer) != 0 {
		t.Fatalf("answer %v, want SERVFAIL", w.msgs)
	}
	if e := ede(w.msgs[0]); e == nil || e.InfoCode != dns.ExtendedErrorCodeOther || e.ExtraText != "client limit reached" {
		t.Fatalf("extended error %+v", e)
	}
}
