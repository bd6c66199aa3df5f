package resolver

import (
	"reflect"
	"testing"

	"github.com/miekg/dns"
)

// upstreamReply packs a reply to name and qtype with the answers given as
// zone-file lines; edns adds an OPT record, compress compresses owner names.
func upstreamReply(tb testing.TB, name string, qtype uint16, edns, compress bool, answers ...string) []byte {
	tb.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.Id = 0x1234
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	m.Answer = rrs(tb, answers...)
	if edns {
		m.SetEdns0(ednsUDPSize, false)
	}
	m.Compress = compress
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// checkReadReply fails when readReply takes p and reads it otherwise than
// the library, or keeps a reference to p. It reports whether readReply
// took p.
func checkReadReply(t *testing.T, p []byte) bool {
	t.Helper()
	lib := new(dns.Msg)
	libErr := lib.Unpack(append([]byte(nil), p...))
	buf := append([]byte(nil), p...)
	m, ok := readReply(buf)
	if !ok {
		return false
	}
	clear(buf)
	if libErr != nil {
		t.Fatalf("readReply took a reply the library rejects (%v): %x", libErr, p)
	}
	lib.Extra = nil // the OPT record, which readReply leaves out
	if !reflect.DeepEqual(m, lib) {
		t.Fatalf("readReply read\n%v\nthe library read\n%v\nfrom %x", m, lib, p)
	}
	return true
}

func TestReadReplyReadsWhatTheLibraryReads(t *testing.T) {
	for _, c := range []struct {
		name string
		p    []byte
		fast bool
	}{
		{"A, OPT, compressed", upstreamReply(t, "n1.bench.test.", dns.TypeA, true, true, "n1.bench.test. 300 IN A 192.0.2.1"), true},
		{"two A, uncompressed", upstreamReply(t, "Ab-c_d.test.", dns.TypeA, false, false, "Ab-c_d.test. 60 IN A 192.0.2.1", "Ab-c_d.test. 30 IN A 192.0.2.2"), true},
		{"AAAA", upstreamReply(t, "v6.test.", dns.TypeAAAA, true, true, "v6.test. 60 IN AAAA 2001:db8::1"), true},
		{"no answer", upstreamReply(t, "none.test.", dns.TypeA, true, true), true},
		{"CNAME", upstreamReply(t, "www.test.", dns.TypeA, true, true, "www.test. 60 IN CNAME app.test.", "app.test. 60 IN A 192.0.2.1"), false},
		{"another owner", upstreamReply(t, "www.test.", dns.TypeA, false, true, "app.test. 60 IN A 192.0.2.1"), false},
		{"escaped label", upstreamReply(t, `a\.b.test.`, dns.TypeA, false, true, `a\.b.test. 60 IN A 192.0.2.1`), false},
		{"TXT", upstreamReply(t, "t.test.", dns.TypeTXT, false, true, `t.test. 60 IN TXT "x"`), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := checkReadReply(t, c.p); got != c.fast {
				t.Fatalf("readReply took it: %v, want %v", got, c.fast)
			}
		})
	}
	extended := upstreamReply(t, "n1.test.", dns.TypeA, true, true)
	extended[len(extended)-6] = 1 // the OPT's extended RCODE
	if checkReadReply(t, extended) {
		t.Fatal("readReply took a reply with an extended RCODE")
	}
}

func TestReadReplyAllocations(t *testing.T) {
	p := upstreamReply(t, "n1.bench.test.", dns.TypeA, true, true, "n1.bench.test. 300 IN A 192.0.2.1")
	if n := testing.AllocsPerRun(100, func() { readReply(p) }); n > 6 {
		t.Fatalf("readReply: %v allocations, want at most 6", n)
	}
}

// FuzzReadReply: whatever readReply takes, it reads as the library does.
func FuzzReadReply(f *testing.F) {
	f.Add(upstreamReply(f, "n1.bench.test.", dns.TypeA, true, true, "n1.bench.test. 300 IN A 192.0.2.1"))
	f.Add(upstreamReply(f, "a.test.", dns.TypeA, false, false, "a.test. 1 IN A 192.0.2.1", "a.test. 2 IN A 192.0.2.2"))
	f.Add(upstreamReply(f, "v6.test.", dns.TypeAAAA, true, true, "v6.test. 60 IN AAAA 2001:db8::1"))
	f.Add(upstreamReply(f, "www.test.", dns.TypeA, true, true, "www.test. 60 IN CNAME app.test.", "app.test. 60 IN A 192.0.2.1"))
	f.Fuzz(func(t *testing.T, p []byte) { checkReadReply(t, p) })
}

// BenchmarkReadReply against the library's unpack of the reply a new name
// gets from its upstream.
func BenchmarkReadReply(b *testing.B) {
	p := upstreamReply(b, "n1.bench.test.", dns.TypeA, true, true, "n1.bench.test. 300 IN A 192.0.2.1")
	b.Run("readReply", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			readReply(p)
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			new(dns.Msg).Unpack(p)
		}
	})
}
