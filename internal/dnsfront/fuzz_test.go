package dnsfront

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ippool/ippool/localpool"
	"github.com/ippool/ippool/pool"
)

// countingWriter counts every write attempt, including those whose reply
// does not pack, so the fuzz target can tell "one reply" from "one good
// reply".
type countingWriter struct {
	fakeWriter
	attempts int
	packErr  error
}

func (w *countingWriter) WriteMsg(m *dns.Msg) error {
	w.attempts++
	err := w.fakeWriter.WriteMsg(m)
	if err != nil {
		w.packErr = err
	}
	return err
}

func fuzzServer(tb testing.TB, domains ...string) (*Server, *localpool.Pool) {
	up := startUpstream(tb)
	pc, err := pool.ParseConfig("100.64.0.0/28", "", time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	lp, err := localpool.New(pc)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Config{
		Domains:            domains,
		Upstreams:          []string{up.Addr},
		AllowPrivate:       docRanges,
		IgnoreDestinations: []netip.Prefix{ignorePrefix},
		V6Prefix:           netip.MustParsePrefix("fd7a:115c:a1e0::/96"),
		UpstreamTimeout:    time.Second,
		RateLimit:          1000,
	}, lp)
	if err != nil {
		tb.Fatal(err)
	}
	return s, lp
}

func FuzzServeDNS(f *testing.F) {
	seed := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(queryMsg("a.example.test.", dns.TypeA, false))
	seed(queryMsg("Big.Example.test.", dns.TypeA, true))
	seed(queryMsg("direct.example.test.", dns.TypeAAAA, true))
	seed(queryMsg("example.test.", dns.TypeSOA, false))
	seed(queryMsg("nx.example.test.", dns.TypeAAAA, true))

	s, _ := fuzzServer(f, "example.test", "other.test")
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			return
		}
		for _, tcp := range []bool{false, true} {
			w := &countingWriter{fakeWriter: fakeWriter{tcp: tcp}}
			s.ServeDNS(w, m)
			if w.attempts > 1 {
				t.Fatalf("%d replies to one query", w.attempts)
			}
			if w.packErr != nil {
				t.Fatalf("reply does not pack: %v\nquery: %v", w.packErr, m)
			}
			if w.attempts == 1 && !tcp {
				w.msgs[0].Compress = true
				if n := w.msgs[0].Len(); n > ednsUDPSize {
					t.Fatalf("UDP reply of %d bytes", n)
				}
			}
			// A refusal is no larger than its query; queries with a
			// compressed question never get this far (guardedReader).
			if w.attempts == 1 && w.msgs[0].Rcode == dns.RcodeRefused && plainQuestion(b) {
				w.msgs[0].Compress = false
				if n := w.msgs[0].Len(); n > len(b) {
					t.Fatalf("REFUSED of %d bytes to a query of %d: %v", n, len(b), m)
				}
			}
		}
	})
}

func BenchmarkServeDNSMapped(b *testing.B) {
	s, _ := fuzzServer(b, "example.test")
	q := queryMsg("a.example.test.", dns.TypeA, true)
	w := &fakeWriter{}
	s.ServeDNS(w, q) // allocates, and fills the upstream cache
	if len(w.msgs) != 1 || len(w.msgs[0].Answer) != 1 {
		b.Fatalf("warm-up: %v", w.msgs)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.msgs = w.msgs[:0]
		s.ServeDNS(w, q)
	}
}
