package clientid

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/ippool/ippool/pool"
)

// FuzzParse: a client map file is refused with an error or read into
// entries that are valid (masked prefixes, client IDs the pool takes, no
// prefix twice, longest first), and that written back as a file read the
// same.
func FuzzParse(f *testing.F) {
	f.Add([]byte("10.0.0.0/8 office\n10.1.2.3 laptop # a comment\n"))
	f.Add([]byte("::ffff:10.0.0.1 mapped\nfd00::/64 v6\n# only a comment\n"))
	f.Add([]byte("10.0.0.1/8 a\n10.0.0.0/8 b\n"))
	f.Add([]byte("fe80::1%eth0 zoned\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse("fuzz", bytes.NewReader(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "client map fuzz") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		var file strings.Builder
		seen := map[string]bool{}
		for i, e := range m.entries {
			if e.prefix != e.prefix.Masked() || e.prefix.Addr().Is4In6() {
				t.Fatalf("entry %d: prefix %v is not in normal form", i, e.prefix)
			}
			if err := pool.ValidateClientID(e.id); err != nil {
				t.Fatalf("entry %d: client ID %q: %v", i, e.id, err)
			}
			if seen[e.prefix.String()] {
				t.Fatalf("prefix %v twice", e.prefix)
			}
			seen[e.prefix.String()] = true
			if i > 0 && m.entries[i-1].prefix.Bits() < e.prefix.Bits() {
				t.Fatalf("entries not longest prefix first: %v before %v", m.entries[i-1].prefix, e.prefix)
			}
			fmt.Fprintf(&file, "%s %s\n", e.prefix, e.id)
		}
		again, err := Parse("again", strings.NewReader(file.String()))
		if err != nil || !reflect.DeepEqual(again.entries, m.entries) {
			t.Fatalf("entries %v written back read as %v, %v", m.entries, again, err)
		}
	})
}
