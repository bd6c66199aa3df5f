package pool

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"go4.org/netipx"
)

func FuzzDecodeEntry(f *testing.F) {
	for _, ops := range [][]Op{sampleOps(), sampleOps()[1:2], sampleOps()[2:3]} {
		b, _ := EncodeEntry(nil, Entry{Time: ops[0].Time, MaxClients: 3, Ops: ops})
		f.Add(b)
		b, _ = EncodeEntry(nil, Entry{Time: ops[0].Time, MaxClients: 3, Quotas: Quotas{MaxMappings: 2, MaxMappingsPerClient: 1, MaxDomainBytes: 12}, Ops: ops})
		f.Add(b)
		b, _ = EncodeEntry(nil, Entry{Version: 3, Time: ops[0].Time, MaxClients: 3, Ops: ops})
		f.Add(b)
		f.Add(withChecksum(asV1(ops)))
	}
	f.Add([]byte{1, 1, 1, 0, 1, 'a', 1, 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			return
		}
		if b[0] >= entryVersionV3 {
			// What decodes encodes again, in its version: the encoder
			// refuses nothing the decoder takes. (Versions 1 and 2 are not
			// written any more: they had a time per op and looser pool
			// rules.)
			again, err := EncodeEntry(nil, e)
			if err != nil {
				t.Fatalf("decoded entry does not encode: %v", err)
			}
			e2, err := DecodeEntry(again)
			if err != nil || !reflect.DeepEqual(e, e2) {
				t.Fatalf("re-encoded entry decodes differently: %v", err)
			}
		}
		s := NewState()
		cfg, _ := ParseConfig("10.0.0.0/29", "", time.Hour)
		s.SetConfig(cfg, time.Unix(0, 0))
		if _, err := s.Apply(b); err != nil {
			t.Fatalf("decoded entry did not apply: %v", err)
		}
		if err := s.checkInvariants(); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzReadSnapshot(f *testing.F) {
	s := NewState()
	f.Add(snapshotBytes(f, s))
	cfg, _ := ParseConfig("10.0.0.0/29", "10.0.0.3", time.Hour)
	s.SetConfig(cfg, time.Unix(0, 0))
	f.Add(snapshotBytes(f, s))
	for i, d := range []string{"a.com", "b.com", "a.com"} {
		s.ApplyOps([]Op{{Kind: OpAllocate, ID: RequestID{1, uint64(i + 1)}, Time: time.Unix(0, int64(i)), Client: clientName(i), Domain: d}})
	}
	f.Add(snapshotBytes(f, s))
	s.ApplyOps([]Op{{Kind: OpRelease, Time: time.Unix(0, 9), Client: clientName(0), Domain: "a.com"}})
	f.Add(snapshotBytes(f, s)) // a client with a held address and no mapping
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ReadSnapshot(bytes.NewReader(b))
		if err != nil {
			return
		}
		if err := s.checkInvariants(); err != nil {
			t.Fatal(err)
		}
		snap := snapshotBytes(t, s)
		s2, err := ReadSnapshot(bytes.NewReader(snap))
		if err != nil {
			t.Fatalf("re-encoded snapshot does not decode: %v", err)
		}
		if !bytes.Equal(snap, snapshotBytes(t, s2)) {
			t.Fatal("snapshot is not canonical")
		}
	})
}

// FuzzParseConfig: the pool text the API and the flags take either is
// refused or gives a valid configuration, whose ranges, written back as
// text, parse to the same configuration.
func FuzzParseConfig(f *testing.F) {
	f.Add("198.18.0.0/15", "198.18.0.0/24, 198.19.255.255")
	f.Add("10.0.0.1-10.0.0.99,10.0.1.7", "")
	f.Add("10.0.0.0/8,10.1.0.0/16", "")
	f.Add(" , 1.2.3.4 - 1.2.3.4 ,", "::/0")
	f.Add("10.0.0.9-10.0.0.1", "1.2.3.4/33")
	f.Fuzz(func(t *testing.T, poolText, excludeText string) {
		c, err := ParseConfig(poolText, excludeText, time.Hour)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig(%q, %q) gave a config Validate refuses: %v", poolText, excludeText, err)
		}
		text := func(rs []netipx.IPRange) string {
			var parts []string
			for _, r := range rs {
				if !r.IsValid() || !r.From().Is4() || !r.To().Is4() || r.To().Less(r.From()) {
					t.Fatalf("ParseConfig(%q, %q) gave range %v", poolText, excludeText, r)
				}
				parts = append(parts, r.String())
			}
			return strings.Join(parts, ",")
		}
		again, err := ParseConfig(text(c.Pool), text(c.Exclude), time.Hour)
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("ParseConfig(%q, %q) = %v; its text parses to %v, %v", poolText, excludeText, c, again, err)
		}
	})
}

// FuzzNormalizeDomain: whatever the input, NormalizeDomain never panics,
// and what it accepts is ASCII, in normal form (normalizing it again changes
// nothing), and at most 253 bytes.
func FuzzNormalizeDomain(f *testing.F) {
	for _, s := range []string{"example.com", "Example.COM.", "bücher.de", "xn--bcher-kva.de", "", ".", "a..b", "-a.b", "\xff", "例え.テスト", "a_b.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		d, err := NormalizeDomain(name)
		if err != nil {
			return
		}
		if !isASCII(d) || len(d) > 253 {
			t.Fatalf("NormalizeDomain(%q) = %q", name, d)
		}
		if again, err := NormalizeDomain(d); err != nil || again != d {
			t.Fatalf("NormalizeDomain(%q) = %q, then %q, %v", name, d, again, err)
		}
	})
}
